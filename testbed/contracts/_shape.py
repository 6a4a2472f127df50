"""The shape-order rule: an image size sent as a pair is in the order (``hw`` or ``wh``) the consumer reads.

Where the producer declares its order, the declarations decide. Where it does not, the value decides when
it can: read in the consumer's order it must be the image's size, and a non-square image's size read the
wrong way round is a breach. No tracked adapter reorders a pair, so a breach has no remedy.
"""

from __future__ import annotations

from typing import Any

from testbed.contracts._rules import EdgeValue, Finding, contract_rule, rewritten_untracked
from testbed.conventions import ImageSize, ShapeOrder, parse_shape

__all__: list[str] = []

_SHAPE = "shape_order"


def _order(value: object) -> ShapeOrder | None:
    try:
        return ShapeOrder(value) if isinstance(value, str) else None
    except ValueError:
        return None


@contract_rule(_SHAPE, keyword="shape_order")
def check_shape_order(edge: EdgeValue) -> Finding | None:
    """The pair arrives in the consumer's declared order: by the producer's declaration, else by the image."""
    consumer = _order(edge.expected.get("shape_order"))
    if consumer is None:
        return Finding(_SHAPE, f"{edge.where}: the consumer's shape_order is invalid", unevaluable=True)
    if edge.sent != edge.source:
        return rewritten_untracked(_SHAPE, edge, "the pair", "order")
    if _is_size_object(edge.sent):
        return Finding(_SHAPE, f"{edge.where}: a {{width, height}} object arrives where a {consumer} pair is read")
    producer = _order(edge.produced.get("shape_order")) if edge.produced is not None else None
    if producer is not None:
        if producer is consumer:
            return None
        written = f"{edge.producer} writes the size as {producer}, the consumer reads {consumer}"
        return Finding(_SHAPE, f"{edge.where}: {written}")
    try:
        read = parse_shape(edge.sent, consumer)
    except (TypeError, ValueError):
        return Finding(_SHAPE, f"{edge.where}: {_preview(edge.sent)} is not an image size pair", unevaluable=True)
    image = edge.image_size
    if read == image:
        return None
    if read == ImageSize(width=image.height, height=image.width):
        return Finding(
            _SHAPE,
            f"{edge.where}: {_preview(edge.sent)} read as {consumer} is {read.width}x{read.height}, the "
            f"{image.width}x{image.height} image the other way round",
        )
    return Finding(
        _SHAPE,
        f"{edge.where}: {edge.producer} declares no shape_order and {_preview(edge.sent)} is not the "
        f"{image.width}x{image.height} image's size in either order",
        unevaluable=True,
    )


def _is_size_object(value: Any) -> bool:
    return isinstance(value, dict) and {"width", "height"} <= value.keys()


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
