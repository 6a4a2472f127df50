"""Direct replay: the agent is served the recorded responses in process, with no JSON-RPC wire.

Each server alias gets an MCP ``ClientSession`` whose dispatcher (the SDK's seam between a session
and its transport) answers from the recording: the SDK still stamps every request and validates
every result as it did live; only the framing, streams and taps are gone. Nothing waits for an answer, so a step's
calls are made one after another and no deadline is armed (``_RunContext.answered_at_once``). Every request is checked
against the recorded one (method and params, externalized, equal), and every replayed event against
its recorded counterpart; the recorded events are then the replay's, so comparing and validating
them costs nothing twice.

This path covers recordings without faults, restarts, timeouts or closed transports, where each call
is one request and one answer. On anything else, and on any difference from the recording, it gives
up (:class:`UnreplayableError`); the session replay then replays the whole experiment and names the first
difference exactly as it always has.
"""

from __future__ import annotations

import base64
import collections
import functools
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import mcp.types as types
import numpy as np
from mcp import Client, MCPError
from mcp.client.session import ClientSession
from mcp.shared.dispatcher import CallOptions, OnNotify, OnNotifyIntercept, OnRequest
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pycocotools import mask as coco_mask
from pydantic import ValidationError

from testbed._arrays import BoolMask, RGBImage
from testbed.agent import ModelEvents, RunView, SceneView
from testbed.conventions import ImageSize
from testbed.defenses import DefenseGuard
from testbed.events import (
    WALL_CLOCK_FIELDS,
    CallEvent,
    CallOutcomeKind,
    Direction,
    Event,
    ExperimentHeader,
    FaultEvent,
    GroundTruthRecord,
    MessageEvent,
    ReplayBlobs,
    RunFinished,
    RunStarted,
    ServerEvent,
    ServerRecord,
    TruthMode,
    internalized,
)
from testbed.imaging import decode_image
from testbed.orchestrator._agents import build_agent
from testbed.orchestrator._pool import ServerPool
from testbed.orchestrator._run import TaskChecker, _agent_event_order, _list_tools, _RunContext, _step_agent
from testbed.protocol import ServerTruth, declared_truth
from testbed.scenario import Scenario
from testbed.scenes import SHAPE_CLASSES, GroundTruthObject, Scene
from testbed.transport import CallSite, Connection, MessageRecorder, current_call

__all__ = ["UndecodedScene", "UnreplayableError", "recorded_objects", "replay_directly"]

_DIRECT_OUTCOMES = frozenset({CallOutcomeKind.OK, CallOutcomeKind.TOOL_ERROR, CallOutcomeKind.PROTOCOL_ERROR,
                              CallOutcomeKind.SKIPPED})  # fmt: skip
"""Outcomes whose recorded answer the dispatcher hands back as is (timeouts and closed transports need the wire)."""
_PNG_SIZE = struct.Struct(">II")
"""A PNG's width and height, at bytes 16..24 (its IHDR chunk)."""


class UnreplayableError(Exception):
    """The direct path does not reproduce this recording; the session replay must replay it."""


RecordedRun = list[Event]
"""One recorded run's events, RunStarted to RunFinished, in their recorded order."""
Exchanges = dict[tuple[int, str, str, int], list[MessageEvent]]
"""The recorded messages of each call, by (run, server, node, item)."""


def _split(recorded: Sequence[Event]) -> tuple[dict[int, RecordedRun], Exchanges, dict[str, list[MessageEvent]]]:
    """The recorded runs, each call's messages, and each server's handshake messages.

    Raises:
        UnreplayableError: a run holds what only the session replay reproduces (a fault, a restart, a timeout).
    """
    runs: dict[int, RecordedRun] = {}
    exchanges: Exchanges = {}
    handshakes: dict[str, list[MessageEvent]] = collections.defaultdict(list)
    current: RecordedRun | None = None
    for event in recorded:
        if isinstance(event, MessageEvent):
            if event.run is None or event.node is None:
                handshakes[event.server].append(event)
                continue
            exchanges.setdefault((event.run, event.server, event.node, event.item or 0), []).append(event)
        elif isinstance(event, CallEvent) and event.outcome not in _DIRECT_OUTCOMES:
            raise UnreplayableError(f"run {event.run} has a call that ended as {event.outcome.value}")
        elif isinstance(event, FaultEvent | ServerEvent):
            raise UnreplayableError(f"the recording holds {event.event} events (faults or restarts)")
        if isinstance(event, RunStarted):
            current = [event]
        elif current is not None:
            current.append(event)
            if isinstance(event, RunFinished):
                runs[event.run] = current
                current = None
    return runs, exchanges, handshakes


def _answer(message: Mapping[str, Any]) -> dict[str, Any]:
    """What a dispatcher returns for a recorded answer: its result, or its error raised as the SDK raises it."""
    result = message.get("result")
    if isinstance(result, dict):
        return dict(result)  # the SDK may set a key of it; below the top it is the recording's, shared
    error = message.get("error")
    if isinstance(error, dict):
        data = types.ErrorData.model_validate(error)
        raise MCPError(data.code, data.message, data.data)
    raise UnreplayableError("a recorded answer that is neither a result nor an error")


def _answered(handshake: Sequence[MessageEvent]) -> dict[str, dict[str, Any]]:
    """By method, the last answer with a result to a request a connection made while connecting (a probe that
    timed out, or a refused fallback, is not what the connection went on with)."""
    methods = {
        event.message.get("id"): event.message.get("method")
        for event in handshake
        if event.direction is Direction.CLIENT_TO_SERVER and "method" in event.message
    }
    answers: dict[str, dict[str, Any]] = {}
    for event in handshake:
        method = methods.get(event.message.get("id"))
        if event.direction is Direction.SERVER_TO_CLIENT and isinstance(method, str) and "result" in event.message:
            answers[method] = event.message
    return answers


class _RecordedDispatcher:
    """Answers one server alias's requests from the recording, checking each against the recorded request.

    A request that differs is recorded in ``problems`` before :class:`UnreplayableError` is raised, since the
    orchestrator swallows a failed listing.
    """

    def __init__(self, alias: str, handshake: list[MessageEvent], exchanges: Exchanges, blobs: ReplayBlobs,
                 problems: list[str]) -> None:  # fmt: skip
        self._alias = alias
        self._handshake = _answered(handshake)
        self._exchanges = exchanges
        self._blobs = blobs
        self._problems = problems

    def _refuse(self, problem: str) -> UnreplayableError:
        self._problems.append(problem)
        return UnreplayableError(problem)

    def handshake_result(self, method: str) -> dict[str, Any]:
        """The result of the last request of ``method`` answered with one while the connection was made."""
        answer = self._handshake.get(method)
        if answer is None:
            raise self._refuse(f"{self._alias}: no recorded answer to {method} while connecting")
        return _answer(internalized(answer, self._blobs))

    def exchange(self, site: CallSite) -> tuple[MessageEvent, MessageEvent] | None:
        """The recorded request and answer of a call, or None when it was not exactly one of each."""
        exchange = self._exchanges.get((site.run, self._alias, site.node, site.item))
        if exchange is None or len(exchange) != 2 or exchange[0].direction is not Direction.CLIENT_TO_SERVER:
            return None
        return exchange[0], exchange[1]

    async def run(
        self,
        on_request: OnRequest,
        on_notify: OnNotify,
        on_notify_intercept: OnNotifyIntercept | None = None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        await anyio.sleep_forever()  # nothing arrives unasked: recordings with server-sent messages are refused

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        site = current_call.get()
        if site is not None:
            raise self._refuse(f"run {site.run} {site.node}#{site.item}: a notification ({method}) within a call")

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        site = current_call.get()
        if site is None:
            return self.handshake_result(method)
        exchange = self.exchange(site)
        if exchange is None:
            raise self._refuse(f"{_where(site, self._alias)}: not one recorded request and one answer")
        request, answer = exchange
        # Compared with the recorded params as sent (blobs read back), the strings the agent passes on from the
        # recording (the scene, earlier answers) are the very strings read: equal at a glance.
        recorded = internalized(request.message.get("params"), self._blobs)
        if request.message.get("method") != method or recorded != (
            params if params is None or type(params) is dict else dict(params)
        ):
            raise self._refuse(f"{_where(site, self._alias)}: the request differs from the recorded one")
        return _answer(internalized(answer.message, self._blobs))


def _where(site: CallSite, alias: str) -> str:
    return f"run {site.run} {site.node}#{site.item} ({alias})"


class _DirectClient:
    """What the orchestrator uses of an MCP ``Client``: its session, its listing and its protocol version.

    A run's listing whose recorded request and answer equal the last listing's (but for the JSON-RPC id) gets
    the last result again: the session stamps the same request in the same state, and parses the same answer
    to the same tools.
    """

    def __init__(self, session: ClientSession, dispatcher: _RecordedDispatcher) -> None:
        self.session = session
        self._dispatcher = dispatcher
        self._last: tuple[list[dict[str, Any]], types.ListToolsResult] | None = None

    @property
    def protocol_version(self) -> str | None:
        return self.session.protocol_version

    async def list_tools(self) -> types.ListToolsResult:
        site = current_call.get()
        exchange = self._dispatcher.exchange(site) if site is not None else None
        seen = [_without_id(event.message) for event in exchange] if exchange is not None else None
        if seen is not None and self._last is not None and seen == self._last[0]:
            return self._last[1]
        result = await self.session.list_tools(params=types.PaginatedRequestParams(cursor=None))
        if seen is not None:
            self._last = (seen, result)
        return result


def _without_id(message: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key != "id"}


async def _connect(
    stack: AsyncExitStack, alias: str, record: ServerRecord | None, dispatcher: _RecordedDispatcher, transport: str
) -> Connection:
    """A connection answered by ``dispatcher``, negotiated and listed as the recorded connection was."""
    session = await stack.enter_async_context(ClientSession(dispatcher=dispatcher))
    try:
        discovered = types.DiscoverResult.model_validate(dispatcher.handshake_result("server/discover"))
    except ValidationError:
        raise UnreplayableError(f"{alias}: the recorded handshake is not a server/discover") from None
    if not set(discovered.supported_versions) & set(MODERN_PROTOCOL_VERSIONS):
        raise UnreplayableError(f"{alias}: the recorded handshake negotiated a legacy protocol version")
    session.adopt(discovered)
    client = _DirectClient(session, dispatcher)
    listed = list((await client.list_tools()).tools)
    server = record.server if record is not None else alias
    truth = ServerTruth.model_validate(record.truth) if record is not None and record.truth else None
    mode: TruthMode = "truth"
    if truth is None:
        truth = declared_truth(
            server, [tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in listed]
        )
        mode = "declared" if truth is not None else "none"
    return Connection(
        alias=alias,
        server=server,
        transport=transport,  # type: ignore[arg-type]
        client=cast(Client, client),  # the orchestrator reaches a client only through what _DirectClient has
        recorder=MessageRecorder(server=alias),
        tools=listed,
        truth=truth,
        stderr_path=None,
        truth_mode=mode,
    )


def recorded_objects(records: Sequence[GroundTruthRecord]) -> tuple[GroundTruthObject, ...]:
    """A recorded run's ground truth as scene objects (each mask decoded from its RLE when first read)."""
    return tuple(_RecordedObject(record) for record in records)


class _RecordedObject(GroundTruthObject):
    """A ground-truth object read back from its record; its mask is decoded only if something reads it."""

    _rle: dict[str, Any] | None

    def __init__(self, record: GroundTruthRecord) -> None:  # no super().__init__: the mask comes later
        box = (record.box_xyxy[0], record.box_xyxy[1], record.box_xyxy[2], record.box_xyxy[3])
        class_id = SHAPE_CLASSES.index(record.class_name) if record.class_name in SHAPE_CLASSES else -1
        object.__setattr__(self, "class_id", class_id)
        object.__setattr__(self, "class_name", record.class_name)
        object.__setattr__(self, "box_xyxy", box)
        object.__setattr__(self, "_rle", record.mask_rle)

    @functools.cached_property
    def mask(self) -> BoolMask | None:
        if self._rle is None:
            return None
        rle = {"size": self._rle["size"], "counts": self._rle["counts"].encode("ascii")}
        mask = np.asarray(coco_mask.decode(rle), dtype=bool)
        mask.setflags(write=False)
        return mask


class UndecodedScene(Scene):
    """A recorded scene whose pixels are decoded only if something reads them (task checks read its ground
    truth and size, which the recording holds)."""

    _size: tuple[int, int]
    _blob: Callable[[], str]

    def __init__(self, started: RunStarted, blobs: ReplayBlobs) -> None:  # no super().__init__: pixels come later
        object.__setattr__(self, "objects", recorded_objects(started.ground_truth))
        object.__setattr__(self, "source", started.scene_source)
        object.__setattr__(self, "class_names", SHAPE_CLASSES)
        object.__setattr__(self, "_size", (started.width, started.height))
        object.__setattr__(self, "_blob", functools.partial(blobs.get, started.image_blob))

    @functools.cached_property
    def image(self) -> RGBImage:
        image = decode_image(base64.b64decode(self._blob()), what="the recorded scene")
        image.setflags(write=False)
        return image

    @property
    def width(self) -> int:
        return int(self._size[0])

    @property
    def height(self) -> int:
        return int(self._size[1])


def _png_size(image: str) -> tuple[int, int]:
    """Width and height from a base64 PNG's header (its first 24 bytes), without decoding the image."""
    head = base64.b64decode(image[:32])
    if not head.startswith(b"\x89PNG\r\n\x1a\n"):
        raise UnreplayableError("a recorded scene that is not a PNG")
    width, height = _PNG_SIZE.unpack(head[16:24])
    return int(width), int(height)


def _same(replayed: Event, recorded: Event) -> bool:
    """Whether replay compares the two as equal (their fields but wall-clock ones)."""
    if replayed is recorded:
        return True
    if type(replayed) is not type(recorded):
        return False
    mine, theirs = replayed.__dict__, recorded.__dict__
    return all(mine[name] == theirs[name] for name in mine if name not in WALL_CLOCK_FIELDS)


async def _replay_run(
    recorded: RecordedRun,
    *,
    pool: ServerPool,
    agent: Any,
    models: ModelEvents,
    check_task: TaskChecker,
    scenario: Scenario,
    blobs: ReplayBlobs,
    sandbox: Path,
    problems: list[str],
) -> RecordedRun:
    """Replay one run; return its recorded events, each checked against the replayed one.

    Raises:
        UnreplayableError: the run did not reproduce on this path.
    """
    started = recorded[0]
    assert isinstance(started, RunStarted)
    run = started.run
    context = _RunContext(
        run=run,
        scope=f"run-{run}",
        size=ImageSize(width=started.width, height=started.height),
        pool=pool,
        default_deadline_s=scenario.deadline_s,
        deadline_override=None,
        answered_at_once=True,
    )
    image = blobs.get(started.image_blob)
    if started.scope != context.scope or _png_size(image) != (started.width, started.height):
        raise UnreplayableError(f"run {run}: its scene does not match its image")
    view = RunView(
        run=run,
        scene=SceneView(
            image=image,
            image_path=str(sandbox / context.scope / "scene.png"),
            width=started.width,
            height=started.height,
        ),
        catalog=await _list_tools(run, pool, context.size, answered_at_once=True),
    )
    call_events, server_events, error = await _step_agent(context, agent, view, blobs)
    if problems:
        raise UnreplayableError(problems[0])
    passed, detail = check_task(UndecodedScene(started, blobs), view.results, pool.connections)
    finished = RunFinished(
        time=time.time(),
        run=run,
        calls=sum(event.outcome is not CallOutcomeKind.SKIPPED for event in call_events),
        failed_calls=sum(event.outcome not in (CallOutcomeKind.OK, CallOutcomeKind.SKIPPED) for event in call_events),
        task_passed=passed,
        task_detail=detail,
        error=error,
    )
    agent_events = [*view.agent_events, *models.take_run(run)]
    replayed: list[Event] = [
        started,
        *(event for event in recorded if isinstance(event, MessageEvent)),  # each request was checked when sent
        *sorted(agent_events, key=_agent_event_order),
        *sorted(call_events, key=lambda c: (c.clock, c.node, c.item)),
        *server_events,
        finished,
    ]
    if len(replayed) != len(recorded) or not all(map(_same, replayed, recorded)):
        raise UnreplayableError(f"run {run} did not reproduce")
    return recorded


async def replay_directly(recorded: list[Event], scenario: Scenario, blobs: ReplayBlobs, *, sandbox: Path,
                          models: ModelEvents, check_task: TaskChecker) -> list[Event]:  # fmt: skip
    """Replay every complete recorded run directly; return the replayed events (the recorded ones, checked).

    Raises:
        UnreplayableError: the recording needs the session replay (faults, restarts, timeouts), or did not reproduce.
    """
    if scenario.faults:
        raise UnreplayableError("the scenario injects faults")
    header = recorded[0]
    assert isinstance(header, ExperimentHeader)
    runs, exchanges, handshakes = _split(recorded)
    records = {record.alias: record for record in header.servers}
    problems: list[str] = []
    pool = ServerPool(out_dir=sandbox, sandbox=sandbox, device="cpu")  # holds the direct connections only
    pool.defenses = DefenseGuard(scenario.defenses, scenario.agent.grants)
    events: list[Event] = [header]
    async with AsyncExitStack() as stack:
        for alias, ref in scenario.servers.items():
            dispatcher = _RecordedDispatcher(alias, handshakes.get(alias, []), exchanges, blobs, problems)
            pool.connections[alias] = await _connect(stack, alias, records.get(alias), dispatcher, ref.transport)
        agent = build_agent(scenario, models)
        for run in sorted(runs):
            token = current_call.set(None)
            try:
                events.extend(
                    await _replay_run(runs[run], pool=pool, agent=agent, models=models, check_task=check_task,
                                      scenario=scenario, blobs=blobs, sandbox=sandbox, problems=problems)
                )  # fmt: skip
            finally:
                current_call.reset(token)
    return events
