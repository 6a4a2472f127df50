"""``segment-rle``: the well-behaved segmenter; COCO RLE masks at image resolution, all declared.

Tool ``segment(image, boxes=None)``: the image travels by value; optional box
prompts (canonical xyxy pixels, declared) keep only the instances whose box
overlaps a prompt at IoU >= 0.5, as box-prompted segmenters do. It returns
``structuredContent`` under a full ``outputSchema``::

    {"image_size": {"width": W, "height": H},
     "instances": [{"label": str, "score": float, "bbox": [x_min, y_min, x_max, y_max],
                    "mask": {"size": [H, W], "counts": str}}, ...]}

Masks are COCO compressed RLE (pycocotools) at the image's own resolution,
declared with ``encoding``/``resolution``; boxes are canonical, declared with
``coordinate_system``. Errors are ``isError``. Memory: by value only; it resolves no handles.
"""

from __future__ import annotations

import numpy as np
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._outputs import CanonicalLabeledBoxOut, ImageSizeOut
from servers._runtime import decode_image_argument, floats, image_size_of, infer, preload_segmenter
from servers._schemas import declare_image, declare_role, declare_size_object, inline_schema
from servers._tools import CallInfo, ToolDef, ToolInputError, build_mcp_server, structured_result
from testbed.conventions import CANONICAL, MaskEncoding, MaskResolution, box_iou, encode_masks
from testbed.protocol import (
    MemoryScope,
    Modality,
    SchemaStyle,
    SemanticRole,
    ServerTruth,
    ToolTruth,
    declare_box,
    declare_mask,
)
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "segment-rle"
MASK_ENCODING = MaskEncoding.COCO_RLE
MASK_RESOLUTION = MaskResolution.IMAGE


class SegmentArguments(BaseModel):
    """Arguments of segment."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        description="The image as base64 PNG or JPEG (a data: URI is accepted).",
        json_schema_extra=declare_image(MemoryScope.BY_VALUE),
    )
    boxes: list[list[float]] | None = Field(
        default=None,
        description="Optional box prompts [x_min, y_min, x_max, y_max] in pixels, origin top-left: "
        "only instances overlapping a prompt at IoU >= 0.5 are returned.",
        json_schema_extra=declare_box(CANONICAL),
    )


class RleOut(BaseModel):
    """A COCO compressed run-length encoded mask."""

    size: list[int] = Field(min_length=2, max_length=2, description="[height, width].")
    counts: str = Field(description="COCO compressed run lengths (column-major).")


class InstanceOut(CanonicalLabeledBoxOut):
    """One segmented object."""

    mask: RleOut = Field(
        description="COCO RLE mask at image resolution.",
        json_schema_extra=declare_mask(MASK_ENCODING, MASK_RESOLUTION),
    )


class SegmentOutput(BaseModel):
    """What segment returns."""

    image_size: ImageSizeOut = Field(description="Size of the input image.", json_schema_extra=declare_size_object())
    instances: list[InstanceOut] = Field(
        description="Segmented objects.", json_schema_extra=declare_role(SemanticRole.INSTANCES, Modality.COLLECTION)
    )


TRUTH = ServerTruth(
    name=NAME,
    kind="segmentation",
    summary="Well-behaved: COCO RLE masks at image resolution and canonical boxes, all declared; isError errors.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="segment",
            schema_style=SchemaStyle.FULL,
            box_convention=CANONICAL,
            mask_encoding=MASK_ENCODING,
            mask_resolution=MASK_RESOLUTION,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image", SemanticRole.BOUNDING_BOX: "boxes"},
            paths={
                SemanticRole.IMAGE_SIZE: "image_size",
                SemanticRole.INSTANCES: "instances",
                SemanticRole.CLASS_LABEL: "instances[*].label",
                SemanticRole.SCORE: "instances[*].score",
                SemanticRole.BOUNDING_BOX: "instances[*].bbox",
                SemanticRole.MASK: "instances[*].mask",
            },
        ),
    ),
)


PROMPT_IOU = 0.5


def prompted_instances(boxes_xyxy: np.ndarray, prompts: list[list[float]]) -> list[int]:
    """Indexes of the instances whose box overlaps some prompt at IoU >= ``PROMPT_IOU``.

    Raises:
        ToolInputError: a prompt is not four finite numbers with positive area.
    """
    for index, prompt in enumerate(prompts):
        if len(prompt) != 4:
            raise ToolInputError(
                f"boxes.{index}: a prompt is four numbers [x_min, y_min, x_max, y_max], got {len(prompt)}"
            )
    array = np.asarray(prompts, dtype=np.float64).reshape(-1, 4) if prompts else np.zeros((0, 4))
    if array.shape[0] != len(prompts) or not np.isfinite(array).all():
        raise ToolInputError("boxes: each prompt must be four finite numbers [x_min, y_min, x_max, y_max]")
    if ((array[:, 2] <= array[:, 0]) | (array[:, 3] <= array[:, 1])).any():
        raise ToolInputError("boxes: each prompt needs x_max > x_min and y_max > y_min")
    if len(boxes_xyxy) == 0 or len(array) == 0:
        return []
    overlaps = box_iou(boxes_xyxy, array)
    return [int(i) for i in np.flatnonzero(overlaps.max(axis=1) >= PROMPT_IOU)]


@server(NAME, truth=TRUTH, preload=preload_segmenter)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``segment-rle`` server."""

    def segment(arguments: SegmentArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image, argument="image", config=config)
        result = infer("segment", image, config)
        size = image_size_of(image)
        assert result.masks is not None  # a segmentation model always returns masks
        keep = list(range(len(result)))
        if arguments.boxes is not None:
            keep = prompted_instances(result.boxes_xyxy, arguments.boxes)
        masks = encode_masks(result.masks[keep], MASK_ENCODING)
        assert isinstance(masks, list)
        output = SegmentOutput(
            image_size=ImageSizeOut(width=size.width, height=size.height),
            instances=[
                InstanceOut(
                    label=result.label(i),
                    score=float(result.scores[i]),
                    bbox=floats(result.boxes_xyxy[i]),
                    mask=RleOut.model_validate(masks[position]),
                )
                for position, i in enumerate(keep)
            ],
        )
        return structured_result(output.model_dump(mode="json"))

    return build_mcp_server(
        NAME,
        instructions="Instance segmentation. Masks are COCO RLE at image resolution; every field is declared.",
        tools=[
            ToolDef(
                name="segment",
                description=(
                    "Segment objects in an image given as base64. Returns the image size and, per object, its label, "
                    "score, bbox [x_min, y_min, x_max, y_max] in pixels and a COCO RLE mask at image resolution."
                ),
                arguments=SegmentArguments,
                handler=segment,
                output_schema=inline_schema(SegmentOutput),
            )
        ],
    )
