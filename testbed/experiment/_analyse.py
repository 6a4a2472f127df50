"""The results of a run plan: one row per cell, one row per contrast and outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from testbed._seeding import derive_rng
from testbed.experiment._execute import cell_dir
from testbed.experiment._outcomes import (
    BINARY,
    FAMILIES,
    NUMERIC,
    PLAN,
    RATIO,
    TASK,
    CellOutcomes,
    cell_outcomes,
    cell_row,
)
from testbed.experiment._plan import Contrast, Plan
from testbed.experiment._stats import Comparison, compare_binary, compare_numeric, compare_ratio, holm

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CONTRAST_COLUMNS", "Results", "analyse"]

CONTRAST_COLUMNS = (
    "contrast",
    "outcome",
    "measure",
    "pairs",
    "treatment",
    "baseline",
    "difference",
    "low",
    "high",
    "interval",
    "p_value",
    "test",
    "p_holm",
    "treatment_only",
    "baseline_only",
    "confidence",
)
"""Columns of ``contrasts.csv``; proportions are shares in [0, 1], ``latency_ms`` in milliseconds, and
``latency_ratio`` a ratio of means (``difference``, ``low``, ``high``: treatment / baseline)."""


@dataclass(frozen=True)
class Results:
    """What an experiment found."""

    plan: Plan
    cells: pd.DataFrame
    """One row per cell: its levels, rates with Wilson intervals (percent), calls per run, and per-call latency
    (mean; median and p90 with order-statistic intervals)."""
    contrasts: pd.DataFrame
    """One row per contrast x outcome (:data:`CONTRAST_COLUMNS`)."""
    outcomes: tuple[str, ...]
    """The outcomes compared: the families seen in any cell, task success where checked, plan validity where
    an agent plans, calls, latency, and the latency ratio."""


def analyse(plan: Plan, out_dir: Path) -> Results:
    """Read every cell under ``out_dir`` and compare the cells of each contrast run by run.

    Raises:
        TestbedError: a cell directory is missing or is not an experiment.
    """
    import pandas as pd

    confidence = plan.loaded.design.confidence
    outcomes = {cell.id: cell_outcomes(cell, cell_dir(out_dir, cell.id)) for cell in plan.cells}
    cells = pd.DataFrame([cell_row(each, confidence=confidence) for each in outcomes.values()])
    seen = [family for family in FAMILIES if any(each.runs[family].any() for each in outcomes.values())]
    defined = tuple(name for name in (TASK, PLAN) if any(each.runs[name].notna().any() for each in outcomes.values()))
    compared = (*seen, *defined, *NUMERIC, *RATIO)
    rows = [
        _row(contrast, outcome, comparison, confidence)
        for contrast in plan.contrasts
        for outcome in compared
        if (comparison := _compare(plan.seed, contrast, outcome, outcomes, confidence)) is not None
    ]
    frame = pd.DataFrame(rows, columns=list(CONTRAST_COLUMNS))
    frame["p_holm"] = np.nan
    for _, group in frame.groupby("outcome", sort=False):
        frame.loc[group.index, "p_holm"] = holm(group["p_value"].tolist())
    return Results(plan=plan, cells=cells, contrasts=frame, outcomes=compared)


def _compare(
    seed: int, contrast: Contrast, outcome: str, outcomes: Mapping[str, CellOutcomes], confidence: float
) -> Comparison | None:
    treatment, baseline = _pairs(contrast, outcome, outcomes)
    if outcome in BINARY:
        return compare_binary(treatment.astype(bool), baseline.astype(bool), confidence=confidence)
    rng = derive_rng(seed, "experiment-contrast", contrast.name, outcome)
    if outcome in RATIO:
        return compare_ratio(treatment, baseline, confidence=confidence, rng=rng)
    return compare_numeric(treatment, baseline, confidence=confidence, rng=rng)


def _pairs(
    contrast: Contrast, outcome: str, outcomes: Mapping[str, CellOutcomes]
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """The outcome of every run pair, stacked over the contrast's strata; pairs with an undefined side dropped."""
    column = RATIO.get(outcome, outcome)
    treatment: list[float] = []
    baseline: list[float] = []
    for treated, base in contrast.strata:
        treated_runs = outcomes[treated].runs[column].astype("float64").to_frame("treatment")
        joined = treated_runs.join(outcomes[base].runs[column].astype("float64").to_frame("baseline"), how="inner")
        joined = joined.dropna()
        treatment.extend(joined["treatment"])
        baseline.extend(joined["baseline"])
    return np.asarray(treatment, dtype=np.float64), np.asarray(baseline, dtype=np.float64)


def _row(contrast: Contrast, outcome: str, comparison: Comparison, confidence: float) -> dict[str, Any]:
    return {"contrast": contrast.name, "outcome": outcome, **asdict(comparison), "confidence": confidence}
