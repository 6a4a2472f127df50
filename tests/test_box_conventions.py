"""Box conventions: exact converters, their inverses, and hand-computed examples that pin the semantics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import ArrayLike
from pydantic import ValidationError

from testbed._errors import UnsupportedEncodingError
from testbed.conventions import (
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
    convert_boxes,
    from_canonical,
    parse_shape,
    report_shape,
    to_canonical,
)

ALL_CONVENTIONS = all_box_conventions()
RTOL = ATOL = 1e-6  # the round-trip tolerance, relative and absolute


@st.composite
def boxes_on_an_image(draw: st.DrawFn) -> tuple[np.ndarray, ImageSize]:
    """Valid canonical boxes (x1 < x2, y1 < y2) inside or around an image of random size."""
    size = ImageSize(width=draw(st.integers(1, 4096)), height=draw(st.integers(1, 4096)))
    count = draw(st.integers(0, 6))
    boxes = []
    for _ in range(count):
        x1 = draw(st.floats(-0.25 * size.width, 1.25 * size.width))
        y1 = draw(st.floats(-0.25 * size.height, 1.25 * size.height))
        width = draw(st.floats(1e-3, 1.5 * size.width))
        height = draw(st.floats(1e-3, 1.5 * size.height))
        boxes.append([x1, y1, x1 + width, y1 + height])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), size


@pytest.mark.parametrize("src", ALL_CONVENTIONS, ids=str)
@settings(max_examples=12, deadline=None)
@given(case=boxes_on_an_image())
def test_round_trip_through_every_other_convention_is_identity(
    src: BoxConvention, case: tuple[np.ndarray, ImageSize]
) -> None:
    canonical, size = case
    boxes = from_canonical(canonical, src, size)
    for dst in ALL_CONVENTIONS:
        there = convert_boxes(boxes, src, dst, size)
        back = convert_boxes(there, dst, src, size)
        np.testing.assert_allclose(back, boxes, rtol=RTOL, atol=ATOL, err_msg=f"{src} -> {dst} -> {src}")


@settings(max_examples=200, deadline=None)
@given(convention=st.sampled_from(ALL_CONVENTIONS), case=boxes_on_an_image())
def test_to_canonical_and_from_canonical_are_inverses(
    convention: BoxConvention, case: tuple[np.ndarray, ImageSize]
) -> None:
    canonical, size = case
    written = from_canonical(canonical, convention, size)
    np.testing.assert_allclose(to_canonical(written, convention, size), canonical, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(from_canonical(to_canonical(written, convention, size), convention, size), written)


@settings(max_examples=100, deadline=None)
@given(case=boxes_on_an_image())
def test_canonical_convention_converts_to_itself_unchanged(case: tuple[np.ndarray, ImageSize]) -> None:
    canonical, size = case
    np.testing.assert_array_equal(to_canonical(canonical, CANONICAL, size), canonical)
    np.testing.assert_array_equal(from_canonical(canonical, CANONICAL, size), canonical)


@settings(max_examples=100, deadline=None)
@given(src=st.sampled_from(ALL_CONVENTIONS), dst=st.sampled_from(ALL_CONVENTIONS), case=boxes_on_an_image())
def test_direct_conversion_equals_conversion_through_canonical(
    src: BoxConvention, dst: BoxConvention, case: tuple[np.ndarray, ImageSize]
) -> None:
    canonical, size = case
    boxes = from_canonical(canonical, src, size)
    np.testing.assert_allclose(
        convert_boxes(boxes, src, dst, size), from_canonical(canonical, dst, size), rtol=RTOL, atol=ATOL
    )


# Hand-computed examples. Each pins one part of the semantics; the numbers are chosen so no two coordinates coincide.


def test_cxcywh_normalized_box_on_a_320x240_image_matches_hand_computation() -> None:
    size = ImageSize(width=320, height=240)
    convention = BoxConvention(format=BoxFormat.CXCYWH, units=BoxUnits.NORMALIZED)
    # Canonical (16, 60, 80, 180): centre (48, 120), size 64 x 120 -> (48/320, 120/240, 64/320, 120/240).
    expected = [[0.15, 0.5, 0.2, 0.5]]
    np.testing.assert_allclose(from_canonical([[16, 60, 80, 180]], convention, size), expected)
    np.testing.assert_allclose(to_canonical(expected, convention, size), [[16, 60, 80, 180]])


def test_xywh_anchor_in_a_bottom_left_frame_is_the_boxs_bottom_left_corner() -> None:
    size = ImageSize(width=100, height=80)
    # Canonical rows 15..35 from the top are 45..65 from the bottom (y_bl = 80 - y_tl).
    canonical = [[10, 15, 40, 35]]
    xywh = BoxConvention(format=BoxFormat.XYWH, units=BoxUnits.PIXEL, origin=Origin.BOTTOM_LEFT)
    xyxy = BoxConvention(format=BoxFormat.XYXY, units=BoxUnits.PIXEL, origin=Origin.BOTTOM_LEFT)
    np.testing.assert_array_equal(from_canonical(canonical, xywh, size), [[10, 45, 30, 20]])
    np.testing.assert_array_equal(from_canonical(canonical, xyxy, size), [[10, 45, 40, 65]])
    np.testing.assert_array_equal(to_canonical([[10, 45, 30, 20]], xywh, size), canonical)


def test_gemini_style_yx_per_mille_box_matches_hand_computation() -> None:
    size = ImageSize(width=640, height=480)
    gemini = BoxConvention(format=BoxFormat.XYXY, units=BoxUnits.PER_MILLE, axis_order=AxisOrder.YX)
    # Canonical (96, 24, 512, 360): x per mille 96*1000/640 = 150, 512 -> 800; y 24*1000/480 = 50, 360 -> 750.
    expected = [[50, 150, 750, 800]]  # [y_min, x_min, y_max, x_max]
    np.testing.assert_allclose(from_canonical([[96, 24, 512, 360]], gemini, size), expected)
    np.testing.assert_allclose(to_canonical(expected, gemini, size), [[96, 24, 512, 360]])


def test_yx_axis_order_puts_y_first_in_every_pair_of_every_format() -> None:
    size = ImageSize(width=200, height=100)
    canonical = [[10, 20, 50, 80]]  # x 10..50, y 20..80: w 40, h 60, centre (30, 50)
    expected = {BoxFormat.XYXY: [20, 10, 80, 50], BoxFormat.XYWH: [20, 10, 60, 40], BoxFormat.CXCYWH: [50, 30, 60, 40]}
    for box_format, values in expected.items():
        convention = BoxConvention(format=box_format, units=BoxUnits.PIXEL, axis_order=AxisOrder.YX)
        np.testing.assert_array_equal(from_canonical(canonical, convention, size), [values], err_msg=str(convention))


def test_units_scale_x_by_width_and_y_by_height() -> None:
    size = ImageSize(width=200, height=100)
    xywh = [[10, 20, 40, 60]]
    normalized = BoxConvention(format=BoxFormat.XYWH, units=BoxUnits.NORMALIZED)
    per_mille = BoxConvention(format=BoxFormat.XYWH, units=BoxUnits.PER_MILLE)
    pixel = BoxConvention(format=BoxFormat.XYWH, units=BoxUnits.PIXEL)
    np.testing.assert_allclose(convert_boxes(xywh, pixel, normalized, size), [[0.05, 0.2, 0.2, 0.6]])
    np.testing.assert_allclose(convert_boxes(xywh, pixel, per_mille, size), [[50, 200, 200, 600]])


def test_centre_of_a_bottom_left_box_is_mirrored_about_the_image_middle() -> None:
    size = ImageSize(width=100, height=80)
    convention = BoxConvention(format=BoxFormat.CXCYWH, units=BoxUnits.PIXEL, origin=Origin.BOTTOM_LEFT)
    np.testing.assert_array_equal(from_canonical([[10, 15, 40, 35]], convention, size), [[25, 55, 30, 20]])


def test_boxes_outside_the_image_are_not_clipped() -> None:
    size = ImageSize(width=100, height=50)
    convention = BoxConvention(format=BoxFormat.XYXY, units=BoxUnits.NORMALIZED)
    np.testing.assert_allclose(from_canonical([[-50, -10, 150, 60]], convention, size), [[-0.5, -0.2, 1.5, 1.2]])


def test_convert_boxes_accepts_lists_and_returns_a_new_float64_array() -> None:
    size = ImageSize(width=10, height=10)
    source = np.array([[1, 2, 3, 4]], dtype=np.int64)
    result = convert_boxes(source, CANONICAL, CANONICAL, size)
    assert result.dtype == np.float64
    assert not np.shares_memory(result, source)
    result[0, 0] = 99
    assert source[0, 0] == 1
    assert convert_boxes([[1, 2, 3, 4]], CANONICAL, ALL_CONVENTIONS[-1], size).shape == (1, 4)


@pytest.mark.parametrize("convention", ALL_CONVENTIONS, ids=str)
def test_no_boxes_convert_to_an_empty_n_by_4_array(convention: BoxConvention) -> None:
    size = ImageSize(width=10, height=10)
    empties: list[ArrayLike] = [[], np.zeros((0, 4))]
    for empty in empties:
        result = convert_boxes(empty, CANONICAL, convention, size)
        assert result.shape == (0, 4)
        assert result.dtype == np.float64


@pytest.mark.parametrize("bad", [[[1, 2, 3]], [1, 2, 3, 4], [[1, 2], [3, 4, 5, 6]], [["a", "b", "c", "d"]]])
def test_boxes_that_are_not_n_by_4_numbers_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        to_canonical(bad, CANONICAL, ImageSize(width=10, height=10))  # type: ignore[arg-type]


def test_there_are_36_distinct_conventions_with_canonical_first() -> None:
    assert len(ALL_CONVENTIONS) == 36
    assert len(set(ALL_CONVENTIONS)) == 36
    assert ALL_CONVENTIONS[0] == CANONICAL


def test_a_conventions_name_is_compact_and_reads_back() -> None:
    assert str(CANONICAL) == "xyxy/pixel/xy/top_left"
    for convention in ALL_CONVENTIONS:
        assert BoxConvention.from_name(str(convention)) == convention
    assert BoxConvention.from_name("cxcywh/normalized") == BoxConvention(
        format=BoxFormat.CXCYWH, units=BoxUnits.NORMALIZED
    )


@pytest.mark.parametrize(("name", "named"), [("xyxy/pixels", "'pixels'"), ("xyxy", "'xyxy'"), ("ltrb/pixel", "'ltrb'")])
def test_an_unknown_convention_name_is_reported_with_the_bad_value(name: str, named: str) -> None:
    with pytest.raises(UnsupportedEncodingError) as raised:
        BoxConvention.from_name(name)
    message = str(raised.value)
    assert named in message
    assert "\n" not in message


def test_box_convention_is_frozen_and_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        BoxConvention(format=BoxFormat.XYXY, units=BoxUnits.PIXEL, flipped=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        CANONICAL.units = BoxUnits.NORMALIZED
    assert BoxConvention.model_validate_json(CANONICAL.model_dump_json()) == CANONICAL


def test_every_convention_field_carries_its_docstring_as_description() -> None:
    for name, field in BoxConvention.model_fields.items():
        assert field.description, name


def test_image_size_reports_and_parses_in_either_shape_order() -> None:
    size = ImageSize(width=640, height=480)
    assert report_shape(size, ShapeOrder.WH) == (640, 480)
    assert report_shape(size, ShapeOrder.HW) == (480, 640)
    for order in ShapeOrder:
        assert parse_shape(report_shape(size, order), order) == size
    assert parse_shape([480, 640], ShapeOrder.HW) == size
    assert parse_shape((np.int64(640), np.int64(480)), ShapeOrder.WH) == size


@pytest.mark.parametrize("pair", [(640,), (640, 480, 3), (640.0, 480), (0, 480), (-1, 480), (True, 480), "ab"])
def test_a_malformed_image_shape_is_rejected(pair: object) -> None:
    with pytest.raises(ValueError, match="pair of positive integers"):
        parse_shape(pair, ShapeOrder.WH)  # type: ignore[arg-type]


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, -1), (True, 10)])
def test_image_size_must_be_positive_integers(width: object, height: object) -> None:
    with pytest.raises(ValidationError):
        ImageSize(width=width, height=height)  # type: ignore[arg-type]


def test_box_iou_matches_hand_computation() -> None:
    a = [[0, 0, 2, 2], [0, 0, 4, 4]]
    b = [[1, 1, 3, 3], [10, 10, 12, 12], [0, 0, 4, 4], [5, 5, 5, 9]]
    expected = [[1 / 7, 0, 4 / 16, 0], [4 / 16, 0, 1, 0]]
    np.testing.assert_allclose(box_iou(a, b), expected)


def test_box_iou_of_empty_sets_has_the_right_shape() -> None:
    assert box_iou([], [[0, 0, 1, 1]]).shape == (0, 1)
    assert box_iou([[0, 0, 1, 1]], np.zeros((0, 4))).shape == (1, 0)


@settings(max_examples=100, deadline=None)
@given(case=boxes_on_an_image())
def test_box_iou_is_symmetric_bounded_and_one_on_the_diagonal(case: tuple[np.ndarray, ImageSize]) -> None:
    boxes, _ = case
    iou = box_iou(boxes, boxes)
    np.testing.assert_allclose(iou, iou.T)
    assert ((iou >= 0) & (iou <= 1 + 1e-12)).all()
    np.testing.assert_allclose(np.diag(iou), np.ones(len(boxes)))
