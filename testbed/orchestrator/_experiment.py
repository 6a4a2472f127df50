"""Run an experiment: N seeded runs of a scenario, servers started once, everything recorded."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from agents import build_agent
from servers import ServerConfig, get_server
from testbed._errors import TestbedError
from testbed._seeding import derive_seed_sequence
from testbed.events import (
    EVENTS_FILE,
    SERVER_LOGS_DIR,
    CallOutcomeKind,
    EventLog,
    ExperimentFinished,
    ExperimentHeader,
    ServerRecord,
    externalize,
)
from testbed.orchestrator._run import execute_run
from testbed.scenario import Scenario
from testbed.scenes import Scene, generate_scene, load_image_folder, load_scene, packaged_images
from testbed.tasks import check_task
from testbed.transport import Connection, TransportKind, connect
from testbed.vision import SHIPPED_MODELS, WEIGHTS_DIR, resolve_device
from testbed.vision._weights import file_sha256

ProgressCallback = Callable[[int, int], None]


@dataclass
class ExperimentSummary:
    """Headline numbers of a finished experiment."""

    directory: Path
    runs: int
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    tasks_passed: int = 0
    tasks_checked: int = 0
    duration_s: float = 0.0


def experiment_id(scenario: Scenario) -> str:
    """A stable identity of (resolved scenario, seed), independent of the run count."""
    document = scenario.model_dump(mode="json", exclude={"runs"})
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def scene_for_run(scenario: Scenario, run: int, base_dir: Path | None) -> Scene:
    """The scene of run ``run``: drawn from the seed, or the run-th image of a fixed set (cycled)."""
    source = scenario.scene
    if source.synthetic is not None:
        return generate_scene(source.synthetic, derive_seed_sequence(scenario.seed, "scene", run))
    images = source.images
    assert images is not None
    if images.packaged:
        available = packaged_images()
        name = images.packaged[run % len(images.packaged)]
        if name not in available:
            raise TestbedError(f"scene.images.packaged: no packaged image {name!r}; known: {', '.join(available)}")
        return load_scene(available[name])
    if images.paths:
        path = Path(images.paths[run % len(images.paths)])
        return load_scene(path if path.is_absolute() or base_dir is None else base_dir / path)
    folder = Path(images.folder or ".")
    scenes = load_image_folder(folder if folder.is_absolute() or base_dir is None else base_dir / folder)
    return scenes[run % len(scenes)]


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("mcp-vision-testbed", "mcp", "torch", "torchvision", "ultralytics-opencv-headless", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


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
    hashes = {}
    for task, file in SHIPPED_MODELS.items():
        path = WEIGHTS_DIR / file
        if path.exists():
            hashes[task] = file_sha256(path)
    return hashes


def _server_record(connection: Connection) -> ServerRecord:
    info = connection.client.server_info
    return ServerRecord(
        alias=connection.alias,
        server=connection.server,
        transport=connection.transport,
        protocol_version=connection.protocol_version,
        server_info=info.model_dump(mode="json", exclude_none=True) if info is not None else None,
        tools=[tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in connection.tools],
        truth=connection.truth.model_dump(mode="json") if connection.truth is not None else None,
    )


async def run_experiment(
    scenario: Scenario,
    *,
    out_dir: Path,
    scenario_path: Path | None = None,
    transport: TransportKind | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
) -> ExperimentSummary:
    """Run every run of ``scenario`` and record it under ``out_dir``.

    Args:
        scenario: the resolved scenario (runs and seed already overridden).
        out_dir: the experiment directory; must not hold an experiment yet.
        scenario_path: where the scenario came from (relative image paths resolve against it).
        transport: override every server's transport.
        device: compute device for the servers' models.
        progress: called with (runs done, runs total) after each run.

    Raises:
        TestbedError: the directory already holds an experiment, or a server cannot start.
    """
    if (out_dir / EVENTS_FILE).exists():
        raise TestbedError(f"{out_dir}: already holds an experiment; choose another --out")
    resolved_device = resolve_device(device)
    started = time.perf_counter()
    sandbox = (out_dir / "sandbox").resolve()
    summary = ExperimentSummary(directory=out_dir, runs=scenario.runs)
    base_dir = scenario_path.parent if scenario_path is not None else None
    async with AsyncExitStack() as stack:
        connections: dict[str, Connection] = {}
        for alias, ref in scenario.servers.items():
            entry = get_server(ref.server)
            kind: TransportKind = transport or ref.transport
            config = ServerConfig.from_env(device=resolved_device, sandbox=sandbox)
            connections[alias] = await stack.enter_async_context(
                connect(
                    alias,
                    ref.server,
                    kind,
                    log_dir=out_dir / SERVER_LOGS_DIR,
                    sandbox=sandbox,
                    device=resolved_device,
                    in_process_factory=lambda entry=entry, config=config: entry.build(config),
                    truth=entry.truth,
                )
            )
        log = EventLog(out_dir)
        stack.callback(log.close)
        header = ExperimentHeader(
            time=time.time(),
            experiment_id=experiment_id(scenario),
            scenario=scenario.model_dump(mode="json"),
            scenario_path=str(scenario_path) if scenario_path else None,
            seed=scenario.seed,
            runs=scenario.runs,
            versions=_versions(),
            git_revision=_git_revision(),
            device=resolved_device,
            weights=_weights_hashes(),
            servers=[_server_record(conn) for conn in connections.values()],
            started_at=time.time(),
        )
        handshake = [
            event.model_copy(update={"message": externalize(event.message, log.blobs)})
            for conn in connections.values()
            for event in conn.recorder.take(None)
        ]
        log.append([header, *handshake])
        agent = build_agent(scenario)
        task = scenario.task
        for run in range(scenario.runs):
            scene = scene_for_run(scenario, run, base_dir)
            outcome = await execute_run(
                run,
                scene=scene,
                agent=agent,
                connections=connections,
                sandbox=sandbox,
                blobs=log.blobs,
                default_deadline_s=scenario.deadline_s,
                check_task=lambda scene, results, conns: check_task(
                    task.kind,
                    nodes=task.nodes,
                    class_name=task.class_name,
                    scene=scene,
                    results=results,
                    connections=conns,
                ),
            )
            log.append(outcome.events)
            summary.calls += outcome.calls
            for event in outcome.events:
                if getattr(event, "event", None) == "call":
                    summary.outcomes[event.outcome.value] += 1  # type: ignore[union-attr]
            if outcome.task_passed is not None:
                summary.tasks_checked += 1
                summary.tasks_passed += int(outcome.task_passed)
            if progress is not None:
                progress(run + 1, scenario.runs)
        log.append([ExperimentFinished(time=time.time(), runs=scenario.runs, finished_at=time.time())])
    summary.duration_s = time.perf_counter() - started
    return summary


def outcome_counts(summary: ExperimentSummary) -> dict[str, int]:
    return {kind.value: summary.outcomes.get(kind.value, 0) for kind in CallOutcomeKind}


__all__ = ["ExperimentSummary", "experiment_id", "outcome_counts", "run_experiment", "scene_for_run"]
