"""Which box convention a tool's boxes follow, from probe scenes with exact ground truth.

Every returned box is read in every convention the testbed knows
(:func:`testbed.validators.read_boxes`: format, units, axis order, origin).
A convention explains a box when, read in it, the box lies in the image and
overlaps a ground-truth object at IoU >= ``MATCH_IOU``. The inferred
convention explains the most boxes over all probe scenes (ties: the higher
mean IoU); conventions that explain exactly as many with a mean IoU within
0.01 are reported as alternatives the scenes could not separate. Confidence
is the fraction of boxes the winner explains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed.conventions import ImageSize
from testbed.scenes import Scene
from testbed.validators._coords import CONVENTIONS, MATCH_IOU, read_boxes

__all__ = ["BoxInference", "infer_box_convention"]

_TIE_IOU = 0.01


@dataclass(frozen=True)
class BoxInference:
    convention: str | None
    """``None`` when no convention puts any box on an object (a model error, or a convention unknown here)."""
    confidence: float
    explained: int
    boxes: int
    mean_iou: float
    alternatives: tuple[str, ...]


def infer_box_convention(observations: list[tuple[list[list[float]], Scene]]) -> BoxInference:
    """Infer the convention of boxes returned for each scene (``[(boxes, scene), ...]``)."""
    explained = np.zeros(len(CONVENTIONS), dtype=np.int64)
    iou_sum = np.zeros(len(CONVENTIONS), dtype=np.float64)
    total = 0
    for boxes, scene in observations:
        if not boxes or not scene.objects:
            total += len(boxes)
            continue
        truth = np.array([obj.box_xyxy for obj in scene.objects], dtype=np.float64)
        readings = read_boxes(
            np.array(boxes, dtype=np.float64), ImageSize(width=scene.width, height=scene.height), truth
        )
        best_iou = readings.ious.max(axis=2)  # (K, N)
        hits = readings.inside & (best_iou >= MATCH_IOU)
        explained += hits.sum(axis=1)
        iou_sum += np.where(hits, best_iou, 0.0).sum(axis=1)
        total += len(boxes)
    if total == 0 or explained.max() == 0:
        return BoxInference(None, 0.0, 0, total, 0.0, ())
    mean_iou = np.divide(iou_sum, np.maximum(explained, 1))
    best = max(range(len(CONVENTIONS)), key=lambda k: (int(explained[k]), float(mean_iou[k]), -k))
    alternatives = tuple(
        str(CONVENTIONS[k])
        for k in range(len(CONVENTIONS))
        if k != best and explained[k] == explained[best] and abs(mean_iou[k] - mean_iou[best]) < _TIE_IOU
    )
    return BoxInference(
        convention=str(CONVENTIONS[best]),
        confidence=float(explained[best]) / total,
        explained=int(explained[best]),
        boxes=total,
        mean_iou=float(mean_iou[best]),
        alternatives=alternatives,
    )
