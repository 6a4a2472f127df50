"""Per-run outcomes of each cell, read from its recording, and each cell's headline rates and call latencies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from testbed.analysis import open_experiment
from testbed.catalog import CATEGORIES
from testbed.events import CallOutcomeKind, PlanEvent
from testbed.experiment._plan import Cell
from testbed.experiment._stats import quantile_interval
from testbed.metrics import wilson_interval

if TYPE_CHECKING:
    import pandas as pd

    from testbed.validators import RunRecord

__all__ = [
    "BINARY",
    "FAMILIES",
    "LATENCY_QUANTILES",
    "NUMERIC",
    "PLAN",
    "RATIO",
    "TASK",
    "CellOutcomes",
    "cell_outcomes",
    "cell_row",
]

FAMILIES: Final = CATEGORIES
"""The violation families: the catalog's categories (an ID's prefix before the dot)."""
TASK: Final = "task_success"
PLAN: Final = "plan_valid"
"""Every plan the run's agents made was valid (undefined where no agent plans for itself)."""
NUMERIC: Final = ("calls", "latency_ms")
"""Per-run counts and means compared by their paired mean difference."""
RATIO: Final = {"latency_ratio": "latency_ms"}
"""Outcomes compared as a ratio of means (treatment / baseline), by the per-run column they are computed from."""
BINARY: Final = (*FAMILIES, TASK, PLAN)
"""Per-run yes/no outcomes compared as paired proportions: a family's "run affected", task success, plan validity."""
LATENCY_QUANTILES: Final = {"median": 0.5, "p90": 0.9}
"""The per-call latency quantiles of each cell, each with an order-statistic interval."""


@dataclass(frozen=True)
class CellOutcomes:
    """One cell's outcomes, one row per complete run (indexed by run)."""

    cell: Cell
    runs: pd.DataFrame
    """Columns: each family (bool: the run has >= 1 occurrence), ``task_success`` (1.0, 0.0, or NaN where the
    task is not checked), ``plan_valid`` (1.0, 0.0, or NaN where no agent plans), ``calls`` (tool calls made)
    and ``latency_ms`` (mean duration of its executed calls)."""
    call_latency_ms: npt.NDArray[np.float64]
    """The recorded duration of every executed call of the cell's complete runs, in milliseconds."""


def cell_outcomes(cell: Cell, directory: Path) -> CellOutcomes:
    """Read one cell's runs: violations from the registered validators, the rest from ``events.jsonl``."""
    experiment = open_experiment(directory)
    runs = experiment.runs.set_index("run").sort_index()
    frame = runs[["calls"]].copy()
    frame[TASK] = runs["task_passed"].map({True: 1.0, False: 0.0}).astype("float64")
    calls = experiment.calls
    executed = calls[calls["outcome"] != CallOutcomeKind.SKIPPED.value]
    frame["latency_ms"] = (executed.groupby("run")["duration_s"].mean() * 1000.0).reindex(frame.index)
    frame[PLAN] = _plan_validity(experiment.records).reindex(frame.index)
    violations = experiment.violations
    for family in FAMILIES:
        affected = set(violations.loc[violations["category"] == family, "run"])
        frame[family] = frame.index.isin(sorted(affected))
    durations = executed["duration_s"].to_numpy(dtype=np.float64) * 1000.0
    return CellOutcomes(cell=cell, runs=frame, call_latency_ms=durations[np.isfinite(durations)])


def _plan_validity(records: Sequence[RunRecord]) -> pd.Series[float]:
    """Per run: 1.0 when every plan its agents made was valid, 0.0 when one was not, NaN when none was made."""
    import pandas as pd

    validity: dict[int, float] = {}
    for record in records:
        plans = [event.valid for event in record.events if isinstance(event, PlanEvent)]
        validity[record.started.run] = float(all(plans)) if plans else float("nan")
    return pd.Series(validity, dtype="float64")


def cell_row(outcomes: CellOutcomes, *, confidence: float) -> dict[str, object]:
    """The cell's line of ``cells.csv``: its levels, then each rate with its Wilson interval (in percent)."""
    frame = outcomes.runs
    row: dict[str, object] = {"cell": outcomes.cell.id, **dict(outcomes.cell.levels), "runs": len(frame)}
    defined = [(name, frame[name].dropna()) for name in (TASK, PLAN)]
    for name, series in [*defined, *((family, frame[family]) for family in FAMILIES)]:
        hits, count = int(series.sum()), len(series)
        interval = wilson_interval(hits, count, confidence).scaled(100.0) if count else None
        row[f"{name}_percent"] = interval.estimate if interval else None
        row[f"{name}_low"] = interval.low if interval else None
        row[f"{name}_high"] = interval.high if interval else None
    row["calls_per_run"] = float(frame["calls"].mean()) if len(frame) else None
    row["latency_ms"] = float(frame["latency_ms"].mean()) if frame["latency_ms"].notna().any() else None
    row["calls_timed"] = len(outcomes.call_latency_ms)
    for name, quantile in LATENCY_QUANTILES.items():
        estimate, low, high = quantile_interval(outcomes.call_latency_ms, quantile, confidence=confidence)
        row[f"latency_{name}_ms"], row[f"latency_{name}_low"], row[f"latency_{name}_high"] = estimate, low, high
    return row
