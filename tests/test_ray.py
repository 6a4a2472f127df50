"""Runs on Ray: actors record the same events as one local process, each run once; bad addresses fail fast.

``./dev test`` installs Ray (the ``dev`` extra pulls ``ray``). Outside CI a machine
without it skips the tests that need a cluster; under ``CI=true`` a missing Ray fails them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from testbed.cli import main
from testbed.events import Event, ExperimentHeader, RunFinished, read_events
from testbed.orchestrator import RayExecutor, comparable, run_experiment
from testbed.orchestrator import _ray as ray_executor
from testbed.orchestrator._ray import _ActorWorker
from testbed.orchestrator._runner import KILL_AT_VARIABLE
from testbed.orchestrator._workers import Failed, WorkerSetup
from testbed.scenario import load_scenario

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"
SCENARIO = V1 / "detect_crop_incompatible.yaml"
RUNS = 4
GCS_BOUND_S = 2.0
"""The bound the test sets on waiting for a listening address to answer as Ray's GCS (the CLI waits 20 s)."""
CONNECT_BOUND_S = 12.0
"""The promise for an address where no Ray cluster answers (the probes take at most 5 s + GCS_BOUND_S)."""


def _ray_or_skip() -> Any:
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("ray is missing in CI: the dev extra installs it (./dev test)")
        pytest.skip("ray is not installed: pip install 'mcp-vision-testbed[ray]'")
    return ray


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs, shared by this module's tests (an executor uses it and leaves it open)."""
    ray = _ray_or_skip()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2
    )
    yield
    ray.shutdown()


def _record(out: Path, *, ray: bool, workers: int) -> list[Event]:
    scenario = load_scenario(SCENARIO).model_copy(update={"runs": RUNS})
    if not ray:
        anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu", workers=workers))
        return read_events(out).events
    with RayExecutor() as executor:
        summary = anyio.run(
            lambda: run_experiment(scenario, out_dir=out, device="cpu", workers=workers, executor=executor)
        )
    assert summary.workers == workers
    return read_events(out).events


def _by_run(events: list[Event]) -> list[dict[str, Any]]:
    """Run events in deterministic order: by run, each run's events as recorded."""
    runs = [event for event in events if getattr(event, "run", None) is not None]
    return comparable(sorted(runs, key=lambda event: getattr(event, "run", 0)))


def _finished(events: list[Event]) -> list[int]:
    return [event.run for event in events if isinstance(event, RunFinished)]


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.slow
def test_ray_actors_record_the_same_events_as_one_local_worker(tmp_path: Path, local_cluster: None) -> None:
    one = _record(tmp_path / "one", ray=False, workers=1)
    on_ray = _record(tmp_path / "ray", ray=True, workers=2)
    assert _finished(on_ray) == list(range(RUNS))  # the driver writes in run order
    assert _by_run(on_ray) == _by_run(one)
    header_one, header_ray = one[0], on_ray[0]
    assert isinstance(header_one, ExperimentHeader)
    assert isinstance(header_ray, ExperimentHeader)
    assert header_ray.experiment_id == header_one.experiment_id
    assert [s.alias for s in header_ray.servers] == [s.alias for s in header_one.servers]
    assert sorted(path.name for path in (tmp_path / "ray" / "workers").iterdir()) == ["worker-0", "worker-1"]


@pytest.mark.slow
def test_a_ray_actor_that_dies_mid_run_has_the_run_retried_once(
    tmp_path: Path, local_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KILL_AT_VARIABLE, "worker-run-1")  # the actor taking run 1 SIGKILLs itself, the first time
    events = _record(tmp_path / "exp", ray=True, workers=2)
    assert _finished(events) == list(range(RUNS))
    assert sorted(path.name for path in (tmp_path / "exp" / "workers").iterdir()) == [
        "worker-0",
        "worker-1",
        "worker-2",
    ]


def test_an_unreachable_ray_address_is_a_one_line_error_and_records_nothing(tmp_path: Path) -> None:
    _ray_or_skip()
    out = tmp_path / "exp"
    arguments = ["run", str(SCENARIO), "--executor", "ray", "--address", "127.0.0.1:1", "--out", str(out)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code != 0
    assert _lines(result.output) == [
        "Error: --address 127.0.0.1:1: no Ray cluster answers there (Connection refused); start one with "
        "`ray start --head`, or leave --address out for a local one"
    ]
    assert not out.exists()


@pytest.mark.slow
def test_an_address_where_something_else_listens_fails_within_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ray_or_skip()
    # The CLI's bound (20 s) is read at each probe; the test waits for a shorter one on the same path.
    assert ray_executor._GCS_S == 20.0
    monkeypatch.setattr(ray_executor, "_GCS_S", GCS_BOUND_S)
    out = tmp_path / "exp"
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts connections, never speaks Ray's protocol
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        result = CliRunner().invoke(
            main, ["run", str(SCENARIO), "--executor", "ray", "--address", address, "--out", str(out)]
        )
        elapsed = time.monotonic() - started
    assert result.exit_code != 0
    assert _lines(result.output) == [
        f"Error: --address {address}: something listens there, but no Ray cluster answered within 2 s"
    ]
    assert GCS_BOUND_S <= elapsed < CONNECT_BOUND_S
    assert not out.exists()


def test_executor_ray_without_ray_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError, as where it is not installed
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, ["run", str(SCENARIO), "--executor", "ray", "--out", str(out)])
    assert result.exit_code != 0
    assert _lines(result.output) == [
        "Error: --executor ray needs Ray, which is not installed: pip install 'mcp-vision-testbed[ray]'"
    ]
    assert not out.exists()


def test_an_address_without_executor_ray_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = CliRunner().invoke(main, ["run", str(SCENARIO), "--address", "127.0.0.1:6379", "--out", str(out)])
    assert result.exit_code != 0
    assert _lines(result.output) == ["Error: --address names a Ray cluster: use it with --executor ray"]
    assert not out.exists()


def _command(out: Path, runs: int) -> list[str]:
    return [sys.executable, "-m", "testbed", "run", str(V1 / "detect_crop.yaml"), "--runs", str(runs), "--out",
            str(out), "--device", "cpu", "--executor", "ray", "--workers", "2", "--no-violations"]  # fmt: skip


@pytest.mark.slow
def test_a_killed_ray_driver_resumes_with_every_run_exactly_once(tmp_path: Path) -> None:
    _ray_or_skip()
    out = tmp_path / "exp"
    runs = 12
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    process = subprocess.Popen(
        _command(out, runs),
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    events_file = out / "events.jsonl"
    while process.poll() is None and time.monotonic() < deadline:
        if events_file.exists() and events_file.read_text().count('"event":"run_finished"') >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the experiment ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = subprocess.run(
        _command(out, runs), env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    recorded = _finished(read_events(out).events)
    assert sorted(recorded) == list(range(runs))
    assert len(recorded) == len(set(recorded))


def test_importing_the_testbed_does_not_import_ray() -> None:
    code = "import sys, testbed.cli, testbed.orchestrator; print('ray' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip() == "False"


def test_an_actor_where_the_experiment_directory_is_missing_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an actor on a node without the shared filesystem says (the actor class runs here without Ray)."""
    monkeypatch.chdir(tmp_path)  # the actor moves to the driver's directory; this test's process gets its own back
    missing = tmp_path / "elsewhere" / "exp"
    setup = WorkerSetup(load_scenario(SCENARIO), lambda scratch: None, lambda pool: [], missing / "workers", "cpu")  # type: ignore[arg-type,return-value]
    answer = _ActorWorker(setup, 0, str(tmp_path), 1).ready()
    assert isinstance(answer, Failed)
    assert answer.error == (
        f"{missing}: not on Ray node {socket.gethostname()}; on a cluster the experiment directory must lie on a "
        "filesystem every node shares, at the same path"
    )
