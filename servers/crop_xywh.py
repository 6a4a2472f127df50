"""``crop-xywh``: an OpenCV/SAM-style cropper; ``[x, y, w, h]`` pixel boxes in, image content out.

Tool ``crop(image, box)``: the image travels by value; ``box`` is
``xywh/pixel/xy/top_left`` (top-left corner, then width and height, in pixels),
declared with ``coordinate_system`` on the input schema. The crop is every
pixel the box touches (rows ``floor(y)`` to ``ceil(y + h)``, columns
``floor(x)`` to ``ceil(x + w)``), returned by value as MCP image content (PNG);
there is no ``outputSchema``. A box not inside the image is refused.
Errors are ``isError``. Memory: by value only; it resolves no handles.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import crop_canonical, decode_image_argument
from servers._schemas import declare_image
from servers._tools import CallInfo, ToolDef, build_mcp_server, image_result
from testbed.conventions import BoxConvention
from testbed.imaging import encode_png_base64
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth, declare_box
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "crop-xywh"
BOX_CONVENTION = BoxConvention.from_name("xywh/pixel/xy/top_left")


class CropArguments(BaseModel):
    """Arguments of crop."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        description="The image as base64 PNG or JPEG (a data: URI is accepted).",
        json_schema_extra=declare_image(MemoryScope.BY_VALUE),
    )
    box: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[x, y, w, h] in pixels: top-left corner, then width and height.",
        json_schema_extra=declare_box(BOX_CONVENTION),
    )


TRUTH = ServerTruth(
    name=NAME,
    kind="cropping",
    summary="Crop box [x, y, w, h] in pixels (declared on its inputSchema); the crop comes back by value as image "
    "content with no outputSchema.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="crop",
            schema_style=SchemaStyle.CONTENT,
            box_convention=BOX_CONVENTION,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image", SemanticRole.BOUNDING_BOX: "box"},
        ),
    ),
)


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``crop-xywh`` server."""

    def crop(arguments: CropArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image, argument="image", config=config)
        return image_result(encode_png_base64(crop_canonical(image, arguments.box, BOX_CONVENTION, argument="box")))

    return build_mcp_server(
        NAME,
        instructions="Crops images. Boxes are [x, y, w, h] in pixels, origin top-left.",
        tools=[
            ToolDef(
                name="crop",
                description="Crop a base64 image to box [x, y, w, h] (pixels, top-left corner). Returns a PNG image.",
                arguments=CropArguments,
                handler=crop,
            )
        ],
    )
