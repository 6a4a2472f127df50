"""Pixel counts of ``coco_rle`` masks read from their run lengths, without decoding a pixel grid.

A validator that only counts a mask's pixels (all of them, and those inside a window) needs no ``H x W``
array: the counts follow from the column-major run lengths :func:`decode_masks` would expand, in exact
integer arithmetic, so they equal ``np.count_nonzero`` of the decoded mask and of its window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from testbed.conventions._box import ImageSize
from testbed.conventions._mask import _RUN_LENGTHS, _runs_if_fit

__all__ = [
    "RunLengthColumns",
    "coco_rle_runs",
    "decode_counts_many",
    "on_pixels",
    "on_pixels_within",
    "pixels_in_windows",
]


def coco_rle_runs(payload: object, image_size: ImageSize) -> list[list[int]] | None:
    """Each object's run lengths, where :func:`decode_masks` would read every object of a ``coco_rle`` payload
    on ``image_size`` from well-formed compressed counts; ``None`` where anything else holds (a malformed or
    uncompressed object: decode it to learn what it holds, or which error it raises)."""
    if not isinstance(payload, list):
        return None
    pixels = image_size.height * image_size.width
    size = [image_size.height, image_size.width]
    found: list[list[int]] = []
    for item in payload:
        if not isinstance(item, dict) or not isinstance(counts := item.get("counts"), str):
            return None
        written = item.get("size")
        if type(written) is not list or written != size or not all(type(value) is int for value in written):
            return None  # as _check_size_field accepts it at least (it also takes other integral types)
        runs = _runs_if_fit(counts, pixels)
        if runs is None:
            return None
        found.append(runs)
    return found


def on_pixels(runs: list[int]) -> int:
    """The pixels a mask holds: its odd runs (the runs alternate background, mask, starting with background)."""
    return sum(runs[1::2])


def on_pixels_within(runs: list[int], height: int, rows: tuple[int, int], columns: tuple[int, int]) -> int:
    """The mask's pixels in rows ``[rows[0], rows[1])`` of columns ``[columns[0], columns[1])``, both clipped to
    the grid as slicing clips them (``mask[r0:r1, c0:c1]`` with non-negative bounds); ``runs`` cover a grid
    ``height`` rows high, column by column."""
    width = sum(runs) // height if height else 0
    top, bottom = min(rows[0], height), min(max(rows), height)
    left, right = min(columns[0], width), min(max(columns), width)
    if bottom <= top or right <= left:
        return 0
    count = 0
    end = 0
    lengths = iter(runs)
    for background in lengths:  # runs alternate: background, then mask
        start = end + background
        end = start + next(lengths, 0)
        if end == start:
            continue
        first, last = start // height, (end - 1) // height
        if first == last:  # most mask runs lie within one column
            if left <= first < right:
                low, high = first * height + top, first * height + bottom
                low, high = start if start > low else low, end if end < high else high
                if high > low:
                    count += high - low
            continue
        for column in range(max(first, left), min(last, right - 1) + 1):
            base = column * height
            count += max(0, min(end, base + bottom) - max(start, base + top))
    return count


def _before(
    position: np.ndarray,
    height: int | np.ndarray,
    top: np.ndarray,
    bottom: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
) -> np.ndarray:
    """Window pixels before each linear position: whole window columns before its column, then rows above it."""
    column, row = np.divmod(position, height)
    whole = (np.minimum(np.maximum(column, left), right) - left) * (bottom - top)
    part = np.minimum(np.maximum(row, top), bottom) - top
    return whole + np.where((column >= left) & (column < right), part, 0)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RunLengthColumns:
    """Many ``coco_rle`` masks' run lengths decoded together: mask ``j``'s mask runs (every second run) are
    rows ``pair_start[j]:pair_start[j + 1]`` of ``starts`` and ``stops``, the linear (column-major) positions
    where each begins and ends, counted from the mask's first pixel."""

    starts: NDArray[np.int64]
    stops: NDArray[np.int64]
    pair_start: NDArray[np.intp]


def decode_counts_many(counts: Sequence[str], pixels: Sequence[int]) -> RunLengthColumns | None:
    """The run lengths :func:`coco_rle_runs` reads from each compressed ``counts[j]`` (a mask of ``pixels[j]``
    pixels), all in one numpy pass; ``None`` unless every string is well formed, with non-negative runs covering
    exactly its pixels, and small enough for exact 64-bit arithmetic (then read them one by one)."""
    if len(counts) != len(pixels) or not counts or min(len(text) for text in counts) == 0:
        return None
    if any(_RUN_LENGTHS.fullmatch(text) is None for text in counts):
        return None
    codes = np.frombuffer("".join(counts).encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    closes = (codes & 0x20) == 0  # a character without the continuation bit closes a run length
    token_end = np.flatnonzero(closes)
    token_start = np.concatenate([[0], token_end[:-1] + 1])
    length = token_end - token_start + 1
    if int(length.max()) > _MAX_TOKEN:
        return None
    shift = 5 * (np.arange(len(codes)) - np.repeat(token_start, length))
    values = np.add.reduceat((codes & 0x1F) << shift, token_start)
    values -= np.where(codes[token_end] & 0x10, np.left_shift(1, 5 * length), 0)  # the last character's sign bit
    per_mask = np.add.reduceat(closes.astype(np.intp), np.cumsum([0, *(len(text) for text in counts[:-1])]))
    mask_of = np.repeat(np.arange(len(counts)), per_mask)
    index = np.arange(len(values)) - np.repeat(np.cumsum(per_mask) - per_mask, per_mask)  # position in its mask
    runs = values.copy()
    # Each odd run from the second on, and each even run from the third on, is stored as the difference from
    # the one two before it: a running sum per mask and parity undoes it.
    for chosen in (np.flatnonzero(index % 2 == 1), np.flatnonzero((index % 2 == 0) & (index >= 2))):
        runs[chosen] = _running_sums(values[chosen], mask_of[chosen])
    pixels_of = np.array(pixels, dtype=np.int64)
    totals = np.add.reduceat(runs, np.cumsum(per_mask) - per_mask)
    if (runs < 0).any() or not np.array_equal(totals, pixels_of):
        return None
    positions = _running_sums(runs, mask_of)  # where each run ends
    odd = np.flatnonzero(index % 2 == 1)
    stops = positions[odd]
    return RunLengthColumns(stops - runs[odd], stops, np.concatenate([[0], np.cumsum(per_mask // 2)]))


_MAX_TOKEN = 8
"""Characters of the longest run length read in 64-bit arithmetic (40 bits: far beyond any image's pixels)."""


def _running_sums(values: NDArray[np.int64], owner: NDArray[np.int64]) -> NDArray[np.int64]:
    """The running sum of ``values`` within each run of equal ``owner`` (``owner`` sorted)."""
    summed = np.cumsum(values)
    opening = np.concatenate([[True], owner[1:] != owner[:-1]]) if len(owner) else np.zeros(0, dtype=bool)
    before = summed - values  # the sum of everything before each entry
    start = np.maximum.accumulate(np.where(opening, np.arange(len(values)), 0)) if len(values) else opening
    result: NDArray[np.int64] = summed - before[start]
    return result


def pixels_in_windows(
    columns: RunLengthColumns, heights: NDArray[np.int64], widths: NDArray[np.int64], windows: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per mask ``j`` of ``columns`` (``heights[j] x widths[j]``): its pixels, and :func:`on_pixels_within` of
    it in rows ``windows[j, 0]:windows[j, 1]`` and columns ``windows[j, 2]:windows[j, 3]`` (non-negative)."""
    top = np.minimum(windows[:, 0], heights)
    bottom = np.minimum(np.maximum(windows[:, 0], windows[:, 1]), heights)
    left = np.minimum(windows[:, 2], widths)
    right = np.minimum(np.maximum(windows[:, 2], windows[:, 3]), widths)
    empty = (bottom <= top) | (right <= left)
    top, bottom, left, right = (np.where(empty, 0, edge) for edge in (top, bottom, left, right))
    pairs = np.diff(columns.pair_start)
    window = tuple(np.repeat(edge, pairs) for edge in (heights, top, bottom, left, right))
    inside = _before(columns.stops, *window) - _before(columns.starts, *window)
    return _sums(columns.stops - columns.starts, columns.pair_start), _sums(inside, columns.pair_start)


def _sums(values: NDArray[np.int64], bounds: NDArray[np.intp]) -> NDArray[np.int64]:
    summed = np.concatenate([[0], np.cumsum(values)])
    result: NDArray[np.int64] = summed[bounds[1:]] - summed[bounds[:-1]]
    return result
