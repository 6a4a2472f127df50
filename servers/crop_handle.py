"""``crop-handle``: a cropper that keeps every image in a global store, with normalized ``xyxy`` boxes.

Tools:

``put_image(image_b64)``
    Stores the image (by value) and returns ``{"handle": "img-…"}``.
``crop_image(handle, box)``
    Crops a stored image to ``box`` = ``[x_min, y_min, x_max, y_max]`` normalized 0-1
    (``xyxy/normalized/xy/top_left``), stores the crop, and returns
    ``{"handle": "img-…", "width": w, "height": h}``. The crop is every pixel the
    box touches; a box not inside the image is refused.
``get_image(handle)``
    Returns the stored image by value as MCP image content (PNG).

``put_image`` and ``crop_image`` return JSON inside a text block (no
``outputSchema``); ``get_image`` returns content only. Nothing is declared.
Errors are ``isError``.

Memory: GLOBAL handles, derived from the image content alone, resolvable by
every client of the process and never evicted: unbounded retention, and
cross-session and cross-agent reads, are the point. It resolves only its own
global handles.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import crop_canonical, decode_image_argument, image_size_of
from servers._stores import GlobalStore
from servers._tools import CallInfo, ToolDef, build_mcp_server, image_result, text_json_result
from testbed.conventions import BoxConvention
from testbed.imaging import encode_png_base64
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "crop-handle"
BOX_CONVENTION = BoxConvention.from_name("xyxy/normalized/xy/top_left")


class PutImageArguments(BaseModel):
    """Arguments of put_image."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64.")


class CropImageArguments(BaseModel):
    """Arguments of crop_image."""

    model_config = ConfigDict(extra="forbid")

    handle: str = Field(description="Handle of a stored image.")
    box: list[float] = Field(min_length=4, max_length=4, description="Crop box [x1, y1, x2, y2], 0-1.")


class GetImageArguments(BaseModel):
    """Arguments of get_image."""

    model_config = ConfigDict(extra="forbid")

    handle: str = Field(description="Handle of a stored image.")


TRUTH = ServerTruth(
    name=NAME,
    kind="cropping",
    summary=(
        "Crop box normalized xyxy 0-1; images and crops live in a global store shared by all clients and never "
        "evicted; JSON in text blocks; the image itself only through get_image."
    ),
    declares_conventions=False,
    tools=(
        ToolTruth(
            name="put_image",
            schema_style=SchemaStyle.TEXT_JSON,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.GLOBAL,
            inputs={SemanticRole.IMAGE: "image_b64"},
            paths={SemanticRole.IMAGE_HANDLE: "handle"},
        ),
        ToolTruth(
            name="crop_image",
            schema_style=SchemaStyle.TEXT_JSON,
            box_convention=BOX_CONVENTION,
            accepts=(MemoryScope.GLOBAL,),
            returns=MemoryScope.GLOBAL,
            inputs={SemanticRole.IMAGE_HANDLE: "handle", SemanticRole.BOUNDING_BOX: "box"},
            paths={SemanticRole.CROP_HANDLE: "handle"},
        ),
        ToolTruth(
            name="get_image",
            schema_style=SchemaStyle.CONTENT,
            accepts=(MemoryScope.GLOBAL,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE_HANDLE: "handle"},
        ),
    ),
)


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``crop-handle`` server, with its own global store (shared by all its clients)."""
    images = GlobalStore()

    def put_image(arguments: PutImageArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        return text_json_result({"handle": images.put(image)})

    def crop_image(arguments: CropImageArguments, call: CallInfo) -> CallToolResult:
        image = images.get(arguments.handle, argument="handle")
        crop = crop_canonical(image, arguments.box, BOX_CONVENTION, argument="box")
        size = image_size_of(crop)
        return text_json_result({"handle": images.put(crop), "width": size.width, "height": size.height})

    def get_image(arguments: GetImageArguments, call: CallInfo) -> CallToolResult:
        return image_result(encode_png_base64(images.get(arguments.handle, argument="handle")))

    return build_mcp_server(
        NAME,
        instructions="Store images with put_image, crop them by handle, fetch any handle's image with get_image.",
        tools=[
            ToolDef(
                name="put_image",
                description="Store a base64 image; returns its handle.",
                arguments=PutImageArguments,
                handler=put_image,
                read_only=False,
            ),
            ToolDef(
                name="crop_image",
                description=(
                    "Crop a stored image to box [x1, y1, x2, y2] given as fractions 0-1 of its width and height. "
                    "Returns the crop's handle, width and height."
                ),
                arguments=CropImageArguments,
                handler=crop_image,
                read_only=False,
            ),
            ToolDef(
                name="get_image",
                description="Return a stored image as a PNG.",
                arguments=GetImageArguments,
                handler=get_image,
            ),
        ],
    )
