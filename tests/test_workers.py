"""Parallel runs: worker processes record the same events as one process, each run exactly once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from testbed.cli import main
from testbed.events import Event, ExperimentHeader, RunFinished, read_events
from testbed.orchestrator import comparable, run_experiment
from testbed.orchestrator._runner import KILL_AT_VARIABLE
from testbed.scenario import load_scenario

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"
SCENARIO = V1 / "detect_crop_incompatible.yaml"
RUNS = 4


def _record(out: Path, workers: int) -> list[Event]:
    scenario = load_scenario(SCENARIO).model_copy(update={"runs": RUNS})
    summary = anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu", workers=workers))
    assert summary.workers == workers
    return read_events(out).events


def _by_run(events: list[Event]) -> list[dict[str, Any]]:
    """Run events in deterministic order: by run, each run's events as recorded."""
    runs = [event for event in events if getattr(event, "run", None) is not None]
    return comparable(sorted(runs, key=lambda event: getattr(event, "run", 0)))


def _finished(events: list[Event]) -> list[int]:
    return [event.run for event in events if isinstance(event, RunFinished)]


@pytest.mark.slow
def test_one_and_two_workers_record_the_same_events(tmp_path: Path) -> None:
    one = _record(tmp_path / "one", workers=1)
    two = _record(tmp_path / "two", workers=2)
    assert _finished(two) == list(range(RUNS))  # the parent writes in run order
    assert _by_run(two) == _by_run(one)
    header_one, header_two = one[0], two[0]
    assert isinstance(header_one, ExperimentHeader)
    assert isinstance(header_two, ExperimentHeader)
    assert header_two.experiment_id == header_one.experiment_id
    assert [s.alias for s in header_two.servers] == [s.alias for s in header_one.servers]


@pytest.mark.slow
def test_a_worker_that_dies_mid_run_has_the_run_retried_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KILL_AT_VARIABLE, "worker-run-1")  # the worker taking run 1 SIGKILLs itself, the first time
    events = _record(tmp_path / "exp", workers=2)
    assert _finished(events) == list(range(RUNS))
    assert sorted(path.name for path in (tmp_path / "exp" / "workers").iterdir()) == [
        "worker-0",
        "worker-1",
        "worker-2",
    ]


@pytest.mark.parametrize("value", ["0", "-3"])
def test_workers_below_one_is_a_one_line_error(tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(main, ["run", str(SCENARIO), "--workers", value, "--out", str(tmp_path / "exp")])
    assert result.exit_code != 0
    assert [line for line in result.output.splitlines() if line.strip()] == [
        f"Error: --workers must be at least 1, not {value}"
    ]
    assert not (tmp_path / "exp").exists()


def test_more_workers_than_runs_are_capped_with_a_note(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = CliRunner().invoke(
        main, ["run", str(SCENARIO), "--runs", "1", "--workers", "3", "--out", str(out), "--no-violations"]
    )
    assert result.exit_code == 0, result.output
    assert "--workers 3 capped to 1: 1 run(s) left to record" in result.output
    assert _finished(read_events(out).events) == [0]


@pytest.mark.slow
def test_a_server_that_cannot_start_in_a_worker_is_its_own_error(tmp_path: Path) -> None:
    broken = f'{{command: ["{sys.executable}", "-c", "import sys; sys.exit(3)"]}}'
    path = tmp_path / "broken.yaml"
    path.write_text(SCENARIO.read_text().replace("{server: crop-xywh}", broken))
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, ["run", str(path), "--runs", "2", "--workers", "2", "--out", str(out)])
    assert result.exit_code != 0
    assert "worker" in result.output
    assert "crop" in result.output
    assert "exited" not in result.output, "the worker's own error, not only that it exited"
    assert "Traceback" not in result.output
    assert not (out / "events.jsonl").exists()
