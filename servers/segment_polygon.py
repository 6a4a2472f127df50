"""``segment-polygon``: normalized polygon masks, a loose schema, and session-scoped image handles.

Tools:

``upload_image(image_b64)``
    Stores the image (by value) for the caller's session and returns
    ``{"handle": "sess-…"}``. The handle is valid only within the scope that
    created it: the request ``_meta`` key ``SCOPE_META_KEY`` (``"default"`` when absent).
``segment_polygons(image_b64=None, handle=None)``
    Exactly one of the two: an image by value, or a handle from this session.
    Returns ``structuredContent`` under an ``outputSchema`` of exactly ``{"type": "object"}``::

        {"results": [{"category": str, "probability": float, "polygons": [[x1, y1, x2, y2, ...], ...]}, ...]}

Polygons are outer contours with coordinates normalized 0-1 (fractions of the
image width and height), at image resolution; holes are lost. Nothing is
declared. Errors are ``isError``.

Memory: resolves only session handles from the caller's own scope; another
scope's handle is refused as unknown. The store keeps the 256 most recently used scopes.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument, infer, preload_segmenter
from servers._schemas import LOOSE_OUTPUT_SCHEMA
from servers._stores import SessionStore
from servers._tools import CallInfo, ToolDef, ToolInputError, build_mcp_server, structured_result
from testbed.conventions import MaskEncoding, MaskResolution, encode_masks
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "segment-polygon"
MASK_ENCODING = MaskEncoding.POLYGON
MASK_RESOLUTION = MaskResolution.IMAGE


class UploadImageArguments(BaseModel):
    """Arguments of upload_image."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64.")


class SegmentPolygonsArguments(BaseModel):
    """Arguments of segment_polygons: give exactly one of image_b64 and handle."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str | None = Field(default=None, description="The image, base64.")
    handle: str | None = Field(default=None, description="A handle returned by upload_image.")


TRUTH = ServerTruth(
    name=NAME,
    kind="segmentation",
    summary=(
        "Polygon masks normalized 0-1 (outer contours), loose outputSchema, images by value or by a "
        "session-scoped handle valid only in the scope that uploaded it; declares nothing."
    ),
    declares_conventions=False,
    tools=(
        ToolTruth(
            name="upload_image",
            schema_style=SchemaStyle.LOOSE,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.SESSION,
            inputs={SemanticRole.IMAGE: "image_b64"},
            paths={SemanticRole.IMAGE_HANDLE: "handle"},
        ),
        ToolTruth(
            name="segment_polygons",
            schema_style=SchemaStyle.LOOSE,
            mask_encoding=MASK_ENCODING,
            mask_resolution=MASK_RESOLUTION,
            normalized_polygons=True,
            accepts=(MemoryScope.BY_VALUE, MemoryScope.SESSION),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image_b64", SemanticRole.IMAGE_HANDLE: "handle"},
            paths={
                SemanticRole.INSTANCES: "results",
                SemanticRole.CLASS_LABEL: "results[*].category",
                SemanticRole.SCORE: "results[*].probability",
                SemanticRole.MASK: "results[*].polygons",
            },
        ),
    ),
)


@server(NAME, truth=TRUTH, preload=preload_segmenter)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``segment-polygon`` server, with its own session store."""
    sessions = SessionStore()

    def upload_image(arguments: UploadImageArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        return structured_result({"handle": sessions.put(call.scope, image)})

    def segment_polygons(arguments: SegmentPolygonsArguments, call: CallInfo) -> CallToolResult:
        if (arguments.image_b64 is None) == (arguments.handle is None):
            raise ToolInputError("image_b64: give exactly one of 'image_b64' and 'handle'")
        if arguments.handle is not None:
            image = sessions.get(call.scope, arguments.handle, argument="handle")
        else:
            assert arguments.image_b64 is not None
            image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        result = infer("segment", image, config)
        assert result.masks is not None  # a segmentation model always returns masks
        polygons = encode_masks(result.masks, MASK_ENCODING, normalized_polygons=True)
        assert isinstance(polygons, list)
        return structured_result(
            {
                "results": [
                    {"category": result.label(i), "probability": float(result.scores[i]), "polygons": polygons[i]}
                    for i in range(len(result))
                ]
            }
        )

    return build_mcp_server(
        NAME,
        instructions="Upload an image once with upload_image, then segment it by handle.",
        tools=[
            ToolDef(
                name="upload_image",
                description="Upload a base64 image and get a handle for it.",
                arguments=UploadImageArguments,
                handler=upload_image,
                output_schema=LOOSE_OUTPUT_SCHEMA,
                read_only=False,
            ),
            ToolDef(
                name="segment_polygons",
                description=(
                    "Segment objects in an image (base64, or a handle from upload_image). Returns per object its "
                    "category, probability and polygons as flat [x1, y1, x2, y2, ...] lists normalized to 0-1."
                ),
                arguments=SegmentPolygonsArguments,
                handler=segment_polygons,
                output_schema=LOOSE_OUTPUT_SCHEMA,
            ),
        ],
    )
