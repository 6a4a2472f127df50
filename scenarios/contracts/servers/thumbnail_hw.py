"""A small MCP server the testbed does not own, reading an image size as a ``[height, width]`` pair.

The consumer of ``scenarios/contracts/shape_order.yaml``. It uses only the MCP SDK, numpy and Pillow.
Tool ``thumbnail(image, size)`` takes a base64 PNG or JPEG and the size to resize it to, a pair its
input schema declares ``shape_order: hw``, and returns the resized image as PNG image content. A pair
written ``[width, height]`` is read the other way round, and the thumbnail comes back transposed in shape:
the silent failure the ``shape_order`` contract stops before the call.

    python thumbnail_hw.py    # over stdio
"""

import base64
import io
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp_types import ImageContent
from PIL import Image
from pydantic import Field

SIZE_DECLARATION = {"semantic_role": "image_size", "modality": "size", "shape_order": "hw"}
MAX_SIDE = 4096


def build() -> MCPServer:
    server = MCPServer("thumbnail-hw", instructions="Resizes images; sizes are [height, width] pairs.")

    @server.tool(description="Resize a base64 PNG or JPEG to size = [height, width] pixels; returns a PNG.")
    def thumbnail(
        image: Annotated[str, Field(json_schema_extra={"semantic_role": "image", "modality": "image"})],
        size: Annotated[
            list[Annotated[int, Field(gt=0, le=MAX_SIDE)]],
            Field(min_length=2, max_length=2, json_schema_extra=SIZE_DECLARATION),
        ],
    ) -> ImageContent:
        height, width = size
        picture = Image.open(io.BytesIO(base64.b64decode(image.partition(",")[2] or image))).convert("RGB")
        written = io.BytesIO()
        picture.resize((width, height)).save(written, format="PNG")
        return ImageContent(type="image", data=base64.b64encode(written.getvalue()).decode(), mime_type="image/png")

    return server


if __name__ == "__main__":
    build().run("stdio")
