"""The results of a run plan: one row per cell, one row per contrast and outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from testbed._seeding import derive_rng
from testbed.experiment._execute import cell_dir
from testbed.experiment._outcomes import BINARY, FAMILIES, NUMERIC, CellOutcomes, cell_outcomes, cell_row
from testbed.experiment._plan import Contrast, Plan
from testbed.experiment._stats import Comparison, compare_binary, compare_numeric, holm

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
"""Columns of ``contrasts.csv``; proportions are shares in [0, 1], ``latency_ms`` in milliseconds."""


@dataclass(frozen=True)
class Results:
    """What an experiment found."""

    plan: Plan
    cells: pd.DataFrame
    """One row per cell: its levels, rates with Wilson intervals (percent), calls per run, latency."""
    contrasts: pd.DataFrame
    """One row per contrast x outcome (:data:`CONTRAST_COLUMNS`)."""
    outcomes: tuple[str, ...]
    """The outcomes compared: the families seen in any cell, task success where checked, calls, latency."""


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
    checked = any(each.runs["task_success"].notna().any() for each in outcomes.values())
    compared = (*seen, *(("task_success",) if checked else ()), *NUMERIC)
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
    return compare_numeric(treatment, baseline, confidence=confidence, rng=rng)


def _pairs(
    contrast: Contrast, outcome: str, outcomes: Mapping[str, CellOutcomes]
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """The outcome of every run pair, stacked over the contrast's strata; pairs with an undefined side dropped."""
    treatment: list[float] = []
    baseline: list[float] = []
    for treated, base in contrast.strata:
        treated_runs = outcomes[treated].runs[outcome].astype("float64").to_frame("treatment")
        joined = treated_runs.join(outcomes[base].runs[outcome].astype("float64").to_frame("baseline"), how="inner")
        joined = joined.dropna()
        treatment.extend(joined["treatment"])
        baseline.extend(joined["baseline"])
    return np.asarray(treatment, dtype=np.float64), np.asarray(baseline, dtype=np.float64)


def _row(contrast: Contrast, outcome: str, comparison: Comparison, confidence: float) -> dict[str, Any]:
    return {"contrast": contrast.name, "outcome": outcome, **asdict(comparison), "confidence": confidence}
