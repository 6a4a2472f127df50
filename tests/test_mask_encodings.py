"""Mask encodings: lossless round trips, the documented losses, resolution changes and payload errors."""

from __future__ import annotations

import base64
import json
from typing import cast

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from testbed._errors import TestbedError, UnsupportedEncodingError
from testbed.conventions import (
    ImageSize,
    MaskEncoding,
    MaskPayloadError,
    decode_masks,
    encode_masks,
    mask_iou,
    resize_masks,
)

random_masks = arrays(
    dtype=np.bool_,
    shape=st.tuples(st.integers(0, 3), st.integers(1, 16), st.integers(1, 16)),
)
"""Arbitrary small mask stacks, noise included."""

Polygons = list[list[list[float]]]
"""The ``polygon`` payload: per object, a list of flat coordinate lists."""


def size_of(masks: np.ndarray) -> ImageSize:
    return ImageSize(width=masks.shape[2], height=masks.shape[1])


def via_json(payload: object) -> object:
    """What a client receives: the payload after a JSON round trip."""
    return json.loads(json.dumps(payload))


def round_trip(masks: np.ndarray, encoding: MaskEncoding, *, normalized_polygons: bool = False) -> np.ndarray:
    payload = via_json(encode_masks(masks, encoding, normalized_polygons=normalized_polygons))
    return decode_masks(payload, encoding, size_of(masks), normalized_polygons=normalized_polygons)


@st.composite
def filled_shape(draw: st.DrawFn, height: int, width: int, *, min_extent: int, inside: bool) -> np.ndarray:
    """One hole-free convex shape (circle, rectangle, ellipse or triangle) drawn with OpenCV.

    Its bounding box is at least ``min_extent`` pixels on each side; with ``inside`` it lies wholly in
    the image, otherwise it may be cut by the image border (down to a single pixel).
    """
    box_w = draw(st.integers(min_extent, max(min_extent, width // 2)))
    box_h = draw(st.integers(min_extent, max(min_extent, height // 2)))
    if inside:
        left, top = draw(st.integers(0, width - box_w)), draw(st.integers(0, height - box_h))
    else:
        left, top = draw(st.integers(1 - box_w, width - 1)), draw(st.integers(1 - box_h, height - 1))
    right, bottom = left + box_w - 1, top + box_h - 1
    canvas = np.zeros((height, width), dtype=np.uint8)
    kind = draw(st.sampled_from(["circle", "rectangle", "ellipse", "triangle"]))
    if kind == "circle":
        diameter = min(box_w, box_h) // 2 * 2 + 1
        cv2.circle(canvas, (left + diameter // 2, top + diameter // 2), diameter // 2, 1, thickness=cv2.FILLED)
    elif kind == "rectangle":
        cv2.rectangle(canvas, (left, top), (right, bottom), 1, thickness=cv2.FILLED)
    elif kind == "ellipse":
        centre = ((left + right) // 2, (top + bottom) // 2)
        cv2.ellipse(canvas, centre, ((box_w - 1) // 2, (box_h - 1) // 2), 0, 0, 360, 1, thickness=cv2.FILLED)
    else:
        apex = draw(st.integers(left, right))
        corners = np.array([[apex, top], [right, bottom], [left, bottom]], dtype=np.int32)
        cv2.fillPoly(canvas, [corners], 1)
    return canvas.astype(np.bool_)


@st.composite
def shape_stacks(draw: st.DrawFn, *, min_extent: int = 8, inside: bool = False) -> np.ndarray:
    """One to three shapes on a 32..96 pixel image, one per layer (without ``inside``, one may miss the image)."""
    height, width = draw(st.integers(32, 96)), draw(st.integers(32, 96))
    count = draw(st.integers(1, 3))
    return np.stack([draw(filled_shape(height, width, min_extent=min_extent, inside=inside)) for _ in range(count)])


# --- lossless encodings ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(masks=random_masks)
def test_coco_rle_round_trip_is_exact(masks: np.ndarray) -> None:
    np.testing.assert_array_equal(round_trip(masks, MaskEncoding.COCO_RLE), masks)


@settings(max_examples=150, deadline=None)
@given(masks=random_masks)
def test_png_base64_round_trip_is_exact(masks: np.ndarray) -> None:
    np.testing.assert_array_equal(round_trip(masks, MaskEncoding.PNG_BASE64), masks)


@settings(max_examples=150, deadline=None)
@given(
    labels=arrays(dtype=np.int64, shape=st.tuples(st.integers(1, 16), st.integers(1, 16)), elements=st.integers(0, 4)),
    count=st.integers(0, 4),
)
def test_label_map_round_trip_is_exact_when_objects_do_not_overlap(labels: np.ndarray, count: int) -> None:
    masks = labels[None, :, :] == np.arange(1, count + 1)[:, None, None]  # disjoint by construction
    payload = via_json(encode_masks(masks, MaskEncoding.LABEL_MAP))
    decoded = decode_masks(payload, MaskEncoding.LABEL_MAP, size_of(masks), expected_count=count)
    np.testing.assert_array_equal(decoded, masks)


def test_coco_rle_payload_has_size_and_string_counts_per_object() -> None:
    masks = np.zeros((2, 3, 5), dtype=np.bool_)
    masks[0, 1, 2] = True
    payload = encode_masks(masks, MaskEncoding.COCO_RLE)
    assert isinstance(payload, list)
    assert len(payload) == 2
    for item in payload:
        assert isinstance(item, dict)
        assert item["size"] == [3, 5]
        assert isinstance(item["counts"], str)


def test_uncompressed_coco_rle_counts_are_accepted() -> None:
    # Column-major runs over [[0, 1, 1], [0, 1, 0]]: 0, 0 | 1, 1 | 1, 0 -> two zeros, three ones, one zero.
    payload = [{"size": [2, 3], "counts": [2, 3, 1]}]
    decoded = decode_masks(payload, MaskEncoding.COCO_RLE, ImageSize(width=3, height=2))
    np.testing.assert_array_equal(decoded[0], [[False, True, True], [False, True, False]])


def test_png_base64_payload_is_a_single_channel_0_255_png_per_object() -> None:
    masks = np.zeros((1, 4, 6), dtype=np.bool_)
    masks[0, 1:3, 2:5] = True
    (text,) = encode_masks(masks, MaskEncoding.PNG_BASE64)
    assert isinstance(text, str)
    image = cv2.imdecode(np.frombuffer(base64.b64decode(text), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    assert image.shape == (4, 6)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, masks[0].astype(np.uint8) * 255)


def test_png_base64_decoding_accepts_a_0_1_png_in_a_data_uri() -> None:
    mask = np.array([[0, 1, 1], [1, 0, 0]], dtype=np.uint8)
    ok, png = cv2.imencode(".png", mask)
    assert ok
    payload = ["data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")]
    decoded = decode_masks(payload, MaskEncoding.PNG_BASE64, ImageSize(width=3, height=2))
    np.testing.assert_array_equal(decoded[0], mask.astype(np.bool_))


@pytest.mark.parametrize("encoding", list(MaskEncoding))
def test_no_objects_round_trip_in_every_encoding(encoding: MaskEncoding) -> None:
    masks = np.zeros((0, 7, 5), dtype=np.bool_)
    decoded = round_trip(masks, encoding)
    assert decoded.shape == (0, 7, 5)
    assert decoded.dtype == np.bool_


# --- label_map: the documented loss on overlap ----------------------------------------------


def test_label_map_later_object_wins_where_objects_overlap() -> None:
    masks = np.zeros((2, 20, 20), dtype=np.bool_)
    masks[0, 0:10, 0:10] = True  # 100 pixels
    masks[1, 5:15, 5:15] = True  # covers 25 of them
    payload = via_json(encode_masks(masks, MaskEncoding.LABEL_MAP))
    assert isinstance(payload, dict)
    assert payload["size"] == [20, 20]
    decoded = decode_masks(payload, MaskEncoding.LABEL_MAP, size_of(masks))
    np.testing.assert_array_equal(decoded[1], masks[1])
    np.testing.assert_array_equal(decoded[0], masks[0] & ~masks[1])
    assert mask_iou(decoded[0], masks[0]) == pytest.approx(75 / 100)


def test_label_map_payload_is_a_16_bit_png_with_object_k_as_k_plus_1() -> None:
    masks = np.zeros((3, 4, 4), dtype=np.bool_)
    masks[0, 0, 0] = masks[2, 3, 3] = True
    payload = encode_masks(masks, MaskEncoding.LABEL_MAP)
    assert isinstance(payload, dict)
    labels = cv2.imdecode(np.frombuffer(base64.b64decode(payload["png"]), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert labels is not None
    assert labels.dtype == np.uint16
    assert (labels[0, 0], labels[3, 3], int(labels.sum())) == (1, 3, 4)


def test_label_map_decodes_trailing_empty_objects_only_when_their_count_is_given() -> None:
    masks = np.zeros((3, 4, 4), dtype=np.bool_)
    masks[0, 1, 1] = True
    payload = via_json(encode_masks(masks, MaskEncoding.LABEL_MAP))
    assert decode_masks(payload, MaskEncoding.LABEL_MAP, size_of(masks)).shape == (1, 4, 4)
    decoded = decode_masks(payload, MaskEncoding.LABEL_MAP, size_of(masks), expected_count=3)
    np.testing.assert_array_equal(decoded, masks)


# --- polygon: lossy, holes filled -----------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(masks=shape_stacks(), normalized=st.booleans())
def test_polygon_round_trip_of_filled_shapes_has_iou_of_at_least_0_9(masks: np.ndarray, normalized: bool) -> None:
    decoded = round_trip(masks, MaskEncoding.POLYGON, normalized_polygons=normalized)
    for original, restored in zip(masks, decoded, strict=True):
        assert mask_iou(original, restored) >= 0.9


@settings(max_examples=100, deadline=None)
@given(masks=shape_stacks(), normalized=st.booleans())
def test_polygon_round_trip_of_convex_shapes_is_exact(masks: np.ndarray, normalized: bool) -> None:
    np.testing.assert_array_equal(round_trip(masks, MaskEncoding.POLYGON, normalized_polygons=normalized), masks)


@settings(max_examples=150, deadline=None)
@given(masks=random_masks, normalized=st.booleans())
def test_polygon_round_trip_never_loses_a_pixel_even_of_noise(masks: np.ndarray, normalized: bool) -> None:
    decoded = round_trip(masks, MaskEncoding.POLYGON, normalized_polygons=normalized)
    assert not (masks & ~decoded).any()


def test_polygon_round_trip_fills_holes() -> None:
    ring = np.zeros((1, 40, 40), dtype=np.uint8)
    cv2.circle(ring[0], (20, 20), 15, 1, thickness=cv2.FILLED)
    disc = ring.astype(np.bool_)
    cv2.circle(ring[0], (20, 20), 6, 0, thickness=cv2.FILLED)
    np.testing.assert_array_equal(round_trip(ring.astype(np.bool_), MaskEncoding.POLYGON), disc)


def test_thin_shapes_survive_the_polygon_round_trip() -> None:
    masks = np.zeros((3, 12, 12), dtype=np.bool_)
    masks[0, 4, 7] = True  # one pixel
    masks[1, 2, 1:10] = True  # a one-pixel-wide line
    masks[2, np.arange(8), np.arange(8)] = True  # a diagonal line
    np.testing.assert_array_equal(round_trip(masks, MaskEncoding.POLYGON), masks)


def test_polygon_vertices_are_pixel_edge_coordinates_through_boundary_pixel_centres() -> None:
    masks = np.zeros((1, 40, 20), dtype=np.bool_)
    masks[0, 10:20, 5:15] = True  # rows 10..19, columns 5..14
    ((polygon,),) = cast(Polygons, encode_masks(masks, MaskEncoding.POLYGON))
    corners = {(polygon[i], polygon[i + 1]) for i in range(0, len(polygon), 2)}
    assert corners == {(5.5, 10.5), (14.5, 10.5), (14.5, 19.5), (5.5, 19.5)}
    ((normalized,),) = cast(Polygons, encode_masks(masks, MaskEncoding.POLYGON, normalized_polygons=True))
    assert normalized == pytest.approx([value / (20, 40)[i % 2] for i, value in enumerate(polygon)])


def test_a_polygon_tracing_pixel_edges_covers_exactly_the_pixels_inside_it() -> None:
    # COCO-style: the square from (2, 3) to (5, 7) in pixel-edge coordinates holds columns 2..4 and rows 3..6.
    payload = [[[2, 3, 5, 3, 5, 7, 2, 7]]]
    decoded = decode_masks(payload, MaskEncoding.POLYGON, ImageSize(width=10, height=10))
    expected = np.zeros((10, 10), dtype=np.bool_)
    expected[3:7, 2:5] = True
    np.testing.assert_array_equal(decoded[0], expected)


def test_a_polygon_reaching_outside_the_image_is_clipped_to_it() -> None:
    size = ImageSize(width=4, height=3)
    pixel = decode_masks([[[-5, -5, 9, -5, 9, 2, -5, 2]]], MaskEncoding.POLYGON, size)
    normalized = decode_masks(
        [[[-1, -1, 2, -1, 2, 0.5, -1, 0.5]]], MaskEncoding.POLYGON, size, normalized_polygons=True
    )
    expected = np.zeros((1, 3, 4), dtype=np.bool_)
    expected[0, 0:2, :] = True  # normalized y = 0.5 is 1.5 px: row 1's centres lie on the edge, which counts as inside
    np.testing.assert_array_equal(pixel, expected)
    np.testing.assert_array_equal(normalized, expected)


# --- resolution -----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    masks=shape_stacks(min_extent=32, inside=True), model_height=st.integers(64, 128), model_width=st.integers(64, 128)
)
def test_image_to_model_to_image_resolution_round_trip_keeps_iou_of_at_least_0_85(
    masks: np.ndarray, model_height: int, model_width: int
) -> None:
    # Objects at least 32 px across, model grid at least 2/3 of the image: the regime the 0.85 bound is
    # meant for. Smaller objects or coarser grids lose more (a 20 px triangle at 89 -> 64 px keeps ~0.79).
    model = resize_masks(masks, ImageSize(width=model_width, height=model_height))
    assert model.shape == (len(masks), model_height, model_width)
    restored = resize_masks(model, size_of(masks))
    for original, back in zip(masks, restored, strict=True):
        assert mask_iou(original, back) >= 0.85


@settings(max_examples=100, deadline=None)
@given(masks=random_masks, factor_y=st.integers(1, 4), factor_x=st.integers(1, 4))
def test_integer_upscale_then_matching_downscale_is_exact(masks: np.ndarray, factor_y: int, factor_x: int) -> None:
    size = size_of(masks)
    up = resize_masks(masks, ImageSize(width=size.width * factor_x, height=size.height * factor_y))
    np.testing.assert_array_equal(up, masks.repeat(factor_y, axis=1).repeat(factor_x, axis=2))
    np.testing.assert_array_equal(resize_masks(up, size), masks)


def test_resize_masks_samples_the_nearest_pixel_centre() -> None:
    masks = np.array([[[True, False, False]]])  # 1 x 3 -> 1 x 2: output centres 0.75 and 2.25 fall in pixels 0 and 2
    np.testing.assert_array_equal(resize_masks(masks, ImageSize(width=2, height=1)), [[[True, False]]])


# --- mask_iou -------------------------------------------------------------------------------


def test_mask_iou_matches_hand_computation() -> None:
    a = np.zeros((4, 4), dtype=np.bool_)
    b = np.zeros((4, 4), dtype=np.bool_)
    a[0:2, 0:2] = True
    b[1:3, 1:3] = True
    assert mask_iou(a, b) == pytest.approx(1 / 7)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, ~a) == 0.0


def test_mask_iou_of_two_empty_masks_is_one() -> None:
    empty = np.zeros((3, 3), dtype=np.bool_)
    assert mask_iou(empty, empty) == 1.0


def test_mask_iou_rejects_masks_of_different_shape_or_non_boolean_type() -> None:
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(np.zeros((2, 2), dtype=np.bool_), np.zeros((2, 3), dtype=np.bool_))
    with pytest.raises(ValueError, match="boolean"):
        mask_iou(np.zeros((2, 2)), np.zeros((2, 2)))  # type: ignore[arg-type]


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["rle", "PNG", "", "coco-rle"])
def test_an_unknown_encoding_is_reported_with_the_bad_value_and_the_valid_ones(bad: str) -> None:
    masks = np.zeros((1, 2, 2), dtype=np.bool_)
    for call in (
        lambda: encode_masks(masks, bad),
        lambda: decode_masks([], bad, ImageSize(width=2, height=2)),
    ):
        with pytest.raises(UnsupportedEncodingError) as raised:
            call()
        message = str(raised.value)
        assert repr(bad) in message
        assert all(encoding.value in message for encoding in MaskEncoding)
        assert "\n" not in message


def _png_text(image: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(png.tobytes()).decode("ascii")


SIZE = ImageSize(width=3, height=2)

MALFORMED = [
    pytest.param(MaskEncoding.COCO_RLE, {"size": [2, 3], "counts": "06"}, "one entry per object", id="rle-not-list"),
    pytest.param(MaskEncoding.COCO_RLE, ["06"], "expected a dict", id="rle-item-not-dict"),
    pytest.param(MaskEncoding.COCO_RLE, [{"size": [3, 2], "counts": "06"}], "'size'", id="rle-size-swapped"),
    pytest.param(MaskEncoding.COCO_RLE, [{"size": [2, 3]}], "'counts'", id="rle-no-counts"),
    pytest.param(MaskEncoding.COCO_RLE, [{"size": [2, 3], "counts": "05"}], "cover 5 pixels", id="rle-short"),
    pytest.param(MaskEncoding.COCO_RLE, [{"size": [2, 3], "counts": "0 "}], "not a COCO RLE", id="rle-bad-char"),
    pytest.param(MaskEncoding.COCO_RLE, [{"size": [2, 3], "counts": "0P"}], "ends in the middle", id="rle-truncated"),
    pytest.param(MaskEncoding.COCO_RLE, [{"size": [2, 3], "counts": [7, -1]}], "negative", id="rle-negative"),
    pytest.param(MaskEncoding.POLYGON, [[0, 0, 1, 1, 2, 0]], "list of numbers", id="polygon-not-nested"),
    pytest.param(MaskEncoding.POLYGON, [[[0, 0, 1, 1, 2]]], "even", id="polygon-odd-count"),
    pytest.param(MaskEncoding.POLYGON, [[[0, 0, "1", 1, 2, 0]]], "list of numbers", id="polygon-string"),
    pytest.param(MaskEncoding.POLYGON, [[[0, 0, float("nan"), 1, 2, 0]]], "finite", id="polygon-nan"),
    pytest.param(MaskEncoding.POLYGON, [[[0, 0, 1e300, 1, 2, 0]]], "finite", id="polygon-huge"),
    pytest.param(MaskEncoding.POLYGON, {"polygons": []}, "one entry per object", id="polygon-dict"),
    pytest.param(MaskEncoding.PNG_BASE64, ["not base64!"], "invalid base64", id="png-bad-base64"),
    pytest.param(MaskEncoding.PNG_BASE64, [base64.b64encode(b"GIF89a" * 5).decode()], "not a PNG", id="png-not-png"),
    pytest.param(MaskEncoding.PNG_BASE64, [_png_text(np.zeros((3, 2), np.uint8))], "PNG is 2x3", id="png-wrong-size"),
    pytest.param(MaskEncoding.PNG_BASE64, [_png_text(np.zeros((2, 3, 3), np.uint8))], "single-channel", id="png-rgb"),
    pytest.param(MaskEncoding.PNG_BASE64, [7], "base64 PNG string", id="png-not-string"),
    pytest.param(MaskEncoding.LABEL_MAP, [], "expected a dict", id="label-map-list"),
    pytest.param(
        MaskEncoding.LABEL_MAP,
        {"size": [2, 3], "png": _png_text(np.zeros((2, 4), np.uint16))},
        "PNG is 4x2",
        id="label-map-wrong-png-size",
    ),
    pytest.param(
        MaskEncoding.LABEL_MAP,
        {"size": [2, 2], "png": _png_text(np.zeros((2, 3), np.uint16))},
        "'size'",
        id="label-map-wrong-size",
    ),
]


@pytest.mark.parametrize(("encoding", "payload", "complaint"), MALFORMED)
def test_a_malformed_payload_is_reported_in_one_line_naming_what_is_wrong(
    encoding: MaskEncoding, payload: object, complaint: str
) -> None:
    with pytest.raises(MaskPayloadError) as raised:
        decode_masks(payload, encoding, SIZE)
    message = str(raised.value)
    assert complaint in message
    assert encoding.value in message
    assert "\n" not in message
    assert isinstance(raised.value, TestbedError)
    assert isinstance(raised.value, ValueError)


def test_a_label_above_the_expected_count_is_reported() -> None:
    payload = {"size": [2, 3], "png": _png_text(np.full((2, 3), 3, np.uint16))}
    with pytest.raises(MaskPayloadError, match="holds label 3, but only 2 objects are expected"):
        decode_masks(payload, MaskEncoding.LABEL_MAP, SIZE, expected_count=2)


@pytest.mark.parametrize("encoding", [MaskEncoding.COCO_RLE, MaskEncoding.POLYGON, MaskEncoding.PNG_BASE64])
def test_a_payload_with_a_different_object_count_than_expected_is_reported(encoding: MaskEncoding) -> None:
    payload = via_json(encode_masks(np.zeros((2, 2, 3), dtype=np.bool_), encoding))
    with pytest.raises(MaskPayloadError, match="expected 3 objects, got 2"):
        decode_masks(payload, encoding, SIZE, expected_count=3)


@pytest.mark.parametrize(
    ("masks", "complaint"),
    [
        (np.zeros((1, 2, 2), dtype=np.uint8), "boolean"),
        (np.zeros((2, 2), dtype=np.bool_), r"\(N, H, W\)"),
        (np.zeros((1, 0, 2), dtype=np.bool_), r"\(N, H, W\)"),
    ],
)
def test_encoding_rejects_masks_that_are_not_a_boolean_n_h_w_stack(masks: np.ndarray, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        encode_masks(masks, MaskEncoding.COCO_RLE)
