"""Parallel runs: worker processes record the same events as one process, each run exactly once."""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from testbed._errors import TestbedError
from testbed.cli import main
from testbed.events import Event, ExperimentHeader, RunFinished, read_events
from testbed.orchestrator import RunOutcome, comparable, run_experiment
from testbed.orchestrator._runner import KILL_AT_VARIABLE
from testbed.orchestrator._workers import (
    Died,
    Done,
    Ready,
    Task,
    WorkerMessage,
    WorkerPool,
    WorkerSetup,
    run_in_workers,
)
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


@dataclass
class _ScriptedPool:
    """Workers that answer at once, finishing the highest-numbered run first; ``dies`` lists runs whose worker
    dies without a word, once per listing."""

    dies: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    handed: list[Task] = field(default_factory=list)
    closed_busy: set[int] | None = None
    _answers: list[WorkerMessage] = field(default_factory=list)

    def start(self, worker: int) -> None:
        self.started.append(worker)
        self._answers.append(Ready(worker=worker, servers=[], handshake=[]))

    def assign(self, worker: int, task: Task | None) -> None:
        if task is None:
            return
        self.handed.append(task)
        run = task[0]
        if run in self.dies:
            self.dies.remove(run)
            self._answers.append(Died(worker=worker, reason="exited (code -9)"))
            return
        outcome = RunOutcome(events=[], calls=run, failed_calls=0, task_passed=None)
        self._answers.append(Done(worker=worker, run=run, outcome=outcome))

    def receive(self, timeout: float) -> WorkerMessage | None:
        if not self._answers:
            return None
        latest = max(self._answers, key=lambda message: getattr(message, "run", -1))
        self._answers.remove(latest)
        return latest

    def close(self, busy: Collection[int]) -> None:
        self.closed_busy = set(busy)


@dataclass
class _ScriptedExecutor:
    pool_: _ScriptedPool

    def default_workers(self, runs_left: int) -> int:
        return 2

    def pool(self, setup: WorkerSetup, workers: int) -> WorkerPool:
        return self.pool_


def _write(pool: _ScriptedPool, runs: list[int], workers: int = 2) -> tuple[list[int], list[int]]:
    """Run the writer over ``pool``: the runs in the order it recorded them, and the progress it reported."""
    setup = WorkerSetup(load_scenario(SCENARIO), lambda scratch: None, lambda pool: [], Path("unused"), "cpu")  # type: ignore[arg-type,return-value]
    recorded: list[int] = []
    progress: list[int] = []
    run_in_workers(
        setup,
        runs,
        workers=workers,
        on_ready=lambda servers, handshake: None,
        on_run=lambda run, outcome: recorded.append(outcome.calls),
        on_progress=progress.append,
        executor=_ScriptedExecutor(pool),
    )
    return recorded, progress


def test_the_writer_records_in_run_order_whatever_order_runs_finish_in() -> None:
    pool = _ScriptedPool()
    recorded, progress = _write(pool, [3, 0, 2, 1, 4])
    assert recorded == [0, 1, 2, 3, 4]
    assert progress == [1, 2, 3, 4, 5]
    assert sorted(run for run, _ in pool.handed) == [0, 1, 2, 3, 4]
    assert pool.closed_busy == set()


def test_the_writer_retries_a_dead_workers_run_once_in_a_fresh_worker() -> None:
    pool = _ScriptedPool(dies=[1])
    recorded, _ = _write(pool, [0, 1, 2])
    assert recorded == [0, 1, 2]
    assert pool.started == [0, 1, 2]
    assert [task for task in pool.handed if task[0] == 1] == [(1, 0), (1, 1)]


def test_the_writer_gives_up_on_a_run_whose_worker_died_twice() -> None:
    pool = _ScriptedPool(dies=[1, 1])
    with pytest.raises(TestbedError, match=r"run 1: its worker died twice \(exited \(code -9\)\); giving up"):
        _write(pool, [0, 1, 2])
