"""``crop-masked``: cuts one object out of an image along its mask; reads COCO RLE masks at image resolution.

Tool ``crop_mask(image, mask)``: the image travels by value; ``mask`` is one
object's mask as COCO RLE, ``{"size": [H, W], "counts": str}`` (COCO's
uncompressed list of run lengths is accepted too), on the image's own grid. The
input schema declares it with ``encoding``/``resolution``. The result is the
mask's tight box cut out of the image with every pixel outside the mask set to
black, returned by value as MCP image content (PNG); there is no
``outputSchema``. A value that is not a COCO RLE object, a mask on another grid
and an empty mask are refused. Errors are ``isError``. Memory: by value only;
it resolves no handles.

It is the reference mask *consumer*: masks written in another encoding
(polygons, PNGs) or at the model's resolution reach it correctly only through
a declared mask adapter.
"""

from __future__ import annotations

import numpy as np
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument, image_size_of
from servers._schemas import declare_image
from servers._tools import CallInfo, ToolDef, ToolInputError, build_mcp_server, image_result
from testbed._arrays import BoolMask, RGBImage
from testbed.conventions import ImageSize, MaskEncoding, MaskPayloadError, MaskResolution, decode_masks
from testbed.imaging import encode_png_base64
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth, declare_mask
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "crop-masked"
MASK_ENCODING = MaskEncoding.COCO_RLE
MASK_RESOLUTION = MaskResolution.IMAGE


class RleIn(BaseModel):
    """One object's mask as COCO run-length encoding."""

    model_config = ConfigDict(extra="forbid")

    size: list[int] = Field(min_length=2, max_length=2, description="[height, width] of the grid.")
    counts: str | list[int] = Field(description="COCO compressed run lengths (column-major), or the plain list.")


class CropMaskArguments(BaseModel):
    """Arguments of crop_mask."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        description="The image as base64 PNG or JPEG (a data: URI is accepted).",
        json_schema_extra=declare_image(MemoryScope.BY_VALUE),
    )
    mask: RleIn = Field(
        description="One object's mask as COCO RLE at the image's resolution.",
        json_schema_extra=declare_mask(MASK_ENCODING, MASK_RESOLUTION),
    )


TRUTH = ServerTruth(
    name=NAME,
    kind="cropping",
    summary="Reads one COCO RLE mask at image resolution (declared on its inputSchema) and returns the object cut "
    "out along it, by value as image content with no outputSchema.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="crop_mask",
            schema_style=SchemaStyle.CONTENT,
            mask_encoding=MASK_ENCODING,
            mask_resolution=MASK_RESOLUTION,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image", SemanticRole.MASK: "mask"},
        ),
    ),
)


def read_mask(mask: RleIn, size: ImageSize) -> BoolMask:
    """Decode ``mask`` on the image's grid.

    Raises:
        ToolInputError: the mask is on another grid, its run lengths do not fit it, or it is empty.
    """
    if mask.size != [size.height, size.width]:
        raise ToolInputError(
            f"mask: size {mask.size} is not the image's [height, width] = [{size.height}, {size.width}]"
        )
    try:
        decoded: BoolMask = decode_masks([mask.model_dump()], MASK_ENCODING, size)[0]
    except MaskPayloadError as error:
        raise ToolInputError(f"mask: {str(error).split(': ', 1)[-1]}") from None
    if not decoded.any():
        raise ToolInputError("mask: the mask is empty; there is nothing to cut out")
    return decoded


def cut_out(image: RGBImage, mask: BoolMask) -> RGBImage:
    """The mask's tight box of ``image``, black wherever the mask is off."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    piece = np.array(image[top:bottom, left:right])
    piece[~mask[top:bottom, left:right]] = 0
    return piece


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``crop-masked`` server."""

    def crop_mask(arguments: CropMaskArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image, argument="image", config=config)
        mask = read_mask(arguments.mask, image_size_of(image))
        return image_result(encode_png_base64(cut_out(image, mask)))

    return build_mcp_server(
        NAME,
        instructions="Cuts objects out of images along their masks. Masks are COCO RLE at the image's resolution.",
        tools=[
            ToolDef(
                name="crop_mask",
                description=(
                    "Cut one object out of a base64 image along its mask, given as COCO RLE {size: [H, W], counts} "
                    "at the image's resolution. Returns a PNG of the mask's bounding box, black outside the mask."
                ),
                arguments=CropMaskArguments,
                handler=crop_mask,
            )
        ],
    )
