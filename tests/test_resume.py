"""Crash safety: a killed experiment resumes with every run exactly once; torn lines are dropped and reported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import numpy as np
import pytest
from click.testing import CliRunner

from testbed._seeding import derive_rng
from testbed.cli import main
from testbed.events import ExperimentHeader, RunFinished, read_events
from testbed.orchestrator import ExperimentFinishedError, run_experiment
from testbed.orchestrator._runner import KILL_AT_VARIABLE
from testbed.scenario import load_scenario

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"
RUNS = 30


def _finished_runs(out: Path) -> list[int]:
    return [event.run for event in read_events(out).events if isinstance(event, RunFinished)]


def _command(out: Path, runs: int = RUNS, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "testbed", "run", str(V1 / "detect_crop.yaml"), "--runs", str(runs),
            "--out", str(out), "--device", "cpu", "--workers", str(workers), "--no-violations"]  # fmt: skip


def _resume_in_process(command: list[str]) -> tuple[int, str]:
    """Resume with the same ``testbed run`` arguments in this process: the killed one was a real process, and
    the resume needs none (it saves a process start, which imports torch, per test)."""
    assert command[1:3] == ["-m", "testbed"]
    result = CliRunner().invoke(main, command[3:])
    return result.exit_code, f"{result.output}{result.exception!r}"


def _recorded_runs(out: Path) -> int:
    path = out / "events.jsonl"
    return path.read_text().count('"event":"run_finished"') if path.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_at_ten_random_points_then_resume_records_every_run_exactly_once(tmp_path: Path, workers: int) -> None:
    out = tmp_path / "exp"
    rng = derive_rng(2026, "sigkill-points")
    # Ten kill points: after a random number of recorded runs, plus a random moment inside the next run.
    targets = sorted(int(v) for v in rng.choice(np.arange(1, RUNS - 1), size=10, replace=False))
    kills = 0
    for target, pause in zip(targets, rng.uniform(0.0, 0.15, size=10), strict=True):
        process = subprocess.Popen(_command(out, workers=workers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and _recorded_runs(out) < target and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(float(pause))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
    exit_code, output = _resume_in_process(_command(out, workers=workers))
    assert exit_code == 0, output[-2000:]
    runs = _finished_runs(out)
    assert sorted(runs) == list(range(RUNS))
    assert len(runs) == len(set(runs))
    assert kills >= 8


def test_torn_last_line_is_dropped_and_reported(tmp_path: Path) -> None:
    scenario = load_scenario(V1 / "detect_crop.yaml").model_copy(update={"runs": 3})
    out = tmp_path / "exp"
    anyio.run(lambda: run_experiment(scenario.model_copy(update={"runs": 2}), out_dir=out, device="cpu"))
    events_file = out / "events.jsonl"
    lines = events_file.read_text().splitlines(keepends=True)
    # Drop the "finished" line and tear the last run's final line, as a SIGKILL mid-write would.
    events_file.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])
    log = read_events(out)
    assert log.torn_line == len(lines) - 1
    summary = anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    assert summary.resume_note is not None
    assert "torn" in summary.resume_note
    assert sorted(_finished_runs(out)) == [0, 1, 2]


def test_finished_experiment_says_so_and_changes_nothing(tmp_path: Path) -> None:
    scenario = load_scenario(V1 / "detect_crop.yaml").model_copy(update={"runs": 1})
    out = tmp_path / "exp"
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    before = (out / "events.jsonl").read_bytes()
    with pytest.raises(ExperimentFinishedError, match="already finished"):
        anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    assert (out / "events.jsonl").read_bytes() == before


def test_a_directory_from_another_scenario_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    first = load_scenario(V1 / "detect_crop.yaml").model_copy(update={"runs": 1})
    anyio.run(lambda: run_experiment(first, out_dir=out, device="cpu"))
    before = (out / "events.jsonl").read_bytes()
    result = CliRunner().invoke(main, ["run", str(V1 / "fanout.yaml"), "--runs", "1", "--out", str(out)])
    assert result.exit_code != 0
    assert "not this scenario and seed" in result.output
    assert (out / "events.jsonl").read_bytes() == before


def test_another_seed_is_another_experiment(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    scenario = load_scenario(V1 / "detect_crop.yaml").model_copy(update={"runs": 1})
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    result = CliRunner().invoke(main, ["run", str(V1 / "detect_crop.yaml"), "--seed", "9", "--out", str(out)])
    assert result.exit_code != 0
    assert "not this scenario and seed" in result.output


def test_resume_continues_a_partially_recorded_experiment(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    scenario = load_scenario(V1 / "detect_crop.yaml")
    anyio.run(lambda: run_experiment(scenario.model_copy(update={"runs": 2}), out_dir=out, device="cpu"))
    lines = (out / "events.jsonl").read_text().splitlines(keepends=True)
    (out / "events.jsonl").write_text("".join(lines[:-1]))  # killed before "finished" was written
    summary = anyio.run(lambda: run_experiment(scenario.model_copy(update={"runs": 4}), out_dir=out, device="cpu"))
    assert summary.resumed_runs == 2
    assert sorted(_finished_runs(out)) == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("step", ["sandbox", "servers", "blobs", "header"])
def test_sigkill_while_creating_an_experiment_then_resume_starts_it_afresh(
    tmp_path: Path, step: str, workers: int
) -> None:
    out = tmp_path / "exp"
    environment = {**os.environ, KILL_AT_VARIABLE: step}
    command = _command(out, runs=2, workers=workers)
    killed = subprocess.run(command, env=environment, capture_output=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "events.jsonl").exists()
    exit_code, output = _resume_in_process(command)
    assert exit_code == 0, output[-2000:]
    events = read_events(out).events
    assert isinstance(events[0], ExperimentHeader)
    assert sum(isinstance(event, ExperimentHeader) for event in events) == 1
    assert sorted(_finished_runs(out)) == [0, 1]
    assert not (out / "events.jsonl.tmp").exists()


@pytest.mark.parametrize("content", ["", '{"time": 1.0, "event": "hea'])
def test_a_log_without_a_complete_header_is_started_afresh(tmp_path: Path, content: str) -> None:
    """What a SIGKILL during creation left behind before the header was written atomically."""
    out = tmp_path / "exp"
    (out / "sandbox" / "run-0").mkdir(parents=True)
    (out / "sandbox" / "run-0" / "stale.txt").write_text("not a recorded run")
    (out / "events.jsonl").write_text(content)
    scenario = load_scenario(V1 / "detect_crop.yaml").model_copy(update={"runs": 1})
    summary = anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    assert summary.resume_note is not None
    assert "started afresh" in summary.resume_note
    assert _finished_runs(out) == [0]
    assert not (out / "sandbox" / "run-0" / "stale.txt").exists()
