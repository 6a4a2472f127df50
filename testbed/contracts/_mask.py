"""The mask rules: masks arrive in the encoding the consumer reads, and on the grid it reads them on.

Both sides declare masks with ``encoding`` and ``resolution`` (:func:`testbed.protocol.declare_mask`).
Where the two differ, the remedy is the tracked :class:`~testbed.workflow.MaskAdapter` between them; a
mask at model resolution is resized from the grid its own payload names (COCO RLE and label-map ``size``,
a PNG's header). No adapter reads or writes ``resource_uri`` masks (the writing server holds them), and
a polygon at model resolution names no grid: those breaches have no remedy.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeGuard

from pydantic import ValidationError

from testbed.contracts._rules import EdgeValue, Finding, contract_rule, rewritten_untracked
from testbed.conventions import ImageSize, MaskEncoding, MaskResolution, decode_masks
from testbed.workflow import MaskAdapter, MaskConvention

__all__: list[str] = []

_ENCODING = "mask_encoding"
_RESOLUTION = "mask_resolution"
_PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def _enum(kind: Any, value: object) -> Any:
    try:
        return kind(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _declared(edge: EdgeValue, key: str, kind: Any) -> Any:
    """What the producer declares at the edge's source path for ``key`` (``None``: nothing, or no such path)."""
    return _enum(kind, edge.produced.get(key)) if edge.produced is not None else None


@contract_rule(_ENCODING, keyword="encoding")
def check_mask_encoding(edge: EdgeValue) -> Finding | None:
    """The masks arrive in the encoding the consumer declares (the producer's, or a tracked adapter's ``to``)."""
    consumer = _enum(MaskEncoding, edge.expected.get("encoding"))
    if consumer is None:
        return Finding(_ENCODING, f"{edge.where}: the consumer's mask encoding is invalid", unevaluable=True)
    producer = _declared(edge, "encoding", MaskEncoding)
    if producer is None:
        return Finding(
            _ENCODING,
            f"{edge.where}: {edge.producer} declares no mask encoding at {edge.source_path}",
            unevaluable=True,
        )
    if isinstance(edge.adapter, MaskAdapter):
        if edge.adapter.from_.encoding is not producer:
            return Finding(
                _ENCODING,
                f"{edge.where}: adapter reads {edge.adapter.from_.encoding} but {edge.producer} writes {producer}",
                remedy=_remedy(edge),
            )
        arriving = edge.adapter.to.encoding
    elif edge.sent != edge.source:
        return rewritten_untracked(_ENCODING, edge, "the mask", "encoding")
    else:
        arriving = producer
    if arriving is consumer:
        return None
    return Finding(
        _ENCODING, f"{edge.where}: masks arrive as {arriving} but the consumer reads {consumer}", remedy=_remedy(edge)
    )


@contract_rule(_RESOLUTION, keyword="resolution")
def check_mask_resolution(edge: EdgeValue) -> Finding | None:
    """The masks sent lie on the grid the consumer reads: the image's own size for ``image`` resolution."""
    consumer = _enum(MaskResolution, edge.expected.get("resolution"))
    if consumer is None:
        return Finding(_RESOLUTION, f"{edge.where}: the consumer's mask resolution is invalid", unevaluable=True)
    if isinstance(edge.adapter, MaskAdapter):
        encoding, declared = edge.adapter.to.encoding, edge.adapter.to.resolution
    elif edge.sent != edge.source:
        return rewritten_untracked(_RESOLUTION, edge, "the mask", "grid")
    else:
        encoding = _declared(edge, "encoding", MaskEncoding)
        declared = _declared(edge, "resolution", MaskResolution)
    if encoding is None:
        return Finding(
            _RESOLUTION, f"{edge.where}: {edge.producer} declares no mask encoding to read it by", unevaluable=True
        )
    try:
        grid = _grid(edge.sent, encoding)
    except ValueError as error:
        undecodable = f"{edge.where}: the mask cannot be decoded as {encoding}: {error}"
        return Finding(_RESOLUTION, undecodable, unevaluable=True)
    image = edge.image_size
    if consumer is MaskResolution.IMAGE and grid is not None:
        if grid == image:
            return None
        return Finding(
            _RESOLUTION,
            f"{edge.where}: the mask is {grid.width}x{grid.height} but the consumer reads it on the "
            f"{image.width}x{image.height} image",
            remedy=_remedy(edge),
        )
    if declared is None:
        return Finding(
            _RESOLUTION,
            f"{edge.where}: the {encoding} mask names no grid and {edge.producer} declares no resolution",
            unevaluable=True,
        )
    if declared is consumer:
        return None
    return Finding(
        _RESOLUTION,
        f"{edge.where}: masks arrive at {declared} resolution but the consumer reads {consumer} resolution",
        remedy=_remedy(edge),
    )


def _remedy(edge: EdgeValue) -> MaskAdapter | None:
    """The adapter from the producer's declared masks to the consumer's, when both are declared and it can exist."""
    encoding = _declared(edge, "encoding", MaskEncoding)
    resolution = _declared(edge, "resolution", MaskResolution) or MaskResolution.IMAGE
    wanted = _enum(MaskEncoding, edge.expected.get("encoding")) or encoding
    wanted_resolution = _enum(MaskResolution, edge.expected.get("resolution")) or MaskResolution.IMAGE
    if encoding is None or MaskEncoding.RESOURCE_URI in (encoding, wanted):
        return None
    model_size: tuple[int, int] | None = None
    if MaskResolution.MODEL in (resolution, wanted_resolution):
        try:
            grid = _grid(edge.source, encoding) if resolution is MaskResolution.MODEL else None
        except ValueError:
            return None
        if grid is None:
            return None
        model_size = (grid.width, grid.height)
    try:
        return MaskAdapter.between(
            MaskConvention(encoding=encoding, resolution=resolution),
            MaskConvention(encoding=wanted, resolution=wanted_resolution),
            model_size=model_size,
        )
    except ValidationError:
        return None


def _grid(value: Any, encoding: MaskEncoding) -> ImageSize | None:
    """The grid a mask value (one object's, or a payload of several) lies on; ``None``: the encoding names none.

    Raises:
        ValueError: the value is not a mask in ``encoding``, its objects disagree on the grid, or it does not decode.
    """
    if encoding in (MaskEncoding.POLYGON, MaskEncoding.RESOURCE_URI):
        return None
    if encoding is MaskEncoding.LABEL_MAP:
        items: list[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        items = [value]
    if not items:
        raise ValueError("no mask")
    grids = {_item_grid(item, encoding) for item in items}
    if len(grids) != 1:
        raise ValueError("its objects lie on different grids")
    (grid,) = grids
    decode_masks(value if encoding is MaskEncoding.LABEL_MAP else items, encoding, grid)
    return grid


def _item_grid(item: Any, encoding: MaskEncoding) -> ImageSize:
    if encoding is MaskEncoding.PNG_BASE64:
        if not isinstance(item, str):
            raise ValueError(f"expected a base64 PNG string, got {type(item).__name__}")
        text = item.partition(",")[2] if item.startswith("data:") else item
        try:
            header = base64.b64decode(text[:32], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("invalid base64") from None
        if len(header) < 24 or not header.startswith(_PNG_HEADER):
            raise ValueError("not a PNG")
        return _size(int.from_bytes(header[20:24], "big"), int.from_bytes(header[16:20], "big"))
    size = item.get("size") if isinstance(item, dict) else None
    if not isinstance(size, list) or len(size) != 2:
        raise ValueError("no [height, width] size")
    return _size(size[0], size[1])


def _size(height: object, width: object) -> ImageSize:
    if _positive(height) and _positive(width):
        return ImageSize(width=width, height=height)
    raise ValueError(f"size [{height}, {width}] is not two positive integers")


def _positive(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
