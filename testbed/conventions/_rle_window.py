"""Pixel counts of ``coco_rle`` masks read from their run lengths, without decoding a pixel grid.

A validator that only counts a mask's pixels (all of them, and those inside a window) needs no ``H x W``
array: the counts follow from the column-major run lengths :func:`decode_masks` would expand, in exact
integer arithmetic, so they equal ``np.count_nonzero`` of the decoded mask and of its window.
"""

from __future__ import annotations

from testbed.conventions._box import ImageSize
from testbed.conventions._mask import _runs_if_fit

__all__ = ["coco_rle_runs", "on_pixels", "on_pixels_within"]


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
