"""Replay: re-run agents against recorded responses, compare the events, name the first difference.

Offline replay serves every server response from ``events.jsonl`` (no servers,
models or LLMs): directly, without a JSON-RPC wire, where the recording allows it
(:mod:`._direct_replay`), else through MCP sessions over a
:class:`ReplayTransport`. ``live`` replay re-runs
the recorded scenario against real servers with the same seeds (a
determinism check). Either way the new events are compared with the recorded
ones in their deterministic order, without wall-clock fields.
"""

from __future__ import annotations

import collections
import operator
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path
from typing import Any

import mcp.types as types

from testbed._errors import TestbedError
from testbed._gc import kept_objects_unscanned, leave_kept_objects_unscanned
from testbed.events import (
    BLOBS_DIR,
    READABLE_FORMAT_VERSIONS,
    WALL_CLOCK_FIELDS,
    BlobStore,
    CallEvent,
    CallOutcomeKind,
    Direction,
    Event,
    ExperimentFinished,
    ExperimentHeader,
    FaultEvent,
    MessageEvent,
    ReplayBlobs,
    RunFinished,
    RunStarted,
    read_events,
)
from testbed.faults import FaultPlan
from testbed.imaging import decode_image
from testbed.orchestrator._agents import replay_models
from testbed.orchestrator._direct_replay import recorded_objects, replay_directly
from testbed.orchestrator._experiment import experiment_id, run_experiment, task_checker
from testbed.orchestrator._pool import ServerPool
from testbed.orchestrator._resolvers import recorded_servers
from testbed.orchestrator._runner import Runner, execute_runs
from testbed.registry import RECORDED_CONTEXT
from testbed.scenario import Scenario
from testbed.scenes import SHAPE_CLASSES, Scene
from testbed.telemetry import active_session, scenario_spans
from testbed.transport import Hook, Item, current_call, recordings_by_server
from testbed.validators import Violation, indistinguishable, registered_validators, split_runs, validate_runs

_FAST_TIMEOUT_S = 0.05
"""Replay answers a call recorded as timed out by timing it out at once, not after its real deadline."""


@dataclass(frozen=True)
class Divergence:
    """The first event that did not reproduce."""

    position: int
    """Index among the compared events."""
    run: int | None
    where: str
    """The event kind, node and item."""
    field: str
    """The first differing field, as a path."""
    recorded: Any
    replayed: Any

    def __str__(self) -> str:
        return (
            f"did not reproduce at event {self.position} (run {self.run}, {self.where}): {self.field}: "
            f"recorded {_short(self.recorded)}, replayed {_short(self.replayed)}"
        )


@dataclass(frozen=True)
class ReplayReport:
    runs: int
    events: int
    """Events compared."""
    divergence: Divergence | None
    seconds: float
    live: bool
    violations: int = 0
    """Violations the validators found in the recording (recomputed from the replay and compared)."""
    direct: bool = False
    """Whether the recorded responses were served directly, without MCP sessions (see :mod:`._direct_replay`)."""
    phases_s: dict[str, float] = field(default_factory=dict)
    """Wall seconds of each phase of ``seconds``: ``read`` (the recording), ``replay`` (the agent against the
    recorded responses, and comparing the events), ``validate`` (the violations, recomputed)."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def load_recorded(directory: Path) -> tuple[ExperimentHeader, list[Event], Scenario]:
    """Read an experiment directory and the scenario its header resolved.

    Raises:
        TestbedError: not an experiment directory, another format version, or not finished.
    """
    log = read_events(directory)
    header = log.events[0] if log.events else None
    if not isinstance(header, ExperimentHeader):
        raise TestbedError(f"{directory}: events.jsonl does not start with an experiment header")
    if header.format_version not in READABLE_FORMAT_VERSIONS:
        raise TestbedError(
            f"{directory}: recorded with event format version {header.format_version}; this testbed replays "
            f"versions {', '.join(map(str, sorted(READABLE_FORMAT_VERSIONS)))} only"
        )
    scenario = Scenario.model_validate(header.scenario, context={RECORDED_CONTEXT: True})
    if experiment_id(scenario) != header.experiment_id:
        raise TestbedError(f"{directory}: the header's scenario does not match its experiment id")
    return header, log.events, scenario


def comparable(events: list[Event]) -> list[dict[str, Any]]:
    """Events as compared by replay: run events only, without wall-clock fields or JSON-RPC ids.

    JSON-RPC ids are assigned in send order, which concurrent branches make
    nondeterministic; messages are matched by their (run, node, item, seq) instead.
    """
    return [_comparable(event) for event in _compared(events)]


def _compared(events: list[Event]) -> list[Event]:
    """The events replay compares: not the end of the experiment, nor a handshake (one per server process)."""
    return [
        event
        for event in events
        if not isinstance(event, ExperimentFinished) and not (isinstance(event, MessageEvent) and event.run is None)
    ]


def _comparable(event: Event) -> dict[str, Any]:
    if isinstance(event, ExperimentHeader):
        return {"event": "header", "scenario": event.scenario, "seed": event.seed}
    document = event.model_dump(mode="json", exclude=set(WALL_CLOCK_FIELDS))
    if isinstance(event, MessageEvent):
        message = document["message"]
        message.pop("id", None)
        params = message.get("params")
        if isinstance(params, dict):
            params.pop("requestId", None)
            if message.get("method") == "notifications/cancelled":
                params.pop("reason", None)  # names the deadline; replay times out at once
    if isinstance(event, FaultEvent):
        document = {k: document[k] for k in ("event", "run", "node", "item", "server", "index", "kind")}
    return document


def first_divergence(recorded: list[Event], replayed: list[Event]) -> tuple[int, Divergence | None]:
    """Compare two event lists; return how many were compared and the first difference, if any.

    An event that is the recorded one itself (direct replay reuses what it checked) is equal without a look.
    """
    left, right = _compared(recorded), _compared(replayed)
    for position, (one, other) in enumerate(zip(left, right, strict=False)):
        if one is other:
            continue
        a, b = _comparable(one), _comparable(other)
        if a != b:
            path, va, vb = _diff(a, b, "")
            where = f"{a.get('event')} {a.get('node') or ''}#{a.get('item') if a.get('item') is not None else ''}"
            return position, Divergence(position, a.get("run"), where.strip(), path or "(event)", va, vb)
    if len(left) != len(right):
        position = min(len(left), len(right))
        extra = _comparable(left[position] if len(left) > len(right) else right[position])
        return position, Divergence(
            position,
            extra.get("run"),
            str(extra.get("event")),
            "(missing event)",
            _comparable(left[position]) if len(left) > position else None,
            _comparable(right[position]) if len(right) > position else None,
        )
    return len(left), None


def _diff(a: Any, b: Any, path: str) -> tuple[str, Any, Any]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return _diff(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _diff(x, y, f"{path}[{index}]")
    return path, a, b


def recorded_scene(started: RunStarted, blobs: BlobStore) -> tuple[bytes, Scene]:
    """The scene of a recorded run, rebuilt from its image blob and ground truth (no generator needed)."""
    path = blobs.path(started.image_blob)
    if path is None:
        raise TestbedError(f"{blobs.root}: the image of run {started.run} is missing")
    png = path.read_bytes()
    image = decode_image(png, what=str(path))
    image.setflags(write=False)
    scene = Scene(
        image=image,
        objects=recorded_objects(started.ground_truth),
        source=started.scene_source,
        class_names=SHAPE_CLASSES,
    )
    return png, scene


def _dry_fault_hook(plan: FaultPlan, alias: str, pool: ServerPool, sink: list[FaultEvent]) -> Callable[[], Hook]:
    """In replay the recorded messages already carry the faults: only decide them again, and restart as live did.

    The hook keeps no state of its own, so every (re)started connection of ``alias`` shares it.
    """

    async def hook(direction: Direction, item: Item) -> list[Item]:
        site = current_call.get()
        message = getattr(item, "message", None)
        if site is None or direction is not Direction.CLIENT_TO_SERVER or not isinstance(message, types.JSONRPCRequest):
            return [item]
        decided: list[tuple[int, Any]] = (
            list(plan.listing_faults(site.run, server=alias))
            if message.method == "tools/list"
            else plan.faults_for(site)
        )
        for index, spec in decided:
            sink.append(
                FaultEvent(
                    time=time.time(), run=site.run, node=site.node, item=site.item, server=alias, index=index,
                    kind=spec.kind, layer=spec.layer, expected=spec.expected, detail="replayed",
                )
            )  # fmt: skip
            if spec.kind == "restart":
                await pool.request_restart(alias)
        return [item]

    return lambda: hook


async def replay_experiment(directory: Path, *, live: bool = False, device: str = "auto") -> ReplayReport:
    """Replay a recorded experiment and compare it with the recording.

    Offline, the recorded responses are served directly (:mod:`._direct_replay`) where the recording allows
    it, and through MCP sessions over a replaying transport otherwise, or when the direct replay finds a
    difference (the session replay then names the first one). ``seconds`` counts reading the recording too.

    Raises:
        TestbedError: the directory is not a replayable experiment.
    """
    with kept_objects_unscanned():
        return await _replay_experiment(directory, live=live, device=device)


async def _replay_experiment(directory: Path, *, live: bool, device: str) -> ReplayReport:
    started = time.perf_counter()
    header, recorded, scenario = load_recorded(directory)
    leave_kept_objects_unscanned()
    read = time.perf_counter()
    blobs = ReplayBlobs(BlobStore(directory / BLOBS_DIR))
    direct = False
    with tempfile.TemporaryDirectory(prefix="testbed-replay-") as tmp, scenario_spans(scenario, Path(tmp)):
        out = Path(tmp)
        if live:
            transports = {record.alias: record.transport for record in header.servers}
            kind = next(iter(set(transports.values()))) if len(set(transports.values())) == 1 else None
            await run_experiment(scenario, out_dir=out / "live", transport=kind, device=device)  # type: ignore[arg-type]
            replayed = read_events(out / "live").events
            replayed_blobs = BlobStore(out / "live" / BLOBS_DIR)
        else:
            try:
                replayed = await replay_directly(
                    recorded,
                    scenario,
                    blobs,
                    sandbox=out / "sandbox",
                    shown_sandbox=recorded_sandbox(header, directory),
                    models=replay_models(scenario, recorded),
                    check_task=task_checker(scenario),
                )
                replayed_blobs, direct = blobs, True
            except Exception:  # Unreplayable, or anything else the direct path does not model: sessions decide
                session = active_session()
                if session is not None:
                    session.discard()
                replayed = await _replay_offline(directory, recorded, scenario, out)
                replayed_blobs = BlobStore(out / "replayed" / BLOBS_DIR)
        compared, divergence = first_divergence(recorded, replayed)
        replayed_at = time.perf_counter()
        found = validate_runs(split_runs(recorded, blobs), registered_validators())
        if divergence is None and not _same_objects(recorded, replayed):  # else the same violations, trivially
            replayed_runs = split_runs(replayed, replayed_blobs)
            if not indistinguishable(found.runs, replayed_runs):  # else the same violations, by construction
                again = validate_runs(replayed_runs, registered_validators())
                divergence = _violation_divergence(found.violations, again.violations)
        validated = time.perf_counter()
    finished = time.perf_counter()
    runs = sum(isinstance(event, RunFinished) for event in recorded)
    return ReplayReport(
        runs=runs,
        events=compared,
        divergence=divergence,
        seconds=finished - started,
        live=live,
        violations=len(found.violations),
        direct=direct,
        phases_s={"read": read - started, "replay": replayed_at - read, "validate": validated - replayed_at},
    )


def _same_objects(recorded: Sequence[Event], replayed: Sequence[Event]) -> bool:
    """Whether the replay's events are the recorded event objects themselves (the direct replay's, checked)."""
    return len(recorded) == len(replayed) and all(map(operator.is_, recorded, replayed))


def _violation_divergence(recorded: Sequence[Violation], replayed: Sequence[Violation]) -> Divergence | None:
    def key(violation: Violation) -> tuple[Any, ...]:
        return (violation.run, violation.id, violation.server, violation.node, violation.item, violation.detail)

    left, right = [key(v) for v in recorded], [key(v) for v in replayed]
    for position, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return Divergence(position, a[0], f"violation {a[1]}", "violation", a, b)
    if len(left) != len(right):
        position = min(len(left), len(right))
        extra = left[position] if len(left) > position else right[position]
        return Divergence(position, extra[0], f"violation {extra[1]}", "(missing violation)", len(left), len(right))
    return None


def _handshake_answers_waited_for(recorded: list[Event]) -> dict[str, list[bool]]:
    """For each server's handshake answers, in order: whether its client was still waiting for it.

    An answer to a request other than the last one sent came after the client had given up on it (a live
    ``server/discover`` probe that timed out, followed by a fallback): the replayed client, answered at
    once, never gives up, so that answer must not be served to its next request.
    """
    waited_for: dict[str, list[bool]] = collections.defaultdict(list)
    last_request: dict[str, Any] = {}
    for event in recorded:
        if not isinstance(event, MessageEvent) or (event.run is not None and event.node is not None):
            continue
        message = event.message
        if event.direction is Direction.CLIENT_TO_SERVER:
            if "method" in message and message.get("id") is not None:
                last_request[event.server] = message["id"]
        else:
            answered = message.get("id")
            is_answer = answered is not None and ("result" in message or "error" in message)
            waited_for[event.server].append(not is_answer or answered == last_request.get(event.server))
    return waited_for


def recorded_sandbox(header: ExperimentHeader, directory: Path) -> Path:
    """The sandbox folder the recorded runs used (logs that predate recording it: the one in ``directory``)."""
    return Path(header.sandbox) if header.sandbox is not None else (directory / "sandbox").resolve()


async def _replay_offline(directory: Path, recorded: list[Event], scenario: Scenario, out: Path) -> list[Event]:
    blobs = BlobStore(directory / "blobs")
    header = recorded[0]
    assert isinstance(header, ExperimentHeader)
    outcomes = {
        (event.run, event.node, event.item): event.outcome for event in recorded if isinstance(event, CallEvent)
    }

    def deadline(run: int, node: str, item: int) -> float | None:
        return _FAST_TIMEOUT_S if outcomes.get((run, node, item)) is CallOutcomeKind.TIMEOUT else None

    scenes = {event.run: event for event in recorded if isinstance(event, RunStarted)}

    def scene_of(run: int) -> tuple[Scene, bytes | None]:
        png, scene = recorded_scene(scenes[run], blobs)
        return scene, png

    recordings = recordings_by_server(recorded, blobs)
    for alias, waited_for in _handshake_answers_waited_for(recorded).items():
        if alias in recordings:
            recordings[alias].handshake = list(compress(recordings[alias].handshake, waited_for))
    runner = Runner(
        resolve=recorded_servers(header, recordings, source=directory),
        fault_hook=_dry_fault_hook,
        scene_of=scene_of,
        models=replay_models(scenario, recorded),
        check_task=task_checker(scenario),
        log_dir=out / "replayed",
        sandbox=out / "sandbox",
        shown_sandbox=recorded_sandbox(header, directory),
        servers_dir=out,
        device="cpu",
        deadline_override=deadline,
    )
    events: list[Event] = [header]
    runs = sorted({event.run for event in recorded if isinstance(event, RunFinished)})
    await execute_runs(
        scenario,
        runner,
        runs,
        on_start=lambda pool, log, handshake: None,
        on_run=lambda run, outcome, log: events.extend(outcome.events),
    )
    return events
