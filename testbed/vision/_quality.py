"""Detection quality against ground truth: one-to-one matching by IoU.

This measures the *model*, never the protocol: a missed or mislocated object
is a detection-quality figure, not a violation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed._arrays import BoxArray
from testbed.conventions import box_iou


@dataclass(frozen=True)
class Match:
    """The ground-truth object a prediction was matched to (``None`` if unmatched) and their IoU.

    For an unmatched prediction ``iou`` is its best overlap with any ground-truth box.
    """

    prediction: int
    ground_truth: int | None
    iou: float


def match_predictions(
    gt_boxes: BoxArray,
    gt_class_ids: np.ndarray,
    pred_boxes: BoxArray,
    pred_class_ids: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    class_aware: bool = True,
) -> list[Match]:
    """Greedily match predictions to ground truth, highest IoU first, each object at most once.

    Args:
        gt_boxes: canonical ``(N, 4)`` ground-truth boxes.
        gt_class_ids: ``(N,)`` ground-truth classes.
        pred_boxes: canonical ``(M, 4)`` predicted boxes.
        pred_class_ids: ``(M,)`` predicted classes.
        iou_threshold: smallest IoU that counts as a match.
        class_aware: whether a match also needs the same class.

    Returns:
        One ``Match`` per prediction, in prediction order.
    """
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    ious = box_iou(pred, gt) if len(pred) and len(gt) else np.zeros((len(pred), len(gt)))
    eligible = ious.copy()
    if class_aware and eligible.size:
        same = np.asarray(pred_class_ids).reshape(-1, 1) == np.asarray(gt_class_ids).reshape(1, -1)
        eligible[~same] = 0.0
    assigned: dict[int, int] = {}
    taken: set[int] = set()
    for flat in np.argsort(-eligible, axis=None, kind="stable"):
        p, g = divmod(int(flat), max(len(gt), 1))
        if eligible.size == 0 or eligible[p, g] < iou_threshold:
            break
        if p in assigned or g in taken:
            continue
        assigned[p] = g
        taken.add(g)
    matches = []
    for p in range(len(pred)):
        matched = assigned.get(p)
        best = float(ious[p].max()) if len(gt) else 0.0
        iou = float(ious[p, matched]) if matched is not None else best
        matches.append(Match(prediction=p, ground_truth=matched, iou=iou))
    return matches


def recall(matches: list[Match], ground_truth_count: int) -> float:
    """Share of ground-truth objects matched by some prediction (1.0 when there are none)."""
    if ground_truth_count == 0:
        return 1.0
    return len({m.ground_truth for m in matches if m.ground_truth is not None}) / ground_truth_count
