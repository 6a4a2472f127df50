"""Box and mask conventions as data, with exact converters and their inverses.

Servers declare which conventions they use; validators convert what a server
returns to the testbed's canonical form (:data:`CANONICAL` boxes, boolean
masks at image resolution) before scoring it.
"""

from testbed.conventions._box import (
    CANONICAL,
    AxisOrder,
    BoxConvention,
    BoxFormat,
    BoxUnits,
    ImageSize,
    Origin,
    ShapeOrder,
    all_box_conventions,
    box_iou,
    box_iou_many,
    convert_boxes,
    from_canonical,
    parse_shape,
    report_shape,
    to_canonical,
    to_canonical_many,
)
from testbed.conventions._mask import (
    MASK_URI_SCHEME,
    CocoRle,
    LabelMap,
    MaskEncoding,
    MaskPayload,
    MaskPayloadError,
    MaskResolution,
    MaskStack,
    decode_masks,
    encode_masks,
    mask_iou,
    parse_mask_encoding,
    resize_masks,
)
from testbed.conventions._rle_window import coco_rle_runs, on_pixels, on_pixels_within

__all__ = [
    "CANONICAL",
    "MASK_URI_SCHEME",
    "AxisOrder",
    "BoxConvention",
    "BoxFormat",
    "BoxUnits",
    "CocoRle",
    "ImageSize",
    "LabelMap",
    "MaskEncoding",
    "MaskPayload",
    "MaskPayloadError",
    "MaskResolution",
    "MaskStack",
    "Origin",
    "ShapeOrder",
    "all_box_conventions",
    "box_iou",
    "box_iou_many",
    "coco_rle_runs",
    "convert_boxes",
    "decode_masks",
    "encode_masks",
    "from_canonical",
    "mask_iou",
    "on_pixels",
    "on_pixels_within",
    "parse_mask_encoding",
    "parse_shape",
    "report_shape",
    "resize_masks",
    "to_canonical",
    "to_canonical_many",
]
