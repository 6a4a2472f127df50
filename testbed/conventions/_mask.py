"""Mask encodings as data: encoders, decoders, resolution changes and IoU.

Masks travel inside the testbed as an ``(N, H, W)`` boolean stack, one layer
per object. A server puts them on the wire in one of the :class:`MaskEncoding`
payloads below, at image or at model resolution (:class:`MaskResolution`).
All payloads are plain JSON values (lists, dicts, strings and numbers).

Payload formats (``N`` objects on an ``H x W`` grid):

``coco_rle``
    ``[{"size": [H, W], "counts": str}, ...]``, one dict per object: COCO's
    compressed run-length encoding of the column-major mask, made by
    pycocotools, with ``counts`` as an ASCII string. Lossless. The decoder
    also accepts COCO's uncompressed form, ``"counts": [int, ...]``.
``polygon``
    ``[[[x1, y1, x2, y2, ...], ...], ...]``: per object a list of polygons,
    each a flat list of vertex coordinates. The encoder writes the outer
    contours of ``cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)``,
    which pass through the centres of the boundary pixels, as pixel-edge
    coordinates (contour point ``+ 0.5``), or divided by ``W`` and ``H`` when
    ``normalized_polygons`` is set. The decoder keeps a pixel when its centre
    lies inside or on the boundary of any of the object's polygons (even-odd
    rule within a polygon). Lossy: holes are filled. A hole-free mask comes
    back exactly, and so do COCO-style polygons that trace pixel edges.
``png_base64``
    ``[str, ...]``: per object a base64 PNG of a single-channel ``H x W``
    image, 255 inside and 0 outside (the decoder treats any non-zero value as
    inside and accepts a ``data:`` URI prefix). Lossless.
``label_map``
    ``{"size": [H, W], "png": str}``: one base64 16-bit single-channel PNG in
    which value ``k + 1`` marks object ``k`` and 0 is background. Lossy where
    objects overlap: the later object wins the shared pixels. The decoder
    returns ``max(label)`` masks, or ``expected_count`` when given (so empty
    trailing objects survive); it also accepts an 8-bit PNG.
``resource_uri``
    ``[str, ...]``: per object the URI of a resource held by the server that
    wrote it, ``mask://<sha256 prefix>``, whose content is that object's
    ``png_base64`` mask. The payload alone does not carry the mask: the encoder
    writes each PNG into a ``resources`` mapping (URI to base64 PNG) and the
    decoder reads them back from one. A reader without the server's resources
    cannot decode it, which is the point. Lossless given the resources.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import math
import re
from collections.abc import Mapping, MutableMapping
from enum import StrEnum
from numbers import Integral, Real
from typing import TypedDict, cast

import cv2
import numpy as np
from numpy.typing import NDArray
from pycocotools import mask as coco_mask

from testbed._arrays import BoolMask
from testbed._errors import TestbedError
from testbed.conventions._box import ImageSize, _parse_enum
from testbed.imaging import encode_png

__all__ = [
    "MASK_URI_SCHEME",
    "CocoRle",
    "LabelMap",
    "MaskEncoding",
    "MaskPayload",
    "MaskPayloadError",
    "MaskResolution",
    "MaskStack",
    "decode_masks",
    "encode_masks",
    "mask_iou",
    "parse_mask_encoding",
    "resize_masks",
]

MaskStack = NDArray[np.bool_]
"""An ``(N, H, W)`` boolean array: one mask per object."""


class MaskEncoding(StrEnum):
    """How a server writes masks (see the module docstring for each payload's exact shape)."""

    COCO_RLE = "coco_rle"
    """Per object ``{"size": [H, W], "counts": str}``, COCO compressed RLE. Lossless."""
    POLYGON = "polygon"
    """Per object a list of flat ``[x1, y1, x2, y2, ...]`` outer contours. Lossy (holes are filled)."""
    PNG_BASE64 = "png_base64"
    """Per object a base64 single-channel 0/255 PNG. Lossless."""
    LABEL_MAP = "label_map"
    """One ``{"size": [H, W], "png": str}`` 16-bit label image, ``k + 1`` = object ``k``. Lossy on overlap."""
    RESOURCE_URI = "resource_uri"
    """Per object a ``mask://`` URI of a server-side resource holding its base64 PNG. Needs the server's resources."""


class MaskResolution(StrEnum):
    """The grid a server's masks are on."""

    IMAGE = "image"
    """The input image's own ``H x W``."""
    MODEL = "model"
    """The model's working size; the client resizes with :func:`resize_masks`."""


class CocoRle(TypedDict):
    """One object's mask in the ``coco_rle`` payload."""

    size: list[int]
    """``[H, W]``."""
    counts: str
    """COCO compressed run lengths of the column-major mask, starting with a run of zeros."""


class LabelMap(TypedDict):
    """The ``label_map`` payload."""

    size: list[int]
    """``[H, W]``."""
    png: str
    """Base64 16-bit single-channel PNG; value ``k + 1`` marks object ``k``, 0 is background."""


MaskPayload = list[CocoRle] | list[list[list[float]]] | list[str] | LabelMap
"""What :func:`encode_masks` returns: a JSON-serialisable value whose shape depends on the encoding."""


class MaskPayloadError(TestbedError, ValueError):
    """A mask payload that does not have the declared encoding's shape or does not fit the image size."""


MASK_URI_SCHEME = "mask"
"""The scheme of the URIs a ``resource_uri`` payload is made of."""

_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
_LABEL_MAP_MAX_OBJECTS = int(np.iinfo(np.uint16).max)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_POLYGON_COORDINATE = 1e9
"""Larger polygon coordinates (in pixels) are rejected: no image is that big, and they would overflow the arithmetic."""
_ON_EDGE_TOLERANCE = 1e-6
"""How close (in pixels) a pixel centre must be to a polygon edge to count as on it."""


def parse_mask_encoding(value: object) -> MaskEncoding:
    """Return the :class:`MaskEncoding` named by ``value``.

    Raises:
        UnsupportedEncodingError: ``value`` names no encoding; the message lists the valid ones.
    """
    return _parse_enum(MaskEncoding, value, what="mask encoding")


def encode_masks(
    masks: MaskStack,
    encoding: MaskEncoding | str,
    *,
    normalized_polygons: bool = False,
    resources: MutableMapping[str, str] | None = None,
) -> MaskPayload:
    """Write a stack of masks as a JSON-serialisable payload in ``encoding``.

    Args:
        masks: ``(N, H, W)`` boolean masks; ``N`` may be 0.
        encoding: the payload format (see the module docstring).
        normalized_polygons: for ``polygon``, write coordinates as fractions of
            ``W`` and ``H`` instead of pixels; ignored by the other encodings.
        resources: for ``resource_uri``, where each object's PNG is stored under its URI
            (the server's resources); ignored by the other encodings.

    Returns:
        The payload: a list per object, or one dict for ``label_map``.

    Raises:
        UnsupportedEncodingError: ``encoding`` is not a :class:`MaskEncoding`.
        ValueError: ``masks`` is not an ``(N, H, W)`` boolean array,
            ``label_map`` is asked for more than 65535 objects, or ``resource_uri``
            for objects without ``resources`` to hold them.
    """
    kind = parse_mask_encoding(encoding)
    stack = _as_mask_stack(masks)
    if kind is MaskEncoding.COCO_RLE:
        return _encode_coco_rle(stack)
    if kind is MaskEncoding.POLYGON:
        return [_encode_polygons(mask, normalized=normalized_polygons) for mask in stack]
    if kind is MaskEncoding.PNG_BASE64:
        return [_encode_png_base64(mask.astype(np.uint8) * np.uint8(255)) for mask in stack]
    if kind is MaskEncoding.RESOURCE_URI:
        return _encode_resource_uris(stack, resources)
    return _encode_label_map(stack)


def decode_masks(
    payload: object,
    encoding: MaskEncoding | str,
    image_size: ImageSize,
    *,
    normalized_polygons: bool = False,
    expected_count: int | None = None,
    resources: Mapping[str, str] | None = None,
) -> MaskStack:
    """Read a payload in ``encoding`` back into an ``(N, H, W)`` boolean stack.

    Args:
        payload: the JSON value a server sent (see the module docstring).
        encoding: the payload format.
        image_size: the grid the payload is on (image or model resolution); sizes
            written in the payload must match it.
        normalized_polygons: for ``polygon``, read coordinates as fractions of the
            size; ignored by the other encodings.
        expected_count: the number of objects the caller expects. A ``label_map``
            then yields exactly this many masks; other encodings must hold this many.
        resources: for ``resource_uri``, the writing server's resources (URI to base64 PNG);
            without them a URI cannot be read.

    Returns:
        A new ``(N, image_size.height, image_size.width)`` boolean array.

    Raises:
        UnsupportedEncodingError: ``encoding`` is not a :class:`MaskEncoding`.
        MaskPayloadError: the payload does not have the encoding's shape, does not
            fit ``image_size``, holds a different number of objects than ``expected_count``,
            or names a resource that ``resources`` does not hold.
        ValueError: ``expected_count`` is negative.
    """
    kind = parse_mask_encoding(encoding)
    what = f"{kind.value} payload"
    if expected_count is not None and expected_count < 0:
        raise ValueError(f"expected_count must be non-negative, got {expected_count}")
    if kind is MaskEncoding.LABEL_MAP:
        return _decode_label_map(payload, image_size, expected_count, what=what)
    items = _as_object_list(payload, expected_count, what=what)
    shape = (len(items), image_size.height, image_size.width)
    stack = np.zeros(shape, dtype=np.bool_)
    for index, item in enumerate(items):
        item_what = f"{what}, object {index}"
        if kind is MaskEncoding.COCO_RLE:
            stack[index] = _decode_coco_rle(item, image_size, what=item_what)
        elif kind is MaskEncoding.POLYGON:
            stack[index] = _decode_polygons(item, image_size, normalized=normalized_polygons, what=item_what)
        elif kind is MaskEncoding.RESOURCE_URI:
            stack[index] = _decode_png(_resolve_uri(item, resources, what=item_what), image_size, what=item_what) != 0
        else:
            stack[index] = _decode_png(item, image_size, what=item_what) != 0
    return stack


def resize_masks(masks: MaskStack, size: ImageSize) -> MaskStack:
    """Resize masks to ``size`` by nearest neighbour, aligning pixel centres.

    Output pixel ``i`` along an axis takes input pixel ``floor((i + 0.5) * n_in / n_out)``,
    so an integer upscale followed by the matching downscale returns the input exactly.

    Args:
        masks: ``(N, H, W)`` boolean masks.
        size: the target grid (e.g. the image size, for masks at model resolution).

    Returns:
        A new ``(N, size.height, size.width)`` boolean array.

    Raises:
        ValueError: ``masks`` is not an ``(N, H, W)`` boolean array.
    """
    stack = _as_mask_stack(masks)
    _, height, width = stack.shape
    rows = _nearest_sources(height, size.height)
    cols = _nearest_sources(width, size.width)
    resized: MaskStack = stack[:, rows[:, None], cols[None, :]]
    return resized


def mask_iou(a: BoolMask, b: BoolMask) -> float:
    """Intersection over union of two boolean masks of the same shape.

    Two empty masks are equal, so their IoU is 1.0.

    Raises:
        ValueError: the masks are not boolean or differ in shape.
    """
    first, second = np.asarray(a), np.asarray(b)
    if first.dtype != np.bool_ or second.dtype != np.bool_:
        raise ValueError(f"masks must be boolean, got {first.dtype} and {second.dtype}")
    if first.shape != second.shape:
        raise ValueError(f"masks must have the same shape, got {first.shape} and {second.shape}")
    union = int(np.count_nonzero(first | second))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(first & second)) / union


def _nearest_sources(n_in: int, n_out: int) -> NDArray[np.intp]:
    """Input index for each output index: ``floor((i + 0.5) * n_in / n_out)``, in exact integer arithmetic."""
    return ((2 * np.arange(n_out, dtype=np.int64) + 1) * n_in // (2 * n_out)).astype(np.intp)


def _as_mask_stack(masks: MaskStack) -> MaskStack:
    stack = np.asarray(masks)
    if stack.dtype != np.bool_:
        raise ValueError(f"masks must be a boolean array, got dtype {stack.dtype}")
    if stack.ndim != 3 or stack.shape[1] == 0 or stack.shape[2] == 0:
        raise ValueError(f"masks must have shape (N, H, W) with H, W > 0, got {stack.shape}")
    return stack


def _as_object_list(payload: object, expected_count: int | None, *, what: str) -> list[object]:
    if not isinstance(payload, list):
        raise MaskPayloadError(f"{what}: expected a list with one entry per object, got {type(payload).__name__}")
    if expected_count is not None and len(payload) != expected_count:
        raise MaskPayloadError(f"{what}: expected {expected_count} objects, got {len(payload)}")
    return payload


def _check_size_field(item: dict[object, object], image_size: ImageSize, *, what: str) -> None:
    size = item.get("size")
    expected = [image_size.height, image_size.width]
    if not isinstance(size, list) or size != expected or not all(_is_int(value) for value in size):
        raise MaskPayloadError(f"{what}: 'size' must be [height, width] = {expected}, got {size!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


# --- coco_rle -------------------------------------------------------------------------------


def _encode_coco_rle(stack: MaskStack) -> list[CocoRle]:
    if stack.shape[0] == 0:
        return []
    encoded = coco_mask.encode(np.asfortranarray(stack.transpose(1, 2, 0).astype(np.uint8)))
    return [CocoRle(size=[int(v) for v in rle["size"]], counts=rle["counts"].decode("ascii")) for rle in encoded]


def _decode_coco_rle(item: object, image_size: ImageSize, *, what: str) -> BoolMask:
    if not isinstance(item, dict):
        raise MaskPayloadError(f"{what}: expected a dict with 'size' and 'counts', got {type(item).__name__}")
    _check_size_field(item, image_size, what=what)
    height, width = image_size.height, image_size.width
    counts = item.get("counts")
    if isinstance(counts, str):
        # Run lengths are bounds-checked before they are decoded (pycocotools would not check them).
        runs = _runs_if_fit(counts, height * width)
        if runs is None:  # malformed or out of bounds: the per-run loop names the error
            runs = _compressed_runs(counts, what=what)
            _check_runs(runs, height * width, what=what)
        return _runs_to_mask(runs, height, width)
    if isinstance(counts, list) and all(_is_int(value) for value in counts):
        runs = [int(value) for value in counts]
        _check_runs(runs, height * width, what=what)
        return _runs_to_mask(runs, height, width)
    raise MaskPayloadError(f"{what}: 'counts' must be a COCO RLE string or a list of run lengths")


_RUN_LENGTH = re.compile(r"[P-o]*[0-O]")
"""One compressed run length: characters with the continuation bit (0x20) set, then one without it."""
_RUN_LENGTHS = re.compile(r"(?:[P-o]*[0-O])*")


def _run_length_value(token: str) -> int:
    """The signed value of one compressed run length (5 bits per character, least significant first)."""
    value = 0
    for shift, character in enumerate(token):
        value |= ((ord(character) - 48) & 0x1F) << (5 * shift)
    if (ord(token[-1]) - 48) & 0x10:
        value -= 1 << (5 * len(token))
    return value


_SHORT_RUN_LENGTHS: dict[str, int] = {
    token: _run_length_value(token)
    for token in [
        *(chr(48 + last) for last in range(32)),
        *(chr(48 + first) + chr(48 + last) for first in range(32, 64) for last in range(32)),
    ]
}
"""Every one- and two-character run length (almost all of a real mask's) and its value."""


def _runs_to_mask(runs: list[int], height: int, width: int) -> BoolMask:
    """The ``height x width`` mask of checked column-major run lengths, zeros first (as pycocotools decodes
    them, without its per-pixel loop)."""
    values = np.zeros(len(runs), dtype=np.bool_)
    values[1::2] = True
    column_major = np.repeat(values, runs).reshape(width, height)
    mask: BoolMask = column_major.T  # a view: decode_masks copies it into its stack
    return mask


def _runs_if_fit(counts: str, pixels: int) -> list[int] | None:
    """The run lengths of compressed ``counts`` if it is well formed with non-negative runs covering exactly
    ``pixels``, else ``None``.

    The same runs as :func:`_compressed_runs` where it and :func:`_check_runs` accept the string (``None``
    where they raise), with the string cut into run lengths by a regular expression and short ones looked up
    rather than decoded character by character. The loop is still what names a malformed string's error.
    """
    if _RUN_LENGTHS.fullmatch(counts) is None:
        return None
    short = _SHORT_RUN_LENGTHS
    runs = [short[token] if token in short else _run_length_value(token) for token in _RUN_LENGTH.findall(counts)]
    # Each run length from the fourth on is stored as the difference from the one two before it.
    runs[1::2] = itertools.accumulate(runs[1::2])
    runs[2::2] = itertools.accumulate(runs[2::2])
    return runs if (not runs or min(runs) >= 0) and sum(runs) == pixels else None


def _compressed_runs(counts: str, *, what: str) -> list[int]:
    """Decode COCO's compressed counts string (the inverse of pycocotools' ``rleToString``)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value = 0
        shift = 0
        more = True
        while more:
            if position == len(counts):
                raise MaskPayloadError(f"{what}: 'counts' ends in the middle of a run length")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise MaskPayloadError(f"{what}: 'counts' holds {counts[position]!r}, not a COCO RLE character")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _check_runs(runs: list[int], pixels: int, *, what: str) -> None:
    if any(run < 0 for run in runs):
        raise MaskPayloadError(f"{what}: 'counts' holds a negative run length")
    total = sum(runs)
    if total != pixels:
        raise MaskPayloadError(f"{what}: run lengths cover {total} pixels, but 'size' has {pixels}")


# --- polygon --------------------------------------------------------------------------------


def _encode_polygons(mask: BoolMask, *, normalized: bool) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    height, width = mask.shape
    polygons: list[list[float]] = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64) + 0.5
        if normalized:
            points /= np.array([width, height], dtype=np.float64)
        polygons.append([float(value) for value in points.ravel()])
    return polygons


def _decode_polygons(item: object, image_size: ImageSize, *, normalized: bool, what: str) -> BoolMask:
    if not isinstance(item, list):
        raise MaskPayloadError(f"{what}: expected a list of polygons, got {type(item).__name__}")
    mask = np.zeros((image_size.height, image_size.width), dtype=np.bool_)
    for index, polygon in enumerate(item):
        polygon_what = f"{what}, polygon {index}"
        if not isinstance(polygon, list) or not all(
            isinstance(value, Real) and not isinstance(value, bool) for value in polygon
        ):
            raise MaskPayloadError(f"{polygon_what}: expected a flat list of numbers [x1, y1, x2, y2, ...]")
        if len(polygon) == 0 or len(polygon) % 2:
            raise MaskPayloadError(f"{polygon_what}: needs an even, non-zero count of coordinates, got {len(polygon)}")
        points = np.array(polygon, dtype=np.float64).reshape(-1, 2)
        if normalized:
            points *= np.array([image_size.width, image_size.height], dtype=np.float64)
        if not (np.abs(points) <= _MAX_POLYGON_COORDINATE).all():
            raise MaskPayloadError(
                f"{polygon_what}: coordinates must be finite and within ±{_MAX_POLYGON_COORDINATE:g} pixels"
            )
        mask |= _rasterise_polygon(points, image_size.height, image_size.width)
    return mask


def _rasterise_polygon(points: NDArray[np.float64], height: int, width: int) -> BoolMask:
    """Pixels whose centre lies inside (even-odd) or on the boundary of a pixel-edge polygon."""
    crossings = np.zeros((height, width + 1), dtype=np.int32)
    boundary = np.zeros((height, width), dtype=np.bool_)
    ends = np.roll(points, -1, axis=0)
    for (x0, y0), (x1, y1) in zip(points.tolist(), ends.tolist(), strict=True):
        _mark_edge(boundary, x0, y0, x1, y1)
        if y0 == y1:
            continue
        # Rows whose centre y satisfies low <= y < high: a shared vertex is crossed once, an extremum 0 or 2 times.
        first = max(math.ceil(min(y0, y1) - 0.5), 0)
        stop = min(math.ceil(max(y0, y1) - 0.5), height)
        if first >= stop:
            continue
        rows = np.arange(first, stop)
        xs = x0 + (rows + 0.5 - y0) * (x1 - x0) / (y1 - y0)
        # The first column whose centre lies strictly right of the crossing.
        cols = np.clip(np.floor(xs + 0.5), 0, width).astype(np.intp)
        crossings[rows, cols] += 1
    inside = (np.cumsum(crossings, axis=1)[:, :width] & 1).astype(np.bool_)
    result: BoolMask = inside | boundary
    return result


def _mark_edge(boundary: BoolMask, x0: float, y0: float, x1: float, y1: float) -> None:
    """Mark the pixels whose centre lies on the segment from ``(x0, y0)`` to ``(x1, y1)``."""
    if abs(y1 - y0) >= abs(x1 - x0):
        rows, cols = _centres_on_segment(y0, x0, y1, x1, boundary.shape[0])
    else:
        cols, rows = _centres_on_segment(x0, y0, x1, y1, boundary.shape[1])
    inside = (cols >= 0) & (cols < boundary.shape[1]) & (rows >= 0) & (rows < boundary.shape[0])
    boundary[rows[inside], cols[inside]] = True


def _centres_on_segment(
    major0: float, minor0: float, major1: float, minor1: float, major_count: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Pixel indices ``(major, minor)`` of centres on a segment, stepping along its longer axis."""
    tolerance = _ON_EDGE_TOLERANCE
    first = max(math.ceil(min(major0, major1) - tolerance - 0.5), 0)
    stop = min(math.floor(max(major0, major1) + tolerance - 0.5) + 1, major_count)
    major = np.arange(first, max(first, stop))
    if major0 == major1:
        minor = np.full(major.shape, minor0)
    else:
        minor = minor0 + (major + 0.5 - major0) * (minor1 - minor0) / (major1 - major0)
    nearest = np.round(minor - 0.5)
    on_edge = np.abs(minor - 0.5 - nearest) <= tolerance
    return major[on_edge].astype(np.intp), nearest[on_edge].astype(np.intp)


# --- png_base64 and label_map ---------------------------------------------------------------


def _encode_png_base64(image: NDArray[np.uint8] | NDArray[np.uint16]) -> str:
    return base64.b64encode(encode_png(image)).decode("ascii")


def _decode_png(item: object, image_size: ImageSize, *, what: str) -> NDArray[np.uint8] | NDArray[np.uint16]:
    """Decode a base64 single-channel PNG of exactly ``image_size``."""
    if not isinstance(item, str):
        raise MaskPayloadError(f"{what}: expected a base64 PNG string, got {type(item).__name__}")
    text = item.partition(",")[2] if item.startswith("data:") else item
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MaskPayloadError(f"{what}: invalid base64") from None
    # Check the size in the PNG header before decoding, so an oversized image is never decompressed.
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise MaskPayloadError(f"{what}: not a PNG")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if (width, height) != (image_size.width, image_size.height):
        raise MaskPayloadError(
            f"{what}: PNG is {width}x{height}, expected {image_size.width}x{image_size.height} (width x height)"
        )
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MaskPayloadError(f"{what}: PNG cannot be decoded")
    if image.ndim != 2:
        raise MaskPayloadError(f"{what}: PNG must be single-channel, got {image.shape[2]} channels")
    if image.dtype not in (np.uint8, np.uint16):
        raise MaskPayloadError(f"{what}: PNG must be 8- or 16-bit, got {image.dtype}")
    return cast("NDArray[np.uint8] | NDArray[np.uint16]", image)


def _encode_label_map(stack: MaskStack) -> LabelMap:
    count, height, width = stack.shape
    if count > _LABEL_MAP_MAX_OBJECTS:
        raise ValueError(f"label_map holds at most {_LABEL_MAP_MAX_OBJECTS} objects, got {count}")
    labels = np.zeros((height, width), dtype=np.uint16)
    for index, mask in enumerate(stack):
        labels[mask] = index + 1  # later objects overwrite earlier ones where they overlap
    return LabelMap(size=[height, width], png=_encode_png_base64(labels))


def _decode_label_map(payload: object, image_size: ImageSize, expected_count: int | None, *, what: str) -> MaskStack:
    if not isinstance(payload, dict):
        raise MaskPayloadError(f"{what}: expected a dict with 'size' and 'png', got {type(payload).__name__}")
    _check_size_field(payload, image_size, what=what)
    labels = _decode_png(payload.get("png"), image_size, what=f"{what}, 'png'")
    largest = int(labels.max())
    count = largest if expected_count is None else expected_count
    if largest > count:
        raise MaskPayloadError(f"{what}: holds label {largest}, but only {count} objects are expected")
    stack: MaskStack = labels[None, :, :] == np.arange(1, count + 1, dtype=np.int64)[:, None, None]
    return stack


# --- resource_uri ---------------------------------------------------------------------------


def _encode_resource_uris(stack: MaskStack, resources: MutableMapping[str, str] | None) -> list[str]:
    if stack.shape[0] and resources is None:
        raise ValueError("resource_uri masks need resources to hold them")
    uris: list[str] = []
    for mask in stack:
        png = _encode_png_base64(mask.astype(np.uint8) * np.uint8(255))
        uri = f"{MASK_URI_SCHEME}://{hashlib.sha256(png.encode('ascii')).hexdigest()[:32]}"
        assert resources is not None
        resources[uri] = png
        uris.append(uri)
    return uris


def _resolve_uri(item: object, resources: Mapping[str, str] | None, *, what: str) -> str:
    if not isinstance(item, str) or not _URI.match(item):
        raise MaskPayloadError(f"{what}: expected a resource URI string like 'mask://...', got {item!r:.60}")
    content = resources.get(item) if resources is not None else None
    if content is None:
        raise MaskPayloadError(f"{what}: {item!r} names a server-side resource this reader cannot resolve")
    return content
