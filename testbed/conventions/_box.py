"""Box conventions as data, with exact converters through one canonical convention.

The canonical convention (:data:`CANONICAL`) is ``xyxy/pixel/xy/top_left``:
``(x_min, y_min, x_max, y_max)`` in pixel-edge coordinates, so pixel column
``i`` spans ``[i, i + 1)``; the origin is the image's top-left corner and y
grows downwards. Every other convention is a linear, invertible map of it, so
conversions are exact up to floating-point rounding and never clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from itertools import product
from numbers import Integral
from typing import Any, Self, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

from testbed._arrays import BoxArray
from testbed._errors import UnsupportedEncodingError

__all__ = [
    "CANONICAL",
    "AxisOrder",
    "BoxConvention",
    "BoxFormat",
    "BoxUnits",
    "ImageSize",
    "Origin",
    "ShapeOrder",
    "all_box_conventions",
    "box_iou",
    "box_iou_many",
    "convert_boxes",
    "from_canonical",
    "parse_shape",
    "report_shape",
    "to_canonical",
    "to_canonical_many",
]


class BoxFormat(StrEnum):
    """Which four numbers describe a box (named here in x-first order; see :class:`AxisOrder`)."""

    XYXY = "xyxy"
    """``(x_min, y_min, x_max, y_max)``: the corners with minimal and maximal coordinates."""
    XYWH = "xywh"
    """``(x, y, w, h)``: the anchor corner with minimal coordinates in the declared frame, then the size."""
    CXCYWH = "cxcywh"
    """``(cx, cy, w, h)``: the centre, then the size."""


class BoxUnits(StrEnum):
    """How coordinates are scaled: x and sizes along x by the image width, y and heights by its height."""

    PIXEL = "pixel"
    """Pixel-edge coordinates: ``0`` is the image's first edge, ``W`` (or ``H``) its last."""
    NORMALIZED = "normalized"
    """Fractions of the image: ``x / W`` and ``y / H``, so the image spans ``[0, 1]`` on both axes."""
    PER_MILLE = "per_mille"
    """Thousandths of the image: ``x * 1000 / W`` and ``y * 1000 / H`` (Gemini-style ``0-1000``)."""


class AxisOrder(StrEnum):
    """The order of the two numbers in every coordinate pair of a box."""

    XY = "xy"
    """x first: ``xyxy`` is ``[x1, y1, x2, y2]``."""
    YX = "yx"
    """y first in every pair: ``[y1, x1, y2, x2]``, ``[y, x, h, w]`` or ``[cy, cx, h, w]``."""


class Origin(StrEnum):
    """Where y is measured from (x is always measured rightwards from the left edge)."""

    TOP_LEFT = "top_left"
    """y grows downwards from the top edge (image convention)."""
    BOTTOM_LEFT = "bottom_left"
    """y grows upwards from the bottom edge (plot convention): ``y_bottom_left = H - y_top_left``."""


class ShapeOrder(StrEnum):
    """How a server reports an image's size as a pair of numbers."""

    WH = "wh"
    """``(width, height)``, as PIL's ``Image.size``."""
    HW = "hw"
    """``(height, width)``, as numpy's ``array.shape[:2]``."""


_FIELD_SEPARATOR = "/"

_FloatArray = NDArray[np.float64]


class BoxConvention(BaseModel):
    """How a server writes boxes: format, units, axis order and origin.

    Writing a canonical box takes four steps, each undone exactly on reading:

    1. Origin: a ``bottom_left`` frame measures y upwards from the bottom edge,
       ``y_bottom_left = H - y_top_left``. In a ``bottom_left`` frame ``xyxy`` is
       ``(x_min, y_min, x_max, y_max)`` in that frame's coordinates, and the
       ``xywh`` anchor is the corner with minimal coordinates in that frame,
       i.e. the box's **bottom-left** corner: a canonical ``(x1, y1, x2, y2)``
       becomes ``xywh/pixel/xy/bottom_left == (x1, H - y2, x2 - x1, y2 - y1)``.
    2. Format: ``xyxy``, ``xywh`` (anchor, then size) or ``cxcywh`` (centre, then size).
    3. Units: x and widths are divided by ``W``, y and heights by ``H``
       (``normalized``), or those fractions times 1000 (``per_mille``).
    4. Axis order: ``yx`` writes every coordinate pair y-first, so ``xyxy`` is
       ``[y1, x1, y2, x2]``, ``xywh`` is ``[y, x, h, w]`` and ``cxcywh`` is
       ``[cy, cx, h, w]`` (Gemini's ``box_2d`` is ``xyxy/per_mille/yx/top_left``).

    ``str(convention)`` gives a compact name such as ``"xyxy/pixel/xy/top_left"``,
    which :meth:`from_name` reads back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    format: BoxFormat
    """Which four numbers describe a box: corners, anchor and size, or centre and size."""

    units: BoxUnits
    """Pixel-edge coordinates, fractions of the image size, or thousandths of it."""

    axis_order: AxisOrder = AxisOrder.XY
    """Whether every coordinate pair is written x-first or y-first."""

    origin: Origin = Origin.TOP_LEFT
    """Whether y is measured down from the top edge or up from the bottom edge."""

    def __str__(self) -> str:
        return _FIELD_SEPARATOR.join((self.format, self.units, self.axis_order, self.origin))

    @classmethod
    def from_name(cls, name: str) -> Self:
        """Read a convention from its compact name, e.g. ``"cxcywh/normalized/xy/top_left"``.

        The axis order and origin may be left off (``"xyxy/pixel"``); they then take their defaults.

        Raises:
            UnsupportedEncodingError: the name has the wrong number of parts or a part is unknown.
        """
        parts = name.split(_FIELD_SEPARATOR)
        if not 2 <= len(parts) <= 4:
            raise UnsupportedEncodingError(
                f"box convention {name!r}: expected 'format/units[/axis_order[/origin]]', e.g. 'xyxy/pixel/xy/top_left'"
            )
        fields: tuple[tuple[str, type[StrEnum], str], ...] = (
            ("format", BoxFormat, "box format"),
            ("units", BoxUnits, "box units"),
            ("axis_order", AxisOrder, "axis order"),
            ("origin", Origin, "origin"),
        )
        values = {
            field: _parse_enum(kind, part, what=what) for (field, kind, what), part in zip(fields, parts, strict=False)
        }
        return cls.model_validate(values)


CANONICAL = BoxConvention(format=BoxFormat.XYXY, units=BoxUnits.PIXEL, axis_order=AxisOrder.XY, origin=Origin.TOP_LEFT)
"""The testbed's own convention: pixel-edge ``xyxy``, x first, top-left origin, y down."""


def all_box_conventions() -> tuple[BoxConvention, ...]:
    """Return every box convention (3 formats x 3 units x 2 axis orders x 2 origins = 36), canonical first."""
    return tuple(
        BoxConvention(format=fmt, units=units, axis_order=order, origin=origin)
        for fmt, units, order, origin in product(BoxFormat, BoxUnits, AxisOrder, Origin)
    )


_Enum = TypeVar("_Enum", bound=StrEnum)


def _parse_enum(kind: type[_Enum], value: object, *, what: str) -> _Enum:
    """Return ``kind(value)``, or raise an error naming ``value`` and the valid values."""
    valid = [member.value for member in kind]
    if isinstance(value, str) and value in valid:
        return kind(value)
    raise UnsupportedEncodingError(f"unknown {what} {value!r}; expected one of: {', '.join(valid)}")


class ImageSize(BaseModel):
    """An image's size in pixels. Constructed by keyword so width and height cannot be swapped silently."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    width: int = Field(gt=0)
    """Number of pixel columns."""

    height: int = Field(gt=0)
    """Number of pixel rows."""

    @field_validator("width", "height", mode="before")
    @classmethod
    def _reject_bool(cls, value: Any) -> Any:
        if isinstance(value, bool | np.bool_):
            raise ValueError("must be an integer, not a boolean")
        return value


def report_shape(size: ImageSize, order: ShapeOrder) -> tuple[int, int]:
    """Return the pair a server using ``order`` reports for an image of ``size``."""
    if order is ShapeOrder.WH:
        return (size.width, size.height)
    return (size.height, size.width)


def parse_shape(pair: Sequence[object], order: ShapeOrder) -> ImageSize:
    """Read an image size reported as a pair in ``order`` (the inverse of :func:`report_shape`).

    Raises:
        ValueError: ``pair`` is not two positive integers.
    """
    problem = f"image shape must be a pair of positive integers, got {pair!r}"
    if isinstance(pair, str | bytes) or len(pair) != 2:
        raise ValueError(problem)
    values: list[int] = []
    for value in pair:
        if not isinstance(value, Integral) or isinstance(value, bool | np.bool_) or int(value) <= 0:
            raise ValueError(problem)
        values.append(int(value))
    first, second = values
    if order is ShapeOrder.WH:
        return ImageSize(width=first, height=second)
    return ImageSize(width=second, height=first)


# Swaps the two numbers of every coordinate pair; its own inverse.
_SWAP_PAIRS = [1, 0, 3, 2]


def _as_boxes(boxes: ArrayLike) -> BoxArray:
    """Return a new float64 ``(N, 4)`` array holding ``boxes``."""
    try:
        array = np.array(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("boxes must be an (N, 4) array of numbers") from None
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {array.shape}")
    return array


def _unit_scale(units: BoxUnits, size: ImageSize) -> BoxArray:
    """Per-column factors that take pixel values (in x-first order) to ``units``."""
    if units is BoxUnits.PIXEL:
        return np.ones(4)
    per_image = 1.0 if units is BoxUnits.NORMALIZED else 1000.0
    return np.array([per_image / size.width, per_image / size.height] * 2)


def _flip_y(xyxy: BoxArray, height: int) -> BoxArray:
    """Move ``xyxy`` boxes between a top-left and a bottom-left frame (its own inverse).

    ``y' = H - y`` reverses order along y, so the new ``y_min`` comes from the old ``y_max``.
    """
    return np.stack([xyxy[:, 0], height - xyxy[:, 3], xyxy[:, 2], height - xyxy[:, 1]], axis=1)


def to_canonical(boxes: ArrayLike, src: BoxConvention, image_size: ImageSize) -> BoxArray:
    """Convert boxes written in ``src`` to the canonical convention (:data:`CANONICAL`).

    Args:
        boxes: ``(N, 4)`` numbers (array or nested lists); ``N`` may be 0.
        src: the convention ``boxes`` are written in.
        image_size: the size of the image the boxes refer to (used by units and origin).

    Returns:
        A new float64 ``(N, 4)`` array of canonical ``xyxy`` pixel boxes; nothing is clipped.

    Raises:
        ValueError: ``boxes`` is not ``(N, 4)`` numbers.
    """
    array = _as_boxes(boxes)
    if src.axis_order is AxisOrder.YX:
        array = array[:, _SWAP_PAIRS]
    array = array / _unit_scale(src.units, image_size)
    first, second, third, fourth = array.T
    if src.format is BoxFormat.XYWH:
        array = np.stack([first, second, first + third, second + fourth], axis=1)
    elif src.format is BoxFormat.CXCYWH:
        half_w, half_h = third / 2, fourth / 2
        array = np.stack([first - half_w, second - half_h, first + half_w, second + half_h], axis=1)
    if src.origin is Origin.BOTTOM_LEFT:
        array = _flip_y(array, image_size.height)
    return array


def from_canonical(boxes: ArrayLike, dst: BoxConvention, image_size: ImageSize) -> BoxArray:
    """Convert canonical boxes (:data:`CANONICAL`) to ``dst``; the inverse of :func:`to_canonical`.

    Args:
        boxes: ``(N, 4)`` canonical ``xyxy`` pixel boxes; ``N`` may be 0.
        dst: the convention to write the boxes in.
        image_size: the size of the image the boxes refer to (used by units and origin).

    Returns:
        A new float64 ``(N, 4)`` array in ``dst``; nothing is clipped.

    Raises:
        ValueError: ``boxes`` is not ``(N, 4)`` numbers.
    """
    array = _as_boxes(boxes)
    if dst.origin is Origin.BOTTOM_LEFT:
        array = _flip_y(array, image_size.height)
    x1, y1, x2, y2 = array.T
    if dst.format is BoxFormat.XYWH:
        array = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
    elif dst.format is BoxFormat.CXCYWH:
        array = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
    array = array * _unit_scale(dst.units, image_size)
    if dst.axis_order is AxisOrder.YX:
        array = array[:, _SWAP_PAIRS]
    return array


def convert_boxes(boxes: ArrayLike, src: BoxConvention, dst: BoxConvention, image_size: ImageSize) -> BoxArray:
    """Convert boxes from ``src`` to ``dst`` through the canonical convention.

    Args:
        boxes: ``(N, 4)`` numbers (array or nested lists) in ``src``; ``N`` may be 0.
        src: the convention ``boxes`` are written in.
        dst: the convention to write them in.
        image_size: the size of the image the boxes refer to.

    Returns:
        A new float64 ``(N, 4)`` array in ``dst`` (a copy even when ``src == dst``); nothing is clipped.

    Raises:
        ValueError: ``boxes`` is not ``(N, 4)`` numbers.
    """
    if src == dst:
        return _as_boxes(boxes)
    return from_canonical(to_canonical(boxes, src, image_size), dst, image_size)


def box_iou(a: ArrayLike, b: ArrayLike) -> _FloatArray:
    """Pairwise intersection over union of canonical ``xyxy`` boxes.

    A box with ``x_max <= x_min`` or ``y_max <= y_min`` has zero area; a pair whose
    union is empty has IoU 0.

    Args:
        a: ``(N, 4)`` canonical boxes.
        b: ``(M, 4)`` canonical boxes.

    Returns:
        An ``(N, M)`` float64 array; entry ``[i, j]`` is the IoU of ``a[i]`` and ``b[j]``.

    Raises:
        ValueError: either input is not ``(N, 4)`` numbers.
    """
    first, second = _as_boxes(a), _as_boxes(b)
    area_first = _areas(first)
    area_second = _areas(second)
    left = np.maximum(first[:, None, 0], second[None, :, 0])
    top = np.maximum(first[:, None, 1], second[None, :, 1])
    right = np.minimum(first[:, None, 2], second[None, :, 2])
    bottom = np.minimum(first[:, None, 3], second[None, :, 3])
    intersection = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = area_first[:, None] + area_second[None, :] - intersection
    iou: _FloatArray = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    return iou


def _areas(boxes: BoxArray) -> _FloatArray:
    widths = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
    heights = np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    result: _FloatArray = widths * heights
    return result


# Array-at-once forms: the same floating-point operations as the one-convention, one-array-pair forms above,
# element by element, so every entry equals what those return bit for bit.

_FORMAT_CODES = {BoxFormat.XYXY: 0, BoxFormat.XYWH: 1, BoxFormat.CXCYWH: 2}


class _ConventionTable:
    """Per-convention columns of :func:`to_canonical`'s four steps, for a fixed sequence of conventions."""

    def __init__(self, conventions: tuple[BoxConvention, ...]) -> None:
        self.conventions = conventions
        self.swap = np.array([_SWAP_PAIRS if c.axis_order is AxisOrder.YX else [0, 1, 2, 3] for c in conventions])
        self.units = tuple(c.units for c in conventions)
        codes = np.array([_FORMAT_CODES[c.format] for c in conventions]).reshape(-1, 1)
        self.xywh = codes == 1
        self.cxcywh = codes == 2
        self.flip = np.array([c.origin is Origin.BOTTOM_LEFT for c in conventions]).reshape(-1, 1)
        self._scales: dict[tuple[int, int], BoxArray] = {}

    def scale(self, size: ImageSize) -> BoxArray:
        """``(K, 1, 4)``: each convention's :func:`_unit_scale` for an image of ``size``."""
        key = (size.width, size.height)
        found = self._scales.get(key)
        if found is None:
            if len(self._scales) >= 64:
                self._scales.clear()
            by_units = {units: _unit_scale(units, size) for units in set(self.units)}
            found = self._scales[key] = np.stack([by_units[units] for units in self.units])[:, None, :]
        return found


_TABLES: dict[tuple[BoxConvention, ...], _ConventionTable] = {}
_TABLES_BY_ID: dict[int, tuple[Sequence[BoxConvention], _ConventionTable]] = {}
"""The same tables by the identity of the sequence passed (hashing 36 conventions costs more than converting)."""


def _table(conventions: Sequence[BoxConvention]) -> _ConventionTable:
    known = _TABLES_BY_ID.get(id(conventions))
    if known is not None and known[0] is conventions:
        return known[1]
    key = tuple(conventions)
    found = _TABLES.get(key)
    if found is None:
        if len(_TABLES) >= 64:
            _TABLES.clear()
            _TABLES_BY_ID.clear()
        found = _TABLES[key] = _ConventionTable(key)
    if isinstance(conventions, tuple):  # immutable: safe to recognise by identity (the entry keeps it alive)
        if len(_TABLES_BY_ID) >= 64:
            _TABLES_BY_ID.clear()
        _TABLES_BY_ID[id(conventions)] = (conventions, found)
    return found


def to_canonical_many(boxes: ArrayLike, conventions: Sequence[BoxConvention], image_size: ImageSize) -> _FloatArray:
    """Read the same boxes in each of several conventions at once: ``to_canonical`` for every convention.

    Args:
        boxes: ``(N, 4)`` numbers (array or nested lists); ``N`` may be 0.
        conventions: the ``K`` conventions to read ``boxes`` in (e.g. :func:`all_box_conventions`).
        image_size: the size of the image the boxes refer to.

    Returns:
        A new float64 ``(K, N, 4)`` array whose ``[k]`` equals ``to_canonical(boxes, conventions[k], image_size)``
        exactly (the same floating-point operations, entry by entry).

    Raises:
        ValueError: ``boxes`` is not ``(N, 4)`` numbers.
    """
    array = _as_boxes(boxes)
    table = _table(conventions)
    if not table.conventions:
        return np.zeros((0, len(array), 4))
    result: _FloatArray = np.stack(_canonical_columns(array, table, image_size), axis=-1)
    return result


def canonical_columns(
    boxes: ArrayLike, conventions: Sequence[BoxConvention], image_size: ImageSize
) -> list[_FloatArray]:
    """:func:`to_canonical_many` as its four ``(K, N)`` coordinates (``x1, y1, x2, y2``), each contiguous.

    Raises:
        ValueError: ``boxes`` is not ``(N, 4)`` numbers.
    """
    array = _as_boxes(boxes)
    table = _table(conventions)
    if not table.conventions:
        return [np.zeros((0, len(array))) for _ in range(4)]
    return _canonical_columns(array, table, image_size)


def _canonical_columns(array: BoxArray, table: _ConventionTable, image_size: ImageSize) -> list[_FloatArray]:
    columns = np.ascontiguousarray(array.T)  # (4, N)
    scale = table.scale(image_size)[:, 0, :]  # (K, 4)
    read = [columns[table.swap[:, i]] / scale[:, i : i + 1] for i in range(4)]  # axis order, then units
    first_x, first_y, third, fourth = read
    half_w, half_h = third / 2, fourth / 2
    xywh, cxcywh, flip = table.xywh, table.cxcywh, table.flip
    x1 = np.where(xywh, first_x, np.where(cxcywh, first_x - half_w, first_x))
    y1 = np.where(xywh, first_y, np.where(cxcywh, first_y - half_h, first_y))
    x2 = np.where(xywh, first_x + third, np.where(cxcywh, first_x + half_w, third))
    y2 = np.where(xywh, first_y + fourth, np.where(cxcywh, first_y + half_h, fourth))
    height = image_size.height
    return [x1, np.where(flip, height - y2, y1), x2, np.where(flip, height - y1, y2)]


def box_iou_many(a: ArrayLike, b: ArrayLike) -> _FloatArray:
    """Intersection over union of every box of ``a`` (any leading shape) with every box of ``b``.

    Args:
        a: ``(..., 4)`` canonical boxes, e.g. ``(K, N, 4)`` from :func:`to_canonical_many`.
        b: ``(M, 4)`` canonical boxes.

    Returns:
        A float64 ``(..., M)`` array; for two-dimensional ``a`` it equals :func:`box_iou` exactly.

    Raises:
        ValueError: ``a`` does not end in 4 numbers, or ``b`` is not ``(M, 4)`` numbers.
    """
    first = np.asarray(a, dtype=np.float64)
    if first.ndim == 0 or first.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4), got {first.shape}")
    second = _as_boxes(b)
    sides_first = np.clip(first[..., 2:] - first[..., :2], 0, None)
    area_first = sides_first[..., 0] * sides_first[..., 1]
    area_second = _areas(second)
    top_left = np.maximum(first[..., None, :2], second[:, :2])  # (..., M, 2)
    bottom_right = np.minimum(first[..., None, 2:], second[:, 2:])
    sides = np.clip(bottom_right - top_left, 0, None)
    intersection = sides[..., 0] * sides[..., 1]
    union = area_first[..., None] + area_second - intersection
    iou: _FloatArray = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    return iou
