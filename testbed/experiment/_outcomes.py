"""Per-run outcomes of each cell, read from its recording, and each cell's headline rates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from testbed.analysis import open_experiment
from testbed.catalog import CATEGORIES
from testbed.events import CallOutcomeKind
from testbed.experiment._plan import Cell
from testbed.metrics import wilson_interval

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BINARY", "FAMILIES", "NUMERIC", "CellOutcomes", "cell_outcomes", "cell_row"]

FAMILIES: Final = CATEGORIES
"""The violation families: the catalog's categories (an ID's prefix before the dot)."""
TASK: Final = "task_success"
NUMERIC: Final = ("calls", "latency_ms")
"""Per-run counts and means compared by their paired mean difference."""
BINARY: Final = (*FAMILIES, TASK)
"""Per-run yes/no outcomes compared as paired proportions: a family's "run affected", and task success."""


@dataclass(frozen=True)
class CellOutcomes:
    """One cell's outcomes, one row per complete run (indexed by run)."""

    cell: Cell
    runs: pd.DataFrame
    """Columns: each family (bool: the run has >= 1 occurrence), ``task_success`` (1.0, 0.0, or NaN where the
    task is not checked), ``calls`` (tool calls made) and ``latency_ms`` (mean duration of its executed calls)."""


def cell_outcomes(cell: Cell, directory: Path) -> CellOutcomes:
    """Read one cell's runs: violations from the registered validators, the rest from ``events.jsonl``."""
    experiment = open_experiment(directory)
    runs = experiment.runs.set_index("run").sort_index()
    frame = runs[["calls"]].copy()
    frame[TASK] = runs["task_passed"].map({True: 1.0, False: 0.0}).astype("float64")
    calls = experiment.calls
    executed = calls[calls["outcome"] != CallOutcomeKind.SKIPPED.value]
    frame["latency_ms"] = (executed.groupby("run")["duration_s"].mean() * 1000.0).reindex(frame.index)
    violations = experiment.violations
    for family in FAMILIES:
        affected = set(violations.loc[violations["category"] == family, "run"])
        frame[family] = frame.index.isin(sorted(affected))
    return CellOutcomes(cell=cell, runs=frame)


def cell_row(outcomes: CellOutcomes, *, confidence: float) -> dict[str, object]:
    """The cell's line of ``cells.csv``: its levels, then each rate with its Wilson interval (in percent)."""
    frame = outcomes.runs
    row: dict[str, object] = {"cell": outcomes.cell.id, **dict(outcomes.cell.levels), "runs": len(frame)}
    checked = frame[TASK].dropna()
    for name, series in [(TASK, checked), *((family, frame[family]) for family in FAMILIES)]:
        hits, count = int(series.sum()), len(series)
        interval = wilson_interval(hits, count, confidence).scaled(100.0) if count else None
        row[f"{name}_percent"] = interval.estimate if interval else None
        row[f"{name}_low"] = interval.low if interval else None
        row[f"{name}_high"] = interval.high if interval else None
    row["calls_per_run"] = float(frame["calls"].mean()) if len(frame) else None
    row["latency_ms"] = float(frame["latency_ms"].mean()) if frame["latency_ms"].notna().any() else None
    return row
