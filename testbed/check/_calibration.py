"""The instrument's calibration as data: per fault kind and violation ID, counts and Wilson bounds.

A reproduced rate is only as good as the validator that produced it: reports put this table
beside their results, so each rate can be read against its validator's recall and false-positive
bounds. Every row keeps its counts, so a single miss is never rounded away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from scipy import stats

from testbed.check._accuracy import AccuracyRow, AccuracyTable
from testbed.metrics import Interval

RECALL_GOAL = 0.99
"""The lower bound of recall every fault kind should reach in a full calibration run."""

CALIBRATION_FIELDS = (
    "scenario",
    "fault_kind",
    "violation_id",
    "runs",
    "probability",
    "applied_runs",
    "detected_runs",
    "recall",
    "recall_low",
    "recall_high",
    "clean_runs",
    "false_positive_runs",
    "false_positive_rate",
    "false_positive_low",
    "false_positive_high",
    "confidence",
    "meets_recall_goal",
    "missed_runs",
)
"""Columns of a calibration record; empty cells where a rate is undefined (the fault always or never applied)."""


def hits_needed(goal: float = RECALL_GOAL, confidence: float = 0.95) -> int:
    """The fewest applied runs, all detected, whose Wilson lower bound of recall reaches ``goal``.

    With no miss the Wilson lower bound is ``n / (n + z²)``, so ``n >= goal z² / (1 - goal)``.

    Raises:
        ValueError: ``goal`` outside (0, 1) or a confidence outside (0, 1).
    """
    if not 0.0 < goal < 1.0:
        raise ValueError(f"a recall goal must lie strictly between 0 and 1, got {goal}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    z = float(stats.norm.ppf(1 - (1 - confidence) / 2))
    return math.ceil(goal * z * z / (1 - goal))


def meets_recall_goal(row: AccuracyRow, goal: float = RECALL_GOAL, confidence: float = 0.95) -> bool | None:
    """Whether the Wilson lower bound of ``row``'s recall reaches ``goal``; ``None`` when the fault never applied."""
    interval = row.recall_interval(confidence)
    return None if interval is None else interval.low >= goal


def _bounds(interval: Interval | None) -> tuple[float | str, float | str, float | str]:
    return ("", "", "") if interval is None else (interval.estimate, interval.low, interval.high)


def calibration_record(table: AccuracyTable, row: AccuracyRow, goal: float = RECALL_GOAL) -> dict[str, Any]:
    """One row as a flat dict keyed by :data:`CALIBRATION_FIELDS` (``missed_runs`` is a list of run indices)."""
    recall, recall_low, recall_high = _bounds(row.recall_interval(table.confidence))
    false_rate, false_low, false_high = _bounds(row.false_positive_interval(table.confidence))
    meets = meets_recall_goal(row, goal, table.confidence)
    return {
        "scenario": table.scenario,
        "fault_kind": row.kind,
        "violation_id": row.violation_id,
        "runs": table.runs,
        "probability": table.probability,
        "applied_runs": row.applied_runs,
        "detected_runs": row.detected_runs,
        "recall": recall,
        "recall_low": recall_low,
        "recall_high": recall_high,
        "clean_runs": row.clean_runs,
        "false_positive_runs": row.false_positive_runs,
        "false_positive_rate": false_rate,
        "false_positive_low": false_low,
        "false_positive_high": false_high,
        "confidence": table.confidence,
        "meets_recall_goal": "" if meets is None else meets,
        "missed_runs": list(row.missed),
    }


def calibration_records(tables: Iterable[AccuracyTable], goal: float = RECALL_GOAL) -> list[dict[str, Any]]:
    """Every row of every table, in order, as :func:`calibration_record` gives it."""
    return [calibration_record(table, row, goal) for table in tables for row in table.rows]
