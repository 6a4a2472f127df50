"""The contract rules one by one, on edge values built by hand: mask encoding and resolution, shape order,
required fields, and a rule that cannot be evaluated reported as such instead of raising.

The policies around them (halt, convert, replan, fallback) run end to end in test_contracts.py and
test_contracts_scenarios.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from testbed.contracts import (
    ContractsSpec,
    EdgeValue,
    Finding,
    describe_inserted,
    inserted_arguments,
    inserted_mask_conversions,
    registered_rules,
    rule_names,
)
from testbed.conventions import ImageSize, MaskEncoding, MaskResolution, ShapeOrder, encode_masks
from testbed.protocol import declare_image_size, declare_mask
from testbed.workflow import BoxAdapter, MaskAdapter, MaskConvention

IMAGE = ImageSize(width=8, height=6)
MODEL = ImageSize(width=8, height=8)


def _masks(size: ImageSize) -> np.ndarray:
    masks = np.zeros((1, size.height, size.width), dtype=bool)
    masks[0, 1:4, 2:6] = True
    return masks


def _one(encoding: MaskEncoding, size: ImageSize = IMAGE) -> Any:
    payload: Any = encode_masks(_masks(size), encoding)
    return payload if encoding is MaskEncoding.LABEL_MAP else payload[0]


def _edge(
    value: Any,
    *,
    produced: dict[str, Any] | None,
    expected: dict[str, Any],
    sent: Any = None,
    adapter: MaskAdapter | BoxAdapter | None = None,
    consumer_schema: dict[str, Any] | None = None,
) -> EdgeValue:
    return EdgeValue(
        producer="seg.segment",
        source_node="segment",
        source_path="instances[*].mask",
        argument="mask",
        produced=produced,
        expected=expected,
        source=value,
        sent=value if sent is None else sent,
        adapter=adapter,
        image_size=IMAGE,
        consumer_schema=consumer_schema,
    )


def _check(name: str, edge: EdgeValue) -> Finding | None:
    (rule,) = registered_rules((name,))
    assert rule.applies(edge)
    return rule.check(edge)


def _mask_decl(encoding: MaskEncoding, resolution: MaskResolution = MaskResolution.IMAGE) -> dict[str, Any]:
    return declare_mask(encoding, resolution)


def test_the_built_in_rules_are_registered_and_selectable_by_name() -> None:
    built_in = {"box_convention", "box_bounds", "mask_encoding", "mask_resolution", "shape_order", "required_fields"}
    assert built_in <= set(rule_names())
    assert ContractsSpec.model_validate({"policy": "halt", "rules": ["required_fields"]}).rules == ("required_fields",)


# --- mask_encoding --------------------------------------------------------------------------------


def test_mask_encoding_passes_the_declared_encoding_and_breaches_another_with_the_converting_adapter() -> None:
    rle = _one(MaskEncoding.COCO_RLE)
    same = _edge(rle, produced=_mask_decl(MaskEncoding.COCO_RLE), expected=_mask_decl(MaskEncoding.COCO_RLE))
    assert _check("mask_encoding", same) is None

    png = _one(MaskEncoding.PNG_BASE64)
    edge = _edge(png, produced=_mask_decl(MaskEncoding.PNG_BASE64), expected=_mask_decl(MaskEncoding.COCO_RLE))
    found = _check("mask_encoding", edge)
    assert found is not None
    assert not found.unevaluable
    assert "masks arrive as png_base64 but the consumer reads coco_rle" in found.detail
    assert isinstance(found.remedy, MaskAdapter)
    assert found.remedy.apply(png, image_size=IMAGE) == rle, "the remedy converts exactly"


def test_mask_encoding_has_no_remedy_for_resource_uris_which_only_their_server_can_read() -> None:
    edge = _edge(
        "mask://abc", produced=_mask_decl(MaskEncoding.RESOURCE_URI), expected=_mask_decl(MaskEncoding.PNG_BASE64)
    )
    found = _check("mask_encoding", edge)
    assert found is not None
    assert not found.unevaluable
    assert found.remedy is None


def test_mask_encoding_reads_a_declared_adapter_and_its_wrong_source() -> None:
    polygon = _one(MaskEncoding.POLYGON)
    rle = MaskConvention(encoding=MaskEncoding.COCO_RLE)
    to_rle = MaskAdapter.between(MaskConvention(encoding=MaskEncoding.POLYGON), rle)
    converted = to_rle.apply(polygon, image_size=IMAGE)
    declared = {"produced": _mask_decl(MaskEncoding.POLYGON), "expected": _mask_decl(MaskEncoding.COCO_RLE)}
    assert _check("mask_encoding", _edge(polygon, sent=converted, adapter=to_rle, **declared)) is None

    png_to_rle = MaskAdapter.between(MaskConvention(encoding=MaskEncoding.PNG_BASE64), rle)
    found = _check("mask_encoding", _edge(polygon, sent=converted, adapter=png_to_rle, **declared))
    assert found is not None
    assert "adapter reads png_base64 but seg.segment writes polygon" in found.detail


@pytest.mark.parametrize(
    ("produced", "sent", "why"),
    [
        (None, None, "declares no mask encoding"),
        ({"semantic_role": "mask"}, None, "declares no mask encoding"),
        ("declared", {"size": [6, 8], "counts": "other"}, "rewritten outside any tracked adapter"),
    ],
)
def test_mask_encoding_that_cannot_be_judged_is_unevaluable(produced: Any, sent: Any, why: str) -> None:
    declared = _mask_decl(MaskEncoding.COCO_RLE)
    edge = _edge(
        _one(MaskEncoding.COCO_RLE), produced=declared if produced == "declared" else produced, expected=declared
    )
    if sent is not None:
        edge = _edge(edge.source, produced=declared, expected=declared, sent=sent)
    found = _check("mask_encoding", edge)
    assert found is not None
    assert found.unevaluable
    assert why in found.detail


# --- mask_resolution ------------------------------------------------------------------------------


def test_mask_resolution_compares_the_masks_grid_with_the_image() -> None:
    declared = _mask_decl(MaskEncoding.COCO_RLE)
    assert _check("mask_resolution", _edge(_one(MaskEncoding.COCO_RLE), produced=declared, expected=declared)) is None

    model = _mask_decl(MaskEncoding.COCO_RLE, MaskResolution.MODEL)
    on_model = _one(MaskEncoding.COCO_RLE, MODEL)
    found = _check("mask_resolution", _edge(on_model, produced=model, expected=declared))
    assert found is not None
    assert not found.unevaluable
    assert "the mask is 8x8 but the consumer reads it on the 8x6 image" in found.detail
    assert isinstance(found.remedy, MaskAdapter)
    assert found.remedy.model_size == (8, 8), "the model grid is read from the payload"
    resized = found.remedy.apply(on_model, image_size=IMAGE)
    assert resized["size"] == [6, 8]


@pytest.mark.parametrize("encoding", [MaskEncoding.PNG_BASE64, MaskEncoding.LABEL_MAP])
def test_mask_resolution_reads_the_grid_of_every_sized_encoding(encoding: MaskEncoding) -> None:
    declared = _mask_decl(encoding)
    found = _check("mask_resolution", _edge(_one(encoding, MODEL), produced=declared, expected=declared))
    assert found is not None
    assert "the mask is 8x8" in found.detail


def test_mask_resolution_of_polygons_goes_by_the_declarations() -> None:
    polygon = _one(MaskEncoding.POLYGON)
    image = _mask_decl(MaskEncoding.POLYGON)
    model = _mask_decl(MaskEncoding.POLYGON, MaskResolution.MODEL)
    assert _check("mask_resolution", _edge(polygon, produced=image, expected=image)) is None
    found = _check("mask_resolution", _edge(polygon, produced=model, expected=image))
    assert found is not None
    assert "masks arrive at model resolution" in found.detail
    assert found.remedy is None, "a polygon names no model grid to resize from"


@pytest.mark.parametrize(
    "value", ["not base64 !", "aGVsbG8gd29ybGQgdGhpcyBpcyBub3QgYSBwbmc=", {"size": [6, 8], "counts": 7}, []]
)
def test_an_undecodable_mask_is_unevaluable_never_an_exception(value: Any) -> None:
    encoding = MaskEncoding.PNG_BASE64 if isinstance(value, str) else MaskEncoding.COCO_RLE
    declared = _mask_decl(encoding)
    found = _check("mask_resolution", _edge(value, produced=declared, expected=declared))
    assert found is not None
    assert found.unevaluable
    assert "cannot be decoded" in found.detail


# --- shape_order ----------------------------------------------------------------------------------


def _size_edge(value: Any, produced: dict[str, Any] | None, expected: str = "hw") -> EdgeValue:
    edge = _edge(value, produced=produced, expected=declare_image_size(ShapeOrder(expected)))
    return EdgeValue(**{**edge.__dict__, "source_path": "image_size", "argument": "size"})


def test_shape_order_goes_by_the_declarations_when_both_sides_declare() -> None:
    assert _check("shape_order", _size_edge([6, 8], declare_image_size(ShapeOrder.HW))) is None
    found = _check("shape_order", _size_edge([8, 6], declare_image_size(ShapeOrder.WH)))
    assert found is not None
    assert not found.unevaluable
    assert "writes the size as wh, the consumer reads hw" in found.detail


def test_shape_order_of_an_undeclared_pair_goes_by_the_image() -> None:
    assert _check("shape_order", _size_edge([6, 8], None)) is None
    found = _check("shape_order", _size_edge([8, 6], None))
    assert found is not None
    assert not found.unevaluable
    assert "the 8x6 image the other way round" in found.detail
    found = _check("shape_order", _size_edge([5, 5], None))
    assert found is not None
    assert found.unevaluable


def test_shape_order_breaches_a_size_object_and_cannot_judge_a_non_pair() -> None:
    found = _check("shape_order", _size_edge({"width": 8, "height": 6}, None))
    assert found is not None
    assert not found.unevaluable
    assert "{width, height} object" in found.detail
    found = _check("shape_order", _size_edge("8x6", None))
    assert found is not None
    assert found.unevaluable
    assert "is not an image size pair" in found.detail


# --- required_fields ------------------------------------------------------------------------------

CONSUMER = {
    "type": "object",
    "properties": {
        "scale": {"type": "number", "minimum": 0.25, "maximum": 4},
        "width": {"type": "string", "pattern": "^[0-9]+$"},
        "mode": {"enum": ["fit", "fill"]},
        "path": {"type": "string", "maxLength": 64},
        "mask": {"$ref": "#/$defs/Rle"},
        "boxes": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 4}},
    },
    "$defs": {
        "Rle": {
            "type": "object",
            "properties": {"size": {"type": "array"}, "counts": {"type": "string"}},
            "required": ["size", "counts"],
        }
    },
}


def _field_edge(argument: str, value: Any) -> EdgeValue:
    schema = CONSUMER["properties"][argument]  # type: ignore[index]
    edge = _edge(value, produced=None, expected=dict(schema), consumer_schema=CONSUMER)
    return EdgeValue(**{**edge.__dict__, "argument": argument})


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("scale", 2.0),
        ("width", "64"),
        ("mode", "fit"),
        ("mask", {"size": [6, 8], "counts": "x"}),
        ("boxes[0]", [1, 2, 3, 4]),
    ],
)
def test_required_fields_passes_a_value_the_consumers_schema_accepts(argument: str, value: Any) -> None:
    edge = _field_edge(argument.split("[")[0], value)
    edge = EdgeValue(**{**edge.__dict__, "argument": argument})
    assert _check("required_fields", edge) is None


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("scale", "1e309", "scale: '1e309' is not of type 'number'"),
        ("scale", math.inf, "scale is not a finite number"),
        ("scale", 50.0, "scale: 50.0 is greater than the maximum of 4"),
        ("width", "12; cat /etc/passwd", "width: '12; cat /etc/passwd' does not match '^[0-9]+$'"),
        ("mode", "stretch", "mode: 'stretch' is not one of ['fit', 'fill']"),
        ("mask", {"size": [6, 8]}, "mask: 'counts' is a required property"),
        ("mask", [[0.123456789] * 40], "... is not of type 'object'"),
        ("mask", {"size": [6, 8], "counts": [1, math.nan]}, "mask.counts[1] is not a finite number"),
    ],
)
def test_required_fields_breaches_a_value_of_the_wrong_type_range_or_shape(
    argument: str, value: Any, message: str
) -> None:
    found = _check("required_fields", _field_edge(argument, value))
    assert found is not None
    assert not found.unevaluable
    assert message in found.detail
    assert found.remedy is None
    assert "\n" not in found.detail


def test_required_fields_without_the_property_in_the_consumers_schema_is_unevaluable() -> None:
    edge = EdgeValue(**{**_field_edge("scale", 1.0).__dict__, "argument": "zoom"})
    found = _check("required_fields", edge)
    assert found is not None
    assert found.unevaluable
    assert "has no property zoom" in found.detail


def test_required_fields_with_a_broken_consumer_schema_is_unevaluable() -> None:
    broken = {"type": "object", "properties": {"scale": {"type": "string", "pattern": "(unclosed"}}}
    edge = EdgeValue(**{**_field_edge("scale", "x").__dict__, "consumer_schema": broken})
    found = _check("required_fields", edge)
    assert found is not None
    assert found.unevaluable
    assert "cannot be applied" in found.detail


# --- inserted adapters as recorded ----------------------------------------------------------------


def test_an_inserted_mask_adapter_reads_back_from_the_calls_record() -> None:
    adapter = MaskAdapter.between(
        MaskConvention(encoding=MaskEncoding.POLYGON, normalized_polygons=True, resolution=MaskResolution.MODEL),
        MaskConvention(encoding=MaskEncoding.COCO_RLE),
        model_size=(8, 8),
    )
    box = BoxAdapter.between("xyxy/pixel", "xywh/pixel")
    recorded = [describe_inserted("mask", adapter), describe_inserted("box", box), "other: box a -> b"]
    assert inserted_arguments(recorded) == {"mask", "box"}
    assert inserted_mask_conversions(recorded) == {"mask": (adapter.from_, adapter.to)}
