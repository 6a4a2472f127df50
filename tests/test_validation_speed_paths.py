"""Validation's fast paths agree exactly with the slow code they stand in for (RLE bounds, compiled schemas)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as coco_mask

from testbed.conventions import ImageSize, MaskPayloadError, decode_masks
from testbed.conventions._mask import _check_runs, _compressed_runs, _runs_if_fit
from testbed.validators._fastschema import compile_check

RLE_CHARACTERS = st.characters(min_codepoint=40, max_codepoint=120)
"""COCO RLE characters (codes 48..111) and a few on either side of them, which are malformed."""


def _compressed_runs_fit(counts: str, pixels: int) -> bool:
    """The fast path's verdict; where it accepts, its runs must be the loop's."""
    runs = _runs_if_fit(counts, pixels)
    if runs is not None:
        assert runs == _compressed_runs(counts, what="test")
    return runs is not None


def _per_run_loop_accepts(counts: str, pixels: int) -> bool:
    """The reference: decode every run length one by one, then bounds-check them."""
    try:
        _check_runs(_compressed_runs(counts, what="test"), pixels, what="test")
    except MaskPayloadError:
        return False
    return True


def _coco_counts(mask: np.ndarray) -> str:
    encoded = coco_mask.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))
    counts: bytes = encoded[0]["counts"]
    return counts.decode("ascii")


@settings(max_examples=400, deadline=None)
@given(counts=st.text(alphabet=RLE_CHARACTERS, max_size=40), pixels=st.integers(min_value=0, max_value=5000))
def test_vectorised_check_matches_the_per_run_loop_on_arbitrary_strings(counts: str, pixels: int) -> None:
    assert _compressed_runs_fit(counts, pixels) == _per_run_loop_accepts(counts, pixels)


@settings(max_examples=200, deadline=None)
@given(counts=st.text(alphabet=RLE_CHARACTERS, max_size=40))
def test_vectorised_check_matches_the_per_run_loop_at_the_string_s_own_total(counts: str) -> None:
    try:
        runs = _compressed_runs(counts, what="test")
    except MaskPayloadError:
        return
    pixels = sum(runs)
    for candidate in (pixels - 1, pixels, pixels + 1):
        assert _compressed_runs_fit(counts, candidate) == _per_run_loop_accepts(counts, candidate)


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(min_value=1, max_value=60),
    width=st.integers(min_value=1, max_value=60),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    cut=st.integers(min_value=0, max_value=1000),
)
def test_real_encodings_are_accepted_and_truncations_judged_like_the_loop(
    height: int, width: int, seed: int, cut: int
) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((height, width)) < rng.random()
    counts = _coco_counts(mask)
    assert _compressed_runs_fit(counts, height * width)
    assert not _compressed_runs_fit(counts, height * width + 1)
    truncated = counts[: cut % (len(counts) + 1)]
    for pixels in (height * width, sum(_runs_or_empty(truncated))):
        assert _compressed_runs_fit(truncated, pixels) == _per_run_loop_accepts(truncated, pixels)


def _runs_or_empty(counts: str) -> list[int]:
    try:
        return _compressed_runs(counts, what="test")
    except MaskPayloadError:
        return []


def test_huge_run_lengths_are_summed_exactly() -> None:
    # A 13-character run length is 65 bits: the fast check must neither overflow nor round it.
    counts = "o" * 12 + "?" + "1"
    runs = _compressed_runs(counts, what="test")
    assert runs[0] >= 2**63
    assert _compressed_runs_fit(counts, sum(runs))
    assert not _compressed_runs_fit(counts, sum(runs) - 1)
    assert _per_run_loop_accepts(counts, sum(runs))


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ("1`", "ends in the middle of a run length"),
        ("1 1", "not a COCO RLE character"),
        ("1é", "not a COCO RLE character"),
        ("1@", "negative run length"),
        ("11", "run lengths cover 2 pixels"),
    ],
)
def test_malformed_counts_still_get_the_exact_error(counts: str, message: str) -> None:
    payload = [{"size": [2, 2], "counts": counts}]
    with pytest.raises(MaskPayloadError, match=message):
        decode_masks(payload, "coco_rle", ImageSize(width=2, height=2))


def test_a_mask_through_the_fast_path_decodes_as_before() -> None:
    mask = np.random.default_rng(7).random((9, 13)) < 0.4
    payload = [{"size": [9, 13], "counts": _coco_counts(mask)}]
    decoded = decode_masks(payload, "coco_rle", ImageSize(width=13, height=9))
    assert decoded.dtype == np.bool_
    assert np.array_equal(decoded[0], mask)


def test_a_long_all_of_is_checked_in_order_without_deep_recursion() -> None:
    check = compile_check({"allOf": [{"type": "number"}] * 2000 + [{"minimum": 5}]})
    assert check is not None
    assert check(7) is True
    assert check(3) is False
    assert check("seven") is False


@pytest.mark.parametrize(
    ("value", "is_number"),
    [(1, True), (1.5, True), (Fraction(1, 2), True), (Decimal("2.5"), True), (True, False), ("1", False)],
)
def test_numbers_of_any_numeric_type_but_bool_pass_the_number_check(value: object, is_number: bool) -> None:
    chained = compile_check({"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1})
    assert chained is not None
    assert chained([value]) is is_number


@settings(max_examples=150, deadline=None)
@given(
    height=st.integers(min_value=1, max_value=50),
    width=st.integers(min_value=1, max_value=50),
    count=st.integers(min_value=0, max_value=3),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_coco_rle_decodes_exactly_as_pycocotools_does(height: int, width: int, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = rng.random((count, height, width)) < rng.random()
    counts = [_coco_counts(mask) for mask in masks]
    payload = [{"size": [height, width], "counts": each} for each in counts]
    decoded = decode_masks(payload, "coco_rle", ImageSize(width=width, height=height))
    for index, each in enumerate(counts):
        reference = coco_mask.decode({"size": [height, width], "counts": each.encode("ascii")})
        assert np.array_equal(decoded[index], reference.astype(np.bool_))
    assert decoded.dtype == np.bool_
    assert decoded.flags.c_contiguous
