"""Execute one run: a scene, an agent stepping through its calls, every message recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import mcp.types as types
import numpy as np
from pycocotools import mask as coco_mask

from testbed.agent import Agent, CallRecord, NodeResult, PlannedCall, RunView, SceneView
from testbed.conventions import ImageSize
from testbed.events import (
    BlobStore,
    CallEvent,
    CallOutcomeKind,
    Direction,
    Event,
    FaultEvent,
    GroundTruthRecord,
    MessageEvent,
    RunFinished,
    RunStarted,
    ServerEvent,
    externalize,
)
from testbed.events._store import externalized
from testbed.imaging import encode_scene_png, scene_base64
from testbed.orchestrator._call import CallOutcome, call_tool
from testbed.orchestrator._pool import ServerPool
from testbed.protocol import AGENT_META_KEY, CLOCK_META_KEY, SCOPE_META_KEY
from testbed.scenes import Scene
from testbed.transport import LISTING_NODE, CallSite, Connection, current_call

CLOCK_STEP_S = 10.0
"""Logical seconds between agent steps; TTL handles expire on this clock, never on wall time."""
MAX_STEPS = 256

TaskChecker = Callable[[Scene, dict[str, NodeResult], dict[str, Connection]], tuple[bool | None, str]]


@dataclass(frozen=True)
class RunOutcome:
    events: list[Event]
    calls: int
    failed_calls: int
    task_passed: bool | None


def scene_ground_truth(scene: Scene) -> list[GroundTruthRecord]:
    records = []
    for obj in scene.objects:
        rle = None
        if obj.mask is not None:
            encoded = coco_mask.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
            rle = {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}
        records.append(GroundTruthRecord(class_name=obj.class_name, box_xyxy=list(obj.box_xyxy), mask_rle=rle))
    return records


DeadlineOverride = Callable[[int, str, int], float | None]


async def _list_tools(
    run: int, pool: ServerPool, size: ImageSize, *, answered_at_once: bool = False
) -> dict[str, list[types.Tool]]:
    """Every server's ``tools/list`` at the start of a run, all at once (each server records its own).

    ``answered_at_once``: see :attr:`_RunContext.answered_at_once`; the listings are then made one after another.
    """
    listed: dict[str, list[types.Tool]] = {}

    async def list_one(alias: str, connection: Connection) -> None:
        token = current_call.set(CallSite(run=run, node=LISTING_NODE, item=0, server=alias, image_size=size))
        try:
            if answered_at_once:
                listed[alias] = list((await connection.client.list_tools()).tools)
            else:
                with anyio.fail_after(60):
                    listed[alias] = list((await connection.client.list_tools()).tools)
        except Exception:  # a broken listing is the server's problem: the agent sees the last good one
            listed[alias] = connection.tools
        finally:
            current_call.reset(token)

    if answered_at_once:
        for alias, connection in pool.connections.items():
            await list_one(alias, connection)
    else:
        async with anyio.create_task_group() as group:
            for alias, connection in pool.connections.items():
                group.start_soon(list_one, alias, connection)
    return {alias: listed[alias] for alias in pool.connections}


async def _restart_dead_servers(run: int, pool: ServerPool, outcomes: Sequence[CallEvent]) -> list[ServerEvent]:
    closed = {e.server for e in outcomes if e.outcome is CallOutcomeKind.TRANSPORT_CLOSED}
    if not closed and not pool.restart_requested and not any(c.closed for c in pool.connections.values()):
        return []  # nothing to restart (after nearly every step)
    events = []
    for alias in sorted(set(pool.connections)):
        connection = pool.connections[alias]
        reason = None
        if connection.closed or alias in closed:
            reason = "transport closed"
        elif alias in pool.restart_requested:
            reason = "restart requested"
        if reason is None:
            continue
        pool.restart_requested.discard(alias)
        await pool.restart(alias)
        events.append(ServerEvent(time=time.time(), run=run, server=alias, action="restarted", reason=reason))
    return events


@dataclass(frozen=True)
class _RunContext:
    """What every call of one run shares."""

    run: int
    scope: str
    size: ImageSize
    pool: ServerPool
    default_deadline_s: float
    deadline_override: DeadlineOverride | None
    answered_at_once: bool = False
    """Every request is answered without waiting (direct replay): no call ever yields, so a step's calls are
    made one after another in planned order (the order a task group runs tasks that never yield), and no
    deadline is armed, since none could expire."""


async def execute_run(
    run: int,
    *,
    scene: Scene,
    agent: Agent,
    pool: ServerPool,
    sandbox: Path,
    blobs: BlobStore,
    default_deadline_s: float,
    check_task: TaskChecker,
    fault_events: list[FaultEvent],
    deadline_override: DeadlineOverride | None = None,
    scene_png: bytes | None = None,
    model_events: Callable[[int], list[Event]] | None = None,
    shown_sandbox: Path | None = None,
) -> RunOutcome:
    """Run one scene through the agent; return its events in deterministic order.

    ``scene_png`` is the scene image already encoded (replay has it from the recording).
    ``model_events`` hands over what the agent's models (LLM, embeddings) recorded in a run.
    ``shown_sandbox`` is where the agent is told the sandbox is, when not at ``sandbox`` (replay shows the
    recorded paths).
    """
    context = _RunContext(
        run=run,
        scope=f"run-{run}",
        size=ImageSize(width=scene.width, height=scene.height),
        pool=pool,
        default_deadline_s=default_deadline_s,
        deadline_override=deadline_override,
    )
    png = scene_png if scene_png is not None else encode_scene_png(scene.image)
    image = scene_base64(png)
    image_blob = blobs.put_bytes(png)
    blobs.remember(image, image_blob)  # the calls send it: recording them need not decode and hash it again
    image_path = _scene_path(sandbox, context.scope)
    if pool.may_read_files():
        blobs.link(image_blob, image_path)
    shown_path = image_path if shown_sandbox is None else _scene_path(shown_sandbox, context.scope)
    view = await _start_view(context, scene, image, shown_path)
    started = RunStarted(
        time=time.time(),
        run=run,
        scope=context.scope,
        scene_source=scene.source,
        image_blob=image_blob,
        width=scene.width,
        height=scene.height,
        ground_truth=scene_ground_truth(scene),
    )
    call_events, server_events, error = await _step_agent(context, agent, view, blobs)
    messages = [
        event.model_copy(update={"message": externalized(event.message, blobs)})  # the recorder's own dicts
        for recorder in pool.recorders.values()
        for event in recorder.take_run(run)
    ]
    call_events = _mark_cancellations(call_events, messages)
    passed, detail = check_task(scene, view.results, pool.connections)
    failed = sum(event.outcome not in (CallOutcomeKind.OK, CallOutcomeKind.SKIPPED) for event in call_events)
    finished = RunFinished(
        time=time.time(),
        run=run,
        calls=sum(event.outcome is not CallOutcomeKind.SKIPPED for event in call_events),
        failed_calls=failed,
        task_passed=passed,
        task_detail=detail,
        error=error,
    )
    agent_events = [*view.agent_events, *(model_events(run) if model_events is not None else [])]
    events: list[Event] = [
        started,
        *sorted(messages, key=lambda m: (m.node or "", m.item or 0, m.server, m.seq)),
        *_take_run_faults(fault_events, run),
        *sorted(agent_events, key=_agent_event_order),
        *sorted(call_events, key=lambda c: (c.clock, c.node, c.item)),
        *server_events,
        finished,
    ]
    return RunOutcome(events=events, calls=finished.calls, failed_calls=failed, task_passed=passed)


def _scene_path(sandbox: Path, scope: str) -> Path:
    """Where a run's scene lies in the sandbox: a hard link to its blob (its bytes are stored once), made only
    when a server may read files (see :meth:`ServerPool.may_read_files`)."""
    return sandbox / scope / "scene.png"


async def _start_view(context: _RunContext, scene: Scene, image: str, image_path: Path) -> RunView:
    """What the agent sees at the start of a run: the scene (by value, base64, and its sandbox path) and the tools."""
    return RunView(
        run=context.run,
        scene=SceneView(
            image=image,
            image_path=str(image_path),
            width=scene.width,
            height=scene.height,
        ),
        catalog=await _list_tools(context.run, context.pool, context.size),
    )


async def _step_agent(
    context: _RunContext, agent: Agent, view: RunView, blobs: BlobStore
) -> tuple[list[CallEvent], list[ServerEvent], str | None]:
    """Ask the agent for steps until it is done; make each step's calls concurrently.

    Returns:
        The call events, the server restarts, and why the run ended early (``None`` when it did not).
    """
    call_events: list[CallEvent] = []
    server_events: list[ServerEvent] = []
    agent.start(view)
    context.pool.defenses.start_run(view, blobs)
    for step_index in range(MAX_STEPS):
        step = await agent.step(view)
        if step.error is not None:
            return call_events, server_events, step.error
        clock = step_index * CLOCK_STEP_S
        for node, reason in step.skipped:
            view.skipped[node] = reason
            call_events.append(_skipped_event(context.run, node, reason, clock))
        for node in step.empty:
            view.results[node] = NodeResult(node=node, calls=(), fan_out=True)
        if step.done:
            return call_events, server_events, None
        outcomes: dict[tuple[str, int], CallOutcome] = {}
        if context.answered_at_once:
            for call in step.calls:
                await _perform(context, call, clock, outcomes)
        else:
            async with anyio.create_task_group() as group:
                for call in step.calls:
                    group.start_soon(_perform, context, call, clock, outcomes)
        step_events = _collect(step.calls, outcomes, view, context.run, clock, blobs, share=context.answered_at_once)
        call_events.extend(step_events)
        server_events.extend(await _restart_dead_servers(context.run, context.pool, step_events))
    return call_events, server_events, f"agent did not finish within {MAX_STEPS} steps"


async def _perform(
    context: _RunContext, call: PlannedCall, clock: float, outcomes: dict[tuple[str, int], CallOutcome]
) -> None:
    """Make one planned call inside its call site, and keep its outcome under (node, item)."""
    connection = context.pool.connections.get(call.server)
    nominal = call.deadline_s or context.default_deadline_s
    deadline = nominal
    if context.deadline_override is not None:
        deadline = context.deadline_override(context.run, call.node, call.item) or nominal
    truth = (
        connection.truth.tool(call.tool)
        if connection and connection.truth and _has_tool(connection, call.tool)
        else None
    )
    site = CallSite(
        run=context.run,
        node=call.node,
        item=call.item,
        server=call.server,
        tool=call.tool,
        image_size=context.size,
        truth=truth,
    )
    token = current_call.set(site)
    try:
        if connection is None:
            outcome = CallOutcome(CallOutcomeKind.PROTOCOL_ERROR, None, f"unknown server {call.server!r}", 0.0)
        elif (refused := context.pool.defenses.refuse(call, clock, connection)) is not None:
            outcome = CallOutcome(CallOutcomeKind.SKIPPED, None, refused, 0.0)  # never sent: a defense event says why
        else:
            outcome = await call_tool(
                connection,
                call.tool,
                call.arguments,
                meta=_meta(context.scope, clock, call.agent),
                deadline_s=None if context.answered_at_once else deadline,
                nominal_deadline_s=nominal,
            )
    finally:
        current_call.reset(token)
    outcomes[(call.node, call.item)] = outcome


def _take_run_faults(fault_events: list[FaultEvent], run: int) -> list[FaultEvent]:
    """Remove and return the run's fault events, in deterministic order."""
    taken = sorted(
        (event for event in fault_events if event.run == run), key=lambda f: (f.node, f.item, f.server, f.index, f.kind)
    )
    fault_events[:] = [event for event in fault_events if event.run != run]
    return taken


def _meta(scope: str, clock: float, agent: str) -> dict[str, object]:
    meta: dict[str, object] = {SCOPE_META_KEY: scope, CLOCK_META_KEY: clock}
    if agent:
        meta[AGENT_META_KEY] = agent
    return meta


def _agent_event_order(event: Event) -> tuple[str, str, int]:
    return (getattr(event, "agent", ""), event.event, getattr(event, "seq", 0))


def _mark_cancellations(calls: list[CallEvent], messages: list[MessageEvent]) -> list[CallEvent]:
    """Record, for each timed-out call, whether a response still arrived after the cancellation notice."""
    answered: set[tuple[str | None, int | None, str]] = set()
    for message in messages:
        is_answer = "result" in message.message or "error" in message.message
        if message.direction is Direction.SERVER_TO_CLIENT and is_answer:
            answered.add((message.node, message.item, message.server))
    marked = []
    for call in calls:
        if call.outcome is CallOutcomeKind.TIMEOUT:
            late = (call.node, call.item, call.server) in answered
            call = call.model_copy(update={"cancel_honoured": not late})
        marked.append(call)
    return marked


def _has_tool(connection: Connection, tool: str) -> bool:
    return connection.truth is not None and any(t.name == tool for t in connection.truth.tools)


def _collect(
    calls: Sequence[PlannedCall],
    outcomes: dict[tuple[str, int], CallOutcome],
    view: RunView,
    run: int,
    clock: float,
    blobs: BlobStore,
    *,
    share: bool = False,
) -> list[CallEvent]:
    """Each call's event, and each node's result in ``view``.

    ``share``: the events are only compared and dropped (direct replay), so their arguments and payloads may share
    what holds no blob reference with the results (:func:`externalized`), which makes comparing them cheap.
    """
    external = externalized if share else externalize
    call_events: list[CallEvent] = []
    by_node: dict[str, list[PlannedCall]] = {}
    for call in calls:
        by_node.setdefault(call.node, []).append(call)
    for node, node_calls in by_node.items():
        records = []
        for call in sorted(node_calls, key=lambda c: c.item):
            outcome = outcomes[(call.node, call.item)]
            records.append(
                CallRecord(
                    outcome=outcome.kind.value,
                    payload=outcome.payload,
                    content=outcome.content,
                    arguments=call.arguments,
                    error=outcome.error,
                )
            )
            call_events.append(
                CallEvent(
                    time=time.time(),
                    run=run,
                    node=call.node,
                    item=call.item,
                    server=call.server,
                    tool=call.tool,
                    arguments=external(call.arguments if outcome.kind is not CallOutcomeKind.SKIPPED else {}, blobs),
                    adapters=list(call.adapters),
                    clock=clock,
                    outcome=outcome.kind,
                    payload=external(outcome.payload, blobs),
                    content_types=[block.get("type", "?") for block in outcome.content],
                    error=outcome.error,
                    agent=call.agent,
                    duration_s=outcome.duration_s,
                )
            )
        fan_out = any(call.fan_out for call in node_calls)
        first = node_calls[0]
        view.results[node] = NodeResult(
            node=node, calls=tuple(records), fan_out=fan_out, server=first.server, tool=first.tool
        )
    return call_events


def _skipped_event(run: int, node: str, reason: str, clock: float) -> CallEvent:
    return CallEvent(
        time=time.time(),
        run=run,
        node=node,
        item=0,
        server="",
        tool="",
        arguments={},
        adapters=[],
        clock=clock,
        outcome=CallOutcomeKind.SKIPPED,
        error=reason,
        duration_s=0.0,
    )
