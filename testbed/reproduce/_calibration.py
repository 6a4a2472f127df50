"""The validators' calibration beside every reproduced table: ``testbed check --accuracy``, recorded and resumable.

Each fault kind's experiment (and the fault-free baselines) is an ordinary experiment directory under
``DIR/calibration/<name>/``, so an interrupted calibration continues through the orchestrator's own resume.
A finished calibration is kept as ``calibration.json`` beside its CSV and Parquet, read back instead of
validated again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio

from testbed._errors import TestbedError
from testbed._seeding import derive_int_seed
from testbed.check import (
    CALIBRATION_FIELDS,
    RECALL_GOAL,
    AccuracyRow,
    AccuracyTable,
    RunResult,
    calibration_records,
    measure_accuracy,
)
from testbed.check._runner import applied_faults
from testbed.orchestrator import ExperimentFinishedError, run_experiment
from testbed.scenario import Scenario, load_scenario
from testbed.validators import validate_experiment

__all__ = [
    "CALIBRATION_DIR",
    "CALIBRATION_SCENARIO",
    "FULL_CALIBRATION_RUNS",
    "QUICK_CALIBRATION_RUNS",
    "Calibration",
    "calibrate",
    "calibration_csv",
    "calibration_dir",
]

CALIBRATION_SCENARIO: Final = Path(__file__).resolve().parents[2] / "scenarios" / "v1" / "faults.yaml"
"""Configures every fault kind once: each kind's target comes from here."""
CALIBRATION_DIR: Final = "calibration"
QUICK_CALIBRATION_RUNS: Final = 20
FULL_CALIBRATION_RUNS: Final = 800
"""At p = 0.5 every kind applies in at least 384 of 800 runs: enough for a recall lower bound of 0.99 with no miss."""
_RESULT_FILE: Final = "calibration.json"
_PAPER_COMMAND: Final = "reproduce paper"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Calibration:
    """The measured calibration and where it lives."""

    table: AccuracyTable
    directory: Path
    recorded: int
    """Runs recorded by this process (0 when everything was there already)."""

    @property
    def files(self) -> list[Path]:
        return [self.directory / "calibration.csv", self.directory / "calibration.parquet"]

    def family_link(self, family: str) -> str:
        """What the calibration says about the validators of ``family``: the worst recall and false-positive bounds."""
        rows = [row for row in self.table.rows if row.violation_id.startswith(f"{family}.")]
        if not rows:
            return "not calibrated: no fault kind injects what this family detects"
        ids = ", ".join(dict.fromkeys(row.violation_id for row in rows))
        recalls = [(interval.low, row) for row in rows if (interval := row.recall_interval()) is not None]
        falses = [(interval.high, row) for row in rows if (interval := row.false_positive_interval()) is not None]
        parts = [f"{ids} over {len(rows)} fault kind(s)"]
        if recalls:
            low, worst = min(recalls, key=lambda pair: pair[0])
            parts.append(f"recall >= {low:.3f} ({worst.kind}: {worst.detected_runs}/{worst.applied_runs})")
        if falses:
            high, worst = max(falses, key=lambda pair: pair[0])
            flags = f"{worst.false_positive_runs}/{worst.clean_runs}"
            parts.append(f"false positives <= {high:.3f} ({worst.kind}: {flags})")
        return "; ".join(parts)

    def goal_line(self) -> str:
        """How many fault kinds reach the recall goal's lower bound."""
        bounds = [interval.low for row in self.table.rows if (interval := row.recall_interval()) is not None]
        met = sum(low >= RECALL_GOAL for low in bounds)
        return (
            f"recall lower bound >= {RECALL_GOAL:g} for {met} of {len(bounds)} calibrated rows "
            f"({self.table.runs} runs per fault kind)"
        )


def calibration_dir(out_dir: Path) -> Path:
    """Where a reproduce part keeps its calibration: the enclosing ``reproduce paper`` run's, when it is one of its
    parts (so every part of one paper run reads the same calibration), else its own ``calibration/``."""
    parent_manifest = out_dir.resolve().parent / "manifest.json"
    try:
        in_paper = json.loads(parent_manifest.read_text(encoding="utf-8")).get("command") == _PAPER_COMMAND
    except (OSError, ValueError, AttributeError):
        in_paper = False
    return (out_dir.resolve().parent if in_paper else out_dir) / CALIBRATION_DIR


def calibration_csv(table: AccuracyTable) -> str:
    """The calibration records as CSV (missed runs joined by ``;``), as ``testbed check --accuracy --format csv``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CALIBRATION_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in calibration_records([table]):
        writer.writerow({**record, "missed_runs": ";".join(str(run) for run in record["missed_runs"])})
    return buffer.getvalue()


def _identity(scenario: Scenario, runs: int) -> dict[str, Any]:
    digest = hashlib.sha256(CALIBRATION_SCENARIO.read_bytes()).hexdigest()
    return {"scenario_sha256": digest, "seed": scenario.seed, "runs": runs}


def _record_row(record: dict[str, Any]) -> AccuracyRow:
    return AccuracyRow(
        kind=record["fault_kind"],
        violation_id=record["violation_id"],
        applied_runs=record["applied_runs"],
        detected_runs=record["detected_runs"],
        clean_runs=record["clean_runs"],
        false_positive_runs=record["false_positive_runs"],
        missed=tuple(record["missed_runs"]),
    )


def _read_finished(directory: Path, identity: dict[str, Any]) -> AccuracyTable | None:
    path = directory / _RESULT_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document["identity"] != identity:
            raise TestbedError(
                f"{directory}: holds a calibration of {document['identity']}, not {identity}; choose another --out"
            )
        rows = tuple(_record_row(record) for record in document["rows"])
        return AccuracyTable(document["scenario"], document["runs"], document["probability"], rows)
    except (ValueError, KeyError, TypeError) as error:
        raise TestbedError(f"{path}: cannot read the finished calibration: {error}") from None


def _write(directory: Path, table: AccuracyTable, identity: dict[str, Any]) -> None:
    import pandas as pd

    text = calibration_csv(table)
    (directory / "calibration.csv").write_text(text, encoding="utf-8")
    frame = pd.read_csv(io.StringIO(text), dtype={"missed_runs": "string"}, keep_default_na=False, na_values=[""])
    frame.to_parquet(directory / "calibration.parquet", index=False)
    document = {
        "identity": identity,
        "scenario": table.scenario,
        "runs": table.runs,
        "probability": table.probability,
        "rows": calibration_records([table]),
    }
    tmp = directory / f"{_RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    tmp.replace(directory / _RESULT_FILE)  # written last: its presence means every experiment finished


def calibrate(directory: Path, *, runs: int, seed: int, progress: Progress | None = None) -> Calibration:
    """Measure every fault kind's recall and false positives at ``runs`` runs, recorded under ``directory``.

    The scenario's seed is derived from ``seed``; an interrupted calibration resumes without losing or repeating
    a run, and a finished one is read back.

    Raises:
        TestbedError: ``runs`` below 1, or ``directory`` holds a calibration of another size or seed.
    """
    if runs < 1:
        raise TestbedError(f"calibration runs: at least 1, not {runs}")
    scenario = load_scenario(CALIBRATION_SCENARIO)
    scenario = scenario.model_copy(update={"seed": derive_int_seed(seed, "calibration")})
    identity = _identity(scenario, runs)
    finished = _read_finished(directory, identity)
    if finished is not None:
        return Calibration(finished, directory, recorded=0)
    directory.mkdir(parents=True, exist_ok=True)
    recorded = 0

    def run_recorded(name: str, variant: Scenario) -> RunResult:
        nonlocal recorded
        experiment_dir = directory / name

        async def main() -> None:
            nonlocal recorded
            try:
                summary = await run_experiment(variant, out_dir=experiment_dir, device="cpu")
                recorded += summary.runs - summary.resumed_runs
            except ExperimentFinishedError:
                pass

        anyio.run(main)
        validation = validate_experiment(experiment_dir)
        return RunResult(validation=validation, applied=applied_faults(validation))

    table = measure_accuracy(scenario, runs=runs, progress=progress, runner=run_recorded)
    _write(directory, table, identity)
    return Calibration(table, directory, recorded=recorded)
