"""``segment-png``: base64 PNG masks at the model's resolution, and images through TTL handles.

Tools:

``load_image(image_b64)``
    Stores the image (by value) and returns ``{"image_id": "ttl-…", "expires_at": t}``.
    The handle expires ``TTL_SECONDS`` (30) after creation on the run's logical
    clock, the request ``_meta`` key ``CLOCK_META_KEY`` (0 when absent): it is
    valid while ``clock < created + 30``. Any scope may resolve it until then.
``segment_image(image_id)``
    Returns ``structuredContent`` under a typed ``outputSchema`` without extension keywords::

        {"masks": [{"label": str, "score": float, "bbox": [x_min, y_min, x_max, y_max],
                    "mask_png": str}, ...]}

``mask_png`` is a base64 single-channel 0/255 PNG at the **model's** resolution:
the letterboxed input frame (``imgsz`` on the long side, padded to a multiple of
the stride), not the image's ``H x W``. Boxes are canonical pixel ``xyxy`` in the
image frame. Nothing is declared. Errors are ``isError``.

Memory: resolves only TTL handles it issued, until they expire; an expired handle
is refused naming it and its expiry time.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument, floats, infer, preload_segmenter
from servers._schemas import inline_schema
from servers._stores import TtlStore
from servers._tools import CallInfo, ToolDef, build_mcp_server, structured_result
from testbed.conventions import CANONICAL, MaskEncoding, MaskResolution, encode_masks
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "segment-png"
TTL_SECONDS = 30.0
MASK_ENCODING = MaskEncoding.PNG_BASE64
MASK_RESOLUTION = MaskResolution.MODEL


class LoadImageArguments(BaseModel):
    """Arguments of load_image."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64.")


class LoadImageOutput(BaseModel):
    """What load_image returns."""

    image_id: str = Field(description="Handle of the loaded image.")
    expires_at: float = Field(description="When the handle stops working.")


class SegmentImageArguments(BaseModel):
    """Arguments of segment_image."""

    model_config = ConfigDict(extra="forbid")

    image_id: str = Field(description="A handle returned by load_image.")


class MaskOut(BaseModel):
    """One segmented object."""

    label: str
    score: float
    bbox: list[float] = Field(min_length=4, max_length=4)
    mask_png: str = Field(description="Mask as a base64 PNG.")


class SegmentImageOutput(BaseModel):
    """What segment_image returns."""

    masks: list[MaskOut]


TRUTH = ServerTruth(
    name=NAME,
    kind="segmentation",
    summary=(
        "Base64 PNG masks at the model's letterboxed input resolution (not the image's), images through "
        f"TTL handles that expire {TTL_SECONDS:g} s after creation on the run's clock; typed outputSchema "
        "without extension keywords."
    ),
    declares_conventions=False,
    tools=(
        ToolTruth(
            name="load_image",
            schema_style=SchemaStyle.FULL,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.TTL,
            ttl_seconds=TTL_SECONDS,
            inputs={SemanticRole.IMAGE: "image_b64"},
            paths={SemanticRole.IMAGE_HANDLE: "image_id"},
        ),
        ToolTruth(
            name="segment_image",
            schema_style=SchemaStyle.FULL,
            box_convention=CANONICAL,
            mask_encoding=MASK_ENCODING,
            mask_resolution=MASK_RESOLUTION,
            accepts=(MemoryScope.TTL,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE_HANDLE: "image_id"},
            paths={
                SemanticRole.INSTANCES: "masks",
                SemanticRole.CLASS_LABEL: "masks[*].label",
                SemanticRole.SCORE: "masks[*].score",
                SemanticRole.BOUNDING_BOX: "masks[*].bbox",
                SemanticRole.MASK: "masks[*].mask_png",
            },
        ),
    ),
)


@server(NAME, truth=TRUTH, preload=preload_segmenter)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``segment-png`` server, with its own TTL store."""
    images = TtlStore(TTL_SECONDS)

    def load_image(arguments: LoadImageArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        handle, expires_at = images.put(call.scope, call.clock, image)
        return structured_result(LoadImageOutput(image_id=handle, expires_at=expires_at).model_dump(mode="json"))

    def segment_image(arguments: SegmentImageArguments, call: CallInfo) -> CallToolResult:
        image = images.get(call.scope, call.clock, arguments.image_id, argument="image_id")
        result = infer("segment", image, config)
        assert result.model_masks is not None  # a segmentation model always returns masks
        masks = encode_masks(result.model_masks, MASK_ENCODING)
        assert isinstance(masks, list)
        output = SegmentImageOutput(
            masks=[
                MaskOut(
                    label=result.label(i),
                    score=float(result.scores[i]),
                    bbox=floats(result.boxes_xyxy[i]),
                    mask_png=str(masks[i]),
                )
                for i in range(len(result))
            ]
        )
        return structured_result(output.model_dump(mode="json"))

    return build_mcp_server(
        NAME,
        instructions="Load an image with load_image, then segment it by image_id before the id expires.",
        tools=[
            ToolDef(
                name="load_image",
                description=f"Load a base64 image; returns an image_id valid for {TTL_SECONDS:g} seconds.",
                arguments=LoadImageArguments,
                handler=load_image,
                output_schema=inline_schema(LoadImageOutput),
                read_only=False,
            ),
            ToolDef(
                name="segment_image",
                description="Segment a loaded image. Returns per object its label, score, bbox and a PNG mask.",
                arguments=SegmentImageArguments,
                handler=segment_image,
                output_schema=inline_schema(SegmentImageOutput),
            ),
        ],
    )
