"""``testbed compare``: orchestration modes side by side, figures taken from the recorded runs."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from agents import AgentModels
from testbed.check import in_process
from testbed.cli import main
from testbed.events import PlanEvent, RunFinished, read_events
from testbed.llm import RecordingLLM
from testbed.metrics import mode_row
from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario
from testbed.validators import validate_experiment
from tests._helpers import ScriptedLLM

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"


def _record(name: str, out: Path, runs: int, models: AgentModels | None = None) -> Path:
    scenario = in_process(load_scenario(V1 / f"{name}.yaml")).model_copy(update={"runs": runs})
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu", models=models))
    return out


def test_a_mode_row_counts_plans_tasks_and_violations_from_the_runs(tmp_path: Path) -> None:
    # The model plans a valid detect, then an invalid detect (a number for the image), then finishes.
    replies = [
        json.dumps({"tool": "det.detect", "for_each": None, "arguments": {"image": "$scene.image"}}),
        json.dumps({"tool": "det.detect", "for_each": None, "arguments": {"image": "$scene.height"}}),
        json.dumps({"tool": "finish"}),
    ]
    models = AgentModels(llm=RecordingLLM(ScriptedLLM(replies=replies)))
    out = _record("llm_detect_crop", tmp_path / "llm", 2, models)
    result = validate_experiment(out)
    row = mode_row("llm", result)

    events = read_events(out).events
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert (row.agent_kind, row.runs) == ("llm", 2)
    assert row.executions == sum(e.calls for e in finished)
    # Replies cycle across runs, so each run sees a different mix: count what was recorded.
    by_run: dict[int, list[bool]] = {}
    for plan in (e for e in events if isinstance(e, PlanEvent)):
        by_run.setdefault(plan.run, []).append(plan.valid)
    assert row.plan_valid_runs == sum(all(valid) for valid in by_run.values())
    assert row.plan_valid_runs < 2
    assert (row.task_passed_runs, row.task_checked_runs) == (0, 2), "no crop was ever made"
    assert row.occurrences == len(result.violations)


def test_compare_prints_one_row_per_experiment_and_writes_csv(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    scripted = recorded_v1_copy("detect_crop", tmp_path / "scripted", 2, transport="inprocess")
    multi = recorded_v1_copy("multi_detect_crop", tmp_path / "multi", 2, transport="inprocess")
    table = tmp_path / "modes.csv"

    result = CliRunner().invoke(main, ["compare", str(scripted), str(multi), "--csv", str(table)])

    assert result.exit_code == 0, result.output
    assert "scripted" in result.output
    assert "multi" in result.output
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["experiment"], r["agent_kind"], r["plan_valid_runs"]) for r in rows] == [
        ("scripted", "scripted", ""),
        ("multi", "multi", ""),
    ]
    assert rows[0]["task_passed_runs"] == "2"
    assert int(rows[1]["findings"]) >= 2, "every crop reads a handle another agent created"


def test_compare_names_a_directory_that_is_not_an_experiment(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "missing")])

    assert result.exit_code != 0
    assert "missing: no such experiment directory" in result.output


def test_compare_csv_keeps_every_rate_with_its_interval_bounds(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    scripted = recorded_v1_copy("detect_crop", tmp_path / "scripted", 2, transport="inprocess")
    table = tmp_path / "modes.csv"

    result = CliRunner().invoke(main, ["compare", str(scripted), "--csv", str(table)])

    assert result.exit_code == 0, result.output
    with table.open(encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    expected = mode_row("scripted", validate_experiment(scripted))
    for name, interval in (
        ("task_success", expected.task_success),
        ("violation_runs_per_100", expected.violation_runs_per_100),
        ("findings_per_100_executions", expected.occurrences_per_100_executions),
    ):
        assert interval is not None
        low, estimate, high = (float(row[f"{name}_low"]), float(row[name]), float(row[f"{name}_high"]))
        assert (low, estimate, high) == pytest.approx((interval.low, interval.estimate, interval.high)), name
        assert low <= estimate <= high
    assert (row["plan_validity"], row["plan_validity_low"], row["plan_validity_high"]) == ("", "", "")
