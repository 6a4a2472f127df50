"""The built-in box rules: the value's convention matches the consumer's, and its boxes fit the image."""

from __future__ import annotations

from typing import Any

import numpy as np

from testbed.contracts._rules import EdgeValue, Finding, contract_rule, rewritten_untracked
from testbed.conventions import BoxConvention, BoxUnits, to_canonical
from testbed.protocol import declared_box_convention
from testbed.workflow import BoxAdapter

__all__ = ["BOUNDS_TOLERANCE_PX"]

BOUNDS_TOLERANCE_PX = 1.0
"""How far a box may stick out of the image (pixels) before it breaks the bounds rule."""

_CONVENTION = "box_convention"
_BOUNDS = "box_bounds"


@contract_rule(_CONVENTION, keyword="coordinate_system")
def check_box_convention(edge: EdgeValue) -> Finding | None:
    """The boxes arrive in the convention the consumer declares (the producer's, or a tracked adapter's ``to``)."""
    consumer = declared_box_convention(edge.expected)
    if consumer is None:
        return Finding(_CONVENTION, f"{edge.where}: the consumer's coordinate_system is invalid", unevaluable=True)
    if edge.produced is None:
        return Finding(
            _CONVENTION, f"{edge.where}: {edge.producer} declares no output at {edge.source_path}", unevaluable=True
        )
    producer = declared_box_convention(edge.produced)
    if producer is None:
        return Finding(
            _CONVENTION,
            f"{edge.where}: {edge.producer} declares no coordinate_system at {edge.source_path}",
            unevaluable=True,
        )
    if isinstance(edge.adapter, BoxAdapter):
        if edge.adapter.from_ != producer:
            return Finding(
                _CONVENTION,
                f"{edge.where}: adapter reads {edge.adapter.from_} but {edge.producer} writes {producer}",
                remedy=_adapter(producer, consumer),
            )
        arriving = edge.adapter.to
    elif edge.sent != edge.source:
        return rewritten_untracked(_CONVENTION, edge, "the value", "convention")
    else:
        arriving = producer
    if arriving == consumer:
        return None
    return Finding(
        _CONVENTION,
        f"{edge.where}: boxes arrive as {arriving} but the consumer reads {consumer}",
        remedy=_adapter(producer, consumer),
    )


def _adapter(source: BoxConvention, target: BoxConvention) -> BoxAdapter | None:
    return BoxAdapter.between(source, target) if source != target else None


@contract_rule(_BOUNDS, keyword="coordinate_system")
def check_box_bounds(edge: EdgeValue) -> Finding | None:
    """Every box sent has positive area and lies in the image, read in the consumer's declared convention."""
    consumer = declared_box_convention(edge.expected)
    boxes = _boxes(edge.sent)
    if consumer is None or boxes is None:
        return Finding(_BOUNDS, f"{edge.where}: the value is not boxes in a declared convention", unevaluable=True)
    if consumer.units is BoxUnits.NORMALIZED and np.any((boxes < -0.01) | (boxes > 1.01)):
        return Finding(_BOUNDS, f"{edge.where}: {_first(boxes)} is not normalized ({consumer})")
    canonical = to_canonical(boxes, consumer, edge.image_size)
    x1, y1, x2, y2 = canonical.T
    size = edge.image_size
    tolerance = BOUNDS_TOLERANCE_PX
    outside = (x2 <= x1) | (y2 <= y1) | (x1 < -tolerance) | (y1 < -tolerance)
    outside |= (x2 > size.width + tolerance) | (y2 > size.height + tolerance)
    if np.any(outside):
        index = int(np.argmax(outside))
        return Finding(
            _BOUNDS,
            f"{edge.where}: box {_first(boxes[index : index + 1])} read as {consumer} is off the "
            f"{size.width}x{size.height} image or has no area",
        )
    return None


def _boxes(value: Any) -> np.ndarray | None:
    try:
        boxes = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if boxes.size == 0 or boxes.size % 4 or boxes.ndim > 2 or not np.all(np.isfinite(boxes)):
        return None
    return boxes.reshape(-1, 4)


def _first(boxes: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in boxes[0]) + "]"
