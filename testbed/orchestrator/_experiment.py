"""Run an experiment: N seeded runs of a scenario, servers started once, everything recorded."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testbed._errors import TestbedError
from testbed._versions import package_versions
from testbed.agent import ModelEvents, NodeResult
from testbed.events import (
    BLOBS_DIR,
    EVENTS_FILE,
    EVENTS_FORMAT_VERSION,
    READABLE_FORMAT_VERSIONS,
    CallEvent,
    CallOutcomeKind,
    EventLog,
    ExperimentFinished,
    ExperimentHeader,
    FaultEvent,
    LoadedLog,
    MessageEvent,
    RunFinished,
    ServerRecord,
    read_events,
)
from testbed.events._store import EVENTS_TMP_FILE
from testbed.faults import FaultInjector, FaultPlan
from testbed.orchestrator._agents import live_models
from testbed.orchestrator._pool import ServerPool
from testbed.orchestrator._resolvers import configured_weights, live_servers
from testbed.orchestrator._run import RunOutcome, TaskChecker
from testbed.orchestrator._runner import Runner, crash_point, execute_runs
from testbed.orchestrator._workers import WORKERS_DIR, Executor, LocalProcesses, WorkerSetup, run_in_workers
from testbed.registry import registry
from testbed.scenario import Scenario
from testbed.scenes import Scene
from testbed.server_config import ServerConfig
from testbed.tasks import check_task
from testbed.telemetry import scenario_spans
from testbed.transport import Connection, TransportKind
from testbed.vision import SHIPPED_MODELS, resolve_device

ProgressCallback = Callable[[int, int], None]


class ExperimentFinishedError(TestbedError):
    """The experiment directory already holds every run."""


@dataclass
class ExperimentSummary:
    """Headline numbers of a finished experiment."""

    directory: Path
    runs: int
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    resumed_runs: int = 0
    """Runs that an earlier, interrupted process had already recorded."""
    resume_note: str | None = None
    tasks_passed: int = 0
    tasks_checked: int = 0
    duration_s: float = 0.0
    workers: int = 1
    """Worker processes that executed the runs (1: this process)."""
    workers_note: str | None = None
    """Why fewer workers ran than were asked for, if they did."""


RECORDED_PACKAGES = ("mcp-vision-testbed", "mcp", "torch", "torchvision", "ultralytics-opencv-headless", "numpy")
"""The packages whose versions a run header records."""


def experiment_id(scenario: Scenario) -> str:
    """A stable identity of (resolved scenario, seed), independent of the run count."""
    document = scenario.model_dump(mode="json", exclude={"runs"})
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def scene_for_run(scenario: Scenario, run: int, base_dir: Path | None) -> Scene:
    """The scene of run ``run``, from the scenario's scene source (drawn from the seed, or the run-th image)."""
    name, spec = scenario.scene.selected
    return registry().scene_source(name).load(spec, seed=scenario.seed, run=run, base_dir=base_dir)


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        completed = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() or None


def _weights_hashes() -> dict[str, str]:
    """The weights each task uses as configured here (``TESTBED_*_WEIGHTS``, else the shipped ones)."""
    configured = configured_weights(ServerConfig.from_env(), SHIPPED_MODELS)
    return {task: weights.sha256 for task, weights in configured.items() if weights.sha256 is not None}


def _server_record(connection: Connection) -> ServerRecord:
    info, external = connection.client.server_info, connection.external
    return ServerRecord(
        alias=connection.alias,
        server=connection.server,
        transport=connection.transport,
        protocol_version=connection.protocol_version,
        server_info=info.model_dump(mode="json", exclude_none=True) if info is not None else None,
        tools=[tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in connection.tools],
        truth=_manifest(connection),
        truth_mode=connection.truth_mode,
        command=list(external.command) if external is not None and external.command is not None else None,
        url=external.url if external is not None else None,
        weights=connection.weights,
    )


def _manifest(connection: Connection) -> dict[str, object] | None:
    """The truth manifest to record: a registered server's or a truth file's, never one derived from declarations."""
    if connection.truth_mode != "truth" or connection.truth is None:
        return None
    return connection.truth.model_dump(mode="json")


@dataclass(frozen=True)
class ResumePoint:
    """Where a killed experiment directory can continue from."""

    done_runs: frozenset[int]
    finished: bool
    note: str | None
    """What was dropped (a torn last line, the events of an unfinished run), if anything."""
    started: bool = True
    """False where creation was interrupted before the header was complete: start afresh."""


def prepare_resume(out_dir: Path, scenario: Scenario) -> ResumePoint | None:
    """Check an existing experiment directory and cut it back to its last complete run.

    A directory whose creation was killed before its header was complete (no log but a
    temporary header, an empty log, or a log of one torn line) is emptied of the log and the
    sandbox and reported as not started (``started=False``): nothing in it is a recorded run.

    Returns:
        None when the directory holds no experiment yet.

    Raises:
        TestbedError: it holds a different experiment or another format version.
    """
    path = out_dir / EVENTS_FILE
    tmp_header = out_dir / EVENTS_TMP_FILE
    if not path.exists() and not tmp_header.exists():
        return None
    log = read_events(out_dir) if path.exists() else LoadedLog(events=[], torn_line=None)
    if not log.events:
        path.unlink(missing_ok=True)
        tmp_header.unlink(missing_ok=True)
        shutil.rmtree(out_dir / "sandbox", ignore_errors=True)
        note = "its creation was interrupted before the header was complete; started afresh"
        return ResumePoint(done_runs=frozenset(), finished=False, note=note, started=False)
    header = log.events[0]
    if not isinstance(header, ExperimentHeader):
        raise TestbedError(f"{path}: does not start with an experiment header; refusing to append to it")
    if header.format_version not in READABLE_FORMAT_VERSIONS:
        raise TestbedError(
            f"{path}: event format version {header.format_version}, this testbed reads "
            f"{', '.join(map(str, sorted(READABLE_FORMAT_VERSIONS)))} and writes {EVENTS_FORMAT_VERSION}"
        )
    if header.experiment_id != experiment_id(scenario):
        raise TestbedError(
            f"{out_dir}: holds experiment {header.scenario.get('name')!r} (seed {header.seed}), not this scenario and "
            "seed; choose another --out"
        )
    keep = 0  # events up to the last consistent point: header, handshake, whole runs
    done: set[int] = set()
    for index, event in enumerate(log.events):
        if isinstance(event, RunFinished):
            done.add(event.run)
            keep = index + 1
        elif index == keep and (isinstance(event, ExperimentHeader) or getattr(event, "run", 0) is None):
            keep = index + 1
    finished = any(isinstance(event, ExperimentFinished) for event in log.events)
    dropped = len(log.events) - keep - (1 if finished else 0)
    notes = []
    if log.torn_line is not None:
        notes.append(f"dropped a torn last line (line {log.torn_line})")
    if dropped > 0 and not finished:
        notes.append(f"dropped {dropped} event(s) of an unfinished run")
    if not finished and (log.torn_line is not None or dropped > 0):
        lines = path.read_text(encoding="utf-8").split("\n")
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines[:keep]), encoding="utf-8")
        tmp.replace(path)
    return ResumePoint(done_runs=frozenset(done), finished=finished, note="; ".join(notes) or None)


@dataclass(frozen=True)
class _LiveRunner:
    """Builds the runner that records live runs; picklable, so worker processes build their own."""

    scenario: Scenario
    scenario_path: Path | None
    out_dir: Path
    transport: TransportKind | None
    device: str

    def __call__(self, scratch: Path | None = None, models: ModelEvents | None = None) -> Runner:
        """The runner; a worker passes its ``scratch`` folder (its servers' logs), blobs still go to ``out_dir``."""
        sandbox = (self.out_dir / "sandbox").resolve()
        base_dir = self.scenario_path.parent if self.scenario_path is not None else None
        scenario = self.scenario
        return Runner(
            resolve=live_servers(sandbox=sandbox, device=self.device, transport=self.transport),
            fault_hook=_injector,
            scene_of=lambda run: (scene_for_run(scenario, run, base_dir), None),
            models=models if models is not None else live_models(scenario),
            check_task=task_checker(scenario),
            log_dir=scratch if scratch is not None else self.out_dir,
            sandbox=sandbox,
            servers_dir=scratch if scratch is not None else self.out_dir,
            device=self.device,
            blobs_dir=self.out_dir / BLOBS_DIR if scratch is not None else None,
        )


def _server_records(pool: ServerPool) -> list[ServerRecord]:
    return [_server_record(connection) for connection in pool.connections.values()]


def _worker_count(requested: int | None, runs_left: int, executor: Executor) -> tuple[int, str | None]:
    """How many workers to start: ``requested``, else the executor's default; never more than one per run left."""
    if requested is not None and requested < 1:
        raise TestbedError(f"--workers must be at least 1, not {requested}")
    wanted = requested if requested is not None else executor.default_workers(runs_left)
    count = max(1, min(wanted, runs_left))
    if requested is not None and requested > count:
        return count, f"--workers {requested} capped to {count}: {runs_left} run(s) left to record"
    return count, None


async def run_experiment(
    scenario: Scenario,
    *,
    out_dir: Path,
    scenario_path: Path | None = None,
    transport: TransportKind | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    models: ModelEvents | None = None,
    workers: int | None = 1,
    executor: Executor | None = None,
) -> ExperimentSummary:
    """Run every run of ``scenario`` and record it under ``out_dir``, continuing a killed experiment there.

    Args:
        scenario: the resolved scenario (runs and seed already overridden).
        out_dir: the experiment directory: new, or one this scenario and seed started (resumed).
        scenario_path: where the scenario came from.
        transport: override every server's transport.
        device: compute device for the servers' models.
        progress: called with (runs done, runs total) after each run.
        models: the agent's model clients (by default live ones for the scenario's agent, recording);
            given, the runs are executed in this process whatever ``workers`` says.
        workers: worker processes, each with its own servers (None: the CPUs this process may use),
            at most one per run left; 1 executes the runs in this process unless an ``executor`` is given.
        executor: where the workers run (default: processes on this machine); given, even one worker runs there.

    Raises:
        TestbedError: the directory holds another experiment or is finished, a server cannot start,
            or ``workers`` is below 1.
    """
    resolved_device = resolve_device(device)
    resume = prepare_resume(out_dir, scenario)
    if resume is not None and (resume.finished or len(resume.done_runs) >= scenario.runs):
        raise ExperimentFinishedError(
            f"{out_dir}: experiment already finished ({len(resume.done_runs)} runs); nothing to do"
        )
    done = resume.done_runs if resume is not None else frozenset()
    runs = [run for run in range(scenario.runs) if run not in done]
    count, workers_note = _worker_count(workers, len(runs), executor or LocalProcesses())
    fresh = resume is None or not resume.started
    started = time.perf_counter()
    summary = ExperimentSummary(directory=out_dir, runs=scenario.runs, workers=count, workers_note=workers_note)
    summary.resumed_runs = len(done)
    summary.resume_note = resume.note if resume is not None else None
    live = _LiveRunner(scenario, scenario_path, out_dir, transport, resolved_device)
    recorded = len(done)

    def create(log: EventLog, servers: list[ServerRecord], handshake: list[MessageEvent]) -> None:
        if fresh:
            header = ExperimentHeader(
                time=time.time(),
                experiment_id=experiment_id(scenario),
                scenario=scenario.model_dump(mode="json"),
                scenario_path=str(scenario_path) if scenario_path else None,
                seed=scenario.seed,
                runs=scenario.runs,
                versions=package_versions(
                    ("mcp-vision-testbed", "mcp", "torch", "torchvision", "ultralytics-opencv-headless", "numpy")
                ),
                git_revision=_git_revision(),
                device=resolved_device,
                weights=_weights_hashes(),
                servers=servers,
                started_at=time.time(),
                sandbox=str((out_dir / "sandbox").resolve()),
            )
            log.create([header, *handshake], before_rename=lambda: crash_point("header"))
        if progress is not None:
            progress(len(done), scenario.runs)

    def record(log: EventLog, outcome: RunOutcome, *, report: bool = True) -> None:
        nonlocal recorded
        log.append(outcome.events)
        _tally(summary, outcome)
        recorded += 1
        if report and progress is not None:
            progress(recorded, scenario.runs)

    def finish(log: EventLog) -> None:
        log.append([ExperimentFinished(time=time.time(), runs=scenario.runs, finished_at=time.time())])

    if models is not None or scenario.observability.spans or (count == 1 and executor is None):
        summary.workers = 1  # spans are collected in this process: a traced experiment runs here
        with scenario_spans(scenario, out_dir):
            await execute_runs(
                scenario,
                live(models=models),
                runs,
                on_start=lambda pool, log, handshake: create(log, _server_records(pool), handshake),
                on_run=lambda run, outcome, log: record(log, outcome),
                on_finish=finish,
            )
    else:
        # A server that cannot be resolved fails here, before any worker starts.
        live_servers(sandbox=(out_dir / "sandbox").resolve(), device=resolved_device, transport=transport)(scenario)
        (out_dir / "sandbox").mkdir(parents=True, exist_ok=True)
        crash_point("sandbox")
        log = EventLog(out_dir)
        try:
            crash_point("blobs")

            def ready(servers: list[ServerRecord], handshake: list[MessageEvent]) -> None:
                crash_point("servers")
                create(log, servers, handshake)

            def finished_so_far(finished: int) -> None:
                if progress is not None:
                    progress(len(done) + finished, scenario.runs)

            run_in_workers(
                WorkerSetup(scenario, live, _server_records, out_dir / WORKERS_DIR, resolved_device),
                runs,
                workers=count,
                on_ready=ready,
                on_run=lambda run, outcome: record(log, outcome, report=False),  # progress counts finished runs
                on_progress=finished_so_far,
                executor=executor,
            )
            finish(log)
        finally:
            log.close()
    summary.duration_s = time.perf_counter() - started
    return summary


def _tally(summary: ExperimentSummary, outcome: RunOutcome) -> None:
    summary.calls += outcome.calls
    for event in outcome.events:
        if isinstance(event, CallEvent):
            summary.outcomes[event.outcome.value] += 1
        elif isinstance(event, FaultEvent):
            summary.faults[event.kind] += 1
    if outcome.task_passed is not None:
        summary.tasks_checked += 1
        summary.tasks_passed += int(outcome.task_passed)


def task_checker(scenario: Scenario) -> TaskChecker:
    """The scenario's task check, as the run executor calls it."""
    task = scenario.task

    def check(
        scene: Scene, results: dict[str, NodeResult], connections: dict[str, Connection]
    ) -> tuple[bool | None, str]:
        nodes = task.nodes
        if task.tool is not None:
            nodes = tuple(node for node, result in results.items() if f"{result.server}.{result.tool}" == task.tool)
            if not nodes and task.kind != "none":
                return False, f"no node called {task.tool}"
        return check_task(
            task.kind,
            nodes=nodes,
            class_name=task.class_name,
            scene=scene,
            results=results,
            connections=connections,
        )

    return check


def _injector(plan: FaultPlan, alias: str, pool: ServerPool, sink: list[FaultEvent]) -> Callable[[], FaultInjector]:
    """Each (re)started connection of ``alias`` gets a fresh injector of the scenario's faults."""

    async def kill() -> None:
        await pool.kill(alias)

    async def restart() -> None:
        await pool.request_restart(alias)

    return lambda: FaultInjector(plan, alias, on_fault=sink.append, kill=kill, restart=restart)


def outcome_counts(summary: ExperimentSummary) -> dict[str, int]:
    return {kind.value: summary.outcomes.get(kind.value, 0) for kind in CallOutcomeKind}


__all__ = [
    "ExperimentFinishedError",
    "ExperimentSummary",
    "ResumePoint",
    "experiment_id",
    "outcome_counts",
    "prepare_resume",
    "run_experiment",
    "scene_for_run",
]
