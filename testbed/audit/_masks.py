"""Which mask encoding and resolution a tool's masks use, from probe scenes with exact masks.

Candidates are found by the shape of each :class:`MaskEncoding` payload (a
list of ``{"size", "counts"}`` dicts, a ``{"size", "png"}`` dict, a list of
base64 PNG strings, a list of lists of flat coordinate lists). Each is
decoded with the testbed's own decoders on the grid it states (its ``size``,
its PNG's dimensions, or the image for polygons, read as pixels and as
fractions), resized to the image, and scored by the mean best IoU with the
scene's object masks. The decoding that scores best wins; ``resolution`` is
``image`` when its grid is the image's, else ``model``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np

from testbed.conventions import (
    MASK_URI_SCHEME,
    ImageSize,
    MaskEncoding,
    MaskPayloadError,
    decode_masks,
    mask_iou,
    resize_masks,
)
from testbed.scenes import Scene

__all__ = ["INLINE_ENCODINGS", "MAX_RESOURCES", "MaskInference", "infer_mask_encoding", "mask_uris"]

INLINE_ENCODINGS: Final = (MaskEncoding.COCO_RLE, MaskEncoding.POLYGON, MaskEncoding.PNG_BASE64, MaskEncoding.LABEL_MAP)
"""The encodings whose payload holds the masks themselves; ``resource_uri`` masks are read through the server's
resources (:func:`mask_uris`, then ``resources`` of :func:`infer_mask_encoding`)."""
MAX_RESOURCES: Final = 32
"""Resources read per probe result at most."""

_MIN_IOU = 0.3
"""Below this mean IoU a decoding is not taken to be the tool's masks."""


@dataclass(frozen=True)
class MaskInference:
    path: str
    encoding: str
    normalized_polygons: bool
    grid: tuple[int, int]
    """``(height, width)`` the masks are on."""
    resolution: str
    mean_iou: float


def mask_uris(payload: Any, limit: int = MAX_RESOURCES) -> list[str]:
    """The ``mask://`` URIs in ``payload`` (lists of them, as ``resource_uri`` masks are), at most ``limit``."""
    found: list[str] = []
    for _, value in _values(payload, ""):
        if isinstance(value, list) and value and all(_is_mask_uri(item) for item in value):
            found.extend(item for item in value if item not in found)
    return found[:limit]


def _is_mask_uri(value: object) -> bool:
    return isinstance(value, str) and value.startswith(f"{MASK_URI_SCHEME}://")


def infer_mask_encoding(payload: Any, scene: Scene, resources: Mapping[str, str] | None = None) -> MaskInference | None:
    """The best decoding of any mask-shaped value in ``payload``, or ``None`` when none fits the scene.

    ``resources``: what the server returned for the ``mask://`` URIs in ``payload`` (read by the caller); a list
    of such URIs is then decoded as ``resource_uri`` masks.
    """
    best: MaskInference | None = None
    image = ImageSize(width=scene.width, height=scene.height)
    truth = [obj.mask for obj in scene.objects if obj.mask is not None]
    if not truth:
        return None
    for path, value in _values(payload, ""):
        for encoding, normalized, grid in _candidates(value, image, resources or {}):
            try:
                masks = decode_masks(value, encoding, grid, normalized_polygons=normalized, resources=resources)
            except (MaskPayloadError, ValueError, TypeError):
                continue
            if masks.shape[0] == 0:
                continue
            on_image = resize_masks(masks, image) if (grid.height, grid.width) != (image.height, image.width) else masks
            score = float(np.mean([max(mask_iou(m, t) for m in on_image) for t in truth]))
            if score >= _MIN_IOU and (best is None or score > best.mean_iou):
                resolution = "image" if (grid.height, grid.width) == (image.height, image.width) else "model"
                best = MaskInference(path, encoding.value, normalized, (grid.height, grid.width), resolution, score)
    return best


def _values(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > 8:
        return
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _values(child, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for child in value[:1]:
            yield from _values(child, f"{path}[*]", depth + 1)
        yield from _gathered(value, path, depth)


def _gathered(items: list[Any], path: str, depth: int) -> Iterator[tuple[str, Any]]:
    """Per-object fields of a list of objects, gathered into one list (``instances[*].mask``)."""
    keys = [key for key in items[0] if all(isinstance(item, dict) and key in item for item in items)]
    for key in keys:
        gathered = [item[key] for item in items]
        if isinstance(gathered[0], str | list | dict):
            yield f"{path}[*].{key}", gathered


def _candidates(
    value: Any, image: ImageSize, resources: Mapping[str, str]
) -> Iterator[tuple[MaskEncoding, bool, ImageSize]]:
    if isinstance(value, dict) and isinstance(value.get("png"), str):
        size = _size(value.get("size"))
        if size is not None:
            yield MaskEncoding.LABEL_MAP, False, size
    if not isinstance(value, list) or not value:
        return
    first = value[0]
    if isinstance(first, dict) and "counts" in first:
        size = _size(first.get("size"))
        if size is not None:
            yield MaskEncoding.COCO_RLE, False, size
    elif isinstance(first, str) and first in resources:
        size = _png_size(resources[first])
        if size is not None:
            yield MaskEncoding.RESOURCE_URI, False, size
    elif isinstance(first, str):
        size = _png_size(first)
        if size is not None:
            yield MaskEncoding.PNG_BASE64, False, size
    elif isinstance(first, list) and first and isinstance(first[0], list):
        yield MaskEncoding.POLYGON, False, image
        yield MaskEncoding.POLYGON, True, image


def _size(value: object) -> ImageSize | None:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return ImageSize(width=value[1], height=value[0])
    return None


def _png_size(text: str) -> ImageSize | None:
    data = text.partition(",")[2] if text.startswith("data:") else text
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    decoded = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        return None
    return ImageSize(width=int(decoded.shape[1]), height=int(decoded.shape[0]))
