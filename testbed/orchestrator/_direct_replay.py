"""Direct replay: the agent is served the recorded responses in process, with no JSON-RPC wire.

Each server alias gets an MCP ``ClientSession`` whose dispatcher (the SDK's seam between a session
and its transport) answers from the recording: the handshake, the listings and each server's first tool
call go through the SDK as they did live (stamped, validated), with only the framing, streams and taps gone.
Later tool calls are answered without the session's request machinery (:meth:`_DirectClient.answering`): the
request it would send is made from what the first one showed its stamp adds, and the result is parsed from the
recorded answer as the session parses it. Nothing waits for an answer, so a step's calls are made one after
another and no deadline is armed (``_RunContext.answered_at_once``). Every request is checked
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
import importlib.metadata
import math
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import mcp.types as types
import numpy as np
from mcp import Client, MCPError
from mcp.client.session import ClientSession
from mcp.shared.dispatcher import CallOptions, OnNotify, OnNotifyIntercept, OnRequest
from mcp_types.methods import validate_server_result
from mcp_types.version import LATEST_PROTOCOL_VERSION, MODERN_PROTOCOL_VERSIONS
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
from testbed.orchestrator._call import AnswersAtOnce
from testbed.orchestrator._pool import ServerPool
from testbed.orchestrator._run import TaskChecker, _agent_event_order, _list_tools, _RunContext, _step_agent
from testbed.protocol import AGENT_META_KEY, CLOCK_META_KEY, SCOPE_META_KEY, ServerTruth, declared_truth
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
_ACCEPTED = frozenset({CallOutcomeKind.OK, CallOutcomeKind.TOOL_ERROR})
"""Outcomes of a call whose answer the client's SDK took as a valid result."""


def _split(
    recorded: Sequence[Event],
) -> tuple[dict[int, RecordedRun], Exchanges, dict[str, list[MessageEvent]], set[tuple[int, str, str, int]]]:
    """The recorded runs, each call's messages, each server's handshake messages, and the calls (by run, server,
    node, item) whose recorded answer the recording client's SDK validated as a result.

    Raises:
        UnreplayableError: a run holds what only the session replay reproduces (a fault, a restart, a timeout).
    """
    runs: dict[int, RecordedRun] = {}
    exchanges: Exchanges = {}
    handshakes: dict[str, list[MessageEvent]] = collections.defaultdict(list)
    accepted: set[tuple[int, str, str, int]] = set()
    current: RecordedRun | None = None
    for event in recorded:
        if isinstance(event, MessageEvent):
            if event.run is None or event.node is None:
                handshakes[event.server].append(event)
                continue
            exchanges.setdefault((event.run, event.server, event.node, event.item or 0), []).append(event)
        elif isinstance(event, CallEvent):
            if event.outcome not in _DIRECT_OUTCOMES:
                raise UnreplayableError(f"run {event.run} has a call that ended as {event.outcome.value}")
            if event.outcome in _ACCEPTED:
                accepted.add((event.run, event.server, event.node, event.item))
        elif isinstance(event, FaultEvent | ServerEvent):
            raise UnreplayableError(f"the recording holds {event.event} events (faults or restarts)")
        if isinstance(event, RunStarted):
            current = [event]
        elif current is not None:
            current.append(event)
            if isinstance(event, RunFinished):
                runs[event.run] = current
                current = None
    return runs, exchanges, handshakes, accepted


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
        self.sent: dict[str, Any] | None = None
        """The params of the last ``tools/call`` the session sent (what its stamp adds is learnt from them)."""

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
        sent = params if params is None or type(params) is dict else dict(params)
        if method == "tools/call":
            self.sent = sent
        return _answer(self.recorded_answer(site, method, sent))

    def recorded_answer(self, site: CallSite, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """The recorded answer (blobs read back) of the call at ``site``, whose request must be ``method`` with
        ``params``.

        Raises:
            UnreplayableError: the call was not one request and one answer, or its request was another.
        """
        exchange = self.exchange(site)
        if exchange is None:
            raise self._refuse(f"{_where(site, self._alias)}: not one recorded request and one answer")
        request, answer = exchange
        # Compared with the recorded params as sent (blobs read back), the strings the agent passes on from the
        # recording (the scene, earlier answers) are the very strings read: equal at a glance.
        if (
            request.message.get("method") != method
            or internalized(request.message.get("params"), self._blobs) != params
        ):
            raise self._refuse(f"{_where(site, self._alias)}: the request differs from the recorded one")
        return internalized(answer.message, self._blobs)  # type: ignore[no-any-return]


def _where(site: CallSite, alias: str) -> str:
    return f"run {site.run} {site.node}#{site.item} ({alias})"


_TESTBED_META_KEYS = frozenset({SCOPE_META_KEY, CLOCK_META_KEY, AGENT_META_KEY})
"""The ``_meta`` keys the orchestrator sends with a call (:func:`._run._meta`)."""


@functools.cache
def _installed_sdk() -> str:
    return importlib.metadata.version("mcp")


class _DirectClient(AnswersAtOnce):
    """What the orchestrator uses of an MCP ``Client``: its session, its listing and its protocol version.

    A run's listing whose recorded request and answer equal the last listing's (but for the JSON-RPC id) gets
    the last result again: the session stamps the same request in the same state, and parses the same answer
    to the same tools.

    A tool call is answered without the session (:meth:`answering`) once the session has sent one, so what its
    stamp adds to a request's ``_meta`` is known: the request it would send is then the call's name, arguments
    and ``_meta`` with those entries, and it is compared with the recorded one as the dispatcher compares it.
    The recorded answer is then turned into the result as ``send_request`` turns it (a negative ``ttlMs``
    floored, the result parsed); its check against the protocol's schema is left out where the recording's
    client, with this very SDK, took that same answer as a valid result (``accepted``).
    """

    def __init__(self, session: ClientSession, dispatcher: _RecordedDispatcher,
                 accepted: set[tuple[int, str, str, int]], alias: str) -> None:  # fmt: skip
        self.session = session
        self._dispatcher = dispatcher
        self._accepted = accepted
        self._alias = alias
        self._last: tuple[list[dict[str, Any]], types.ListToolsResult] | None = None
        self._stamped: dict[str, Any] | None = None
        """What the session's stamp adds to a call's ``_meta``, once learnt from a call it sent."""
        self._sending: dict[str, Any] | None = None
        """The ``_meta`` of the call being sent through the session, to learn the stamp from."""

    def answering(
        self, tool: str, arguments: dict[str, Any], meta: dict[str, Any]
    ) -> Callable[[], types.CallToolResult] | None:
        site = current_call.get()
        if site is None or type(tool) is not str or not _plain_meta(meta) or not _plain_arguments(arguments):
            return None  # the session's own serialization may change such a request (tuples, NaN, None in _meta)
        stamped = self._stamped if self._stamped is not None else self._learn_stamp()
        if stamped is None or self.session.protocol_version != LATEST_PROTOCOL_VERSION:
            self._sending = meta
            return None  # the session sends it (and its stamp is learnt); a later revision's fields would go
        params = {"_meta": {**meta, **stamped}, "name": tool, "arguments": arguments}
        validated = (site.run, self._alias, site.node, site.item) in self._accepted
        return functools.partial(self._answer, site, params, validated)

    def _learn_stamp(self) -> dict[str, Any] | None:
        """What the session added to the ``_meta`` of the call it last sent, if that was the call being learnt from
        and the stamp only added entries (none of the orchestrator's own was changed)."""
        sending, sent = self._sending, self._dispatcher.sent
        self._sending = None
        if sending is None or sent is None or not isinstance(meta := sent.get("_meta"), dict):
            return None
        if any(key not in meta or meta[key] != value for key, value in sending.items()):
            return None
        stamped = {key: value for key, value in meta.items() if key not in sending}
        if not _TESTBED_META_KEYS.isdisjoint(stamped):
            return None
        self._stamped = stamped
        return stamped

    def _answer(self, site: CallSite, params: dict[str, Any], validated: bool) -> types.CallToolResult:
        raw = _answer(self._dispatcher.recorded_answer(site, "tools/call", params))
        ttl = raw.get("ttlMs")  # as send_request floors it, before validating
        if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl < 0:
            raw["ttlMs"] = 0
        if not validated:
            with suppress(KeyError):  # as send_request: a method the protocol version has no row for is not checked
                validate_server_result("tools/call", LATEST_PROTOCOL_VERSION, raw)
        return types.CallToolResult.model_validate(raw, by_name=False)

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


def _plain_meta(meta: dict[str, Any]) -> bool:
    """Whether ``meta`` is the orchestrator's own ``_meta``, which the session's serialization leaves as it is."""
    return (
        type(meta) is dict
        and _TESTBED_META_KEYS.issuperset(meta)
        and all(type(value) is str or (type(value) is float and math.isfinite(value)) for value in meta.values())
    )


_JSON_SCALARS = frozenset({str, int, bool, type(None)})
"""Types the session's serialization gives back as they are (floats too, but for NaN and infinities)."""
_FLOATS = frozenset({float})
_KEYS = frozenset({str})


def _plain_arguments(value: Any) -> bool:
    """Whether ``value`` is made of JSON values only (dicts with string keys, lists, strings, numbers, booleans,
    None; finite floats), which the session's serialization gives back equal and of the same types."""
    kind = type(value)
    if kind is dict:
        if not _KEYS.issuperset(map(type, value)):
            return False
        items: Any = value.values()
    elif kind is list:
        items = value
    elif kind is float:
        return math.isfinite(value)
    else:
        return kind in _JSON_SCALARS
    kinds = set(map(type, items))
    if kinds <= _JSON_SCALARS:
        return True
    if kinds == _FLOATS:  # a box: one sum tells (NaN and infinities carry through it; an overflow only refuses)
        return math.isfinite(sum(items))
    return all(map(_plain_arguments, items))


async def _connect(stack: AsyncExitStack, alias: str, record: ServerRecord | None, dispatcher: _RecordedDispatcher,
                   transport: str, accepted: set[tuple[int, str, str, int]]) -> Connection:  # fmt: skip
    """A connection answered by ``dispatcher``, negotiated and listed as the recorded connection was."""
    session = await stack.enter_async_context(ClientSession(dispatcher=dispatcher))
    try:
        discovered = types.DiscoverResult.model_validate(dispatcher.handshake_result("server/discover"))
    except ValidationError:
        raise UnreplayableError(f"{alias}: the recorded handshake is not a server/discover") from None
    if not set(discovered.supported_versions) & set(MODERN_PROTOCOL_VERSIONS):
        raise UnreplayableError(f"{alias}: the recorded handshake negotiated a legacy protocol version")
    session.adopt(discovered)
    client = _DirectClient(session, dispatcher, accepted, alias)
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
    shown_sandbox: Path,
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
            image_path=str(shown_sandbox / context.scope / "scene.png"),
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
                          models: ModelEvents, check_task: TaskChecker,
                          shown_sandbox: Path | None = None) -> list[Event]:  # fmt: skip
    """Replay every complete recorded run directly; return the replayed events (the recorded ones, checked).

    ``shown_sandbox`` is the recording's sandbox folder, so the agent sees the scene paths it saw live
    (default: ``sandbox``).

    Raises:
        UnreplayableError: the recording needs the session replay (faults, restarts, timeouts), or did not reproduce.
    """
    if scenario.faults:
        raise UnreplayableError("the scenario injects faults")
    header = recorded[0]
    assert isinstance(header, ExperimentHeader)
    runs, exchanges, handshakes, accepted = _split(recorded)
    if header.versions.get("mcp") != _installed_sdk():  # another SDK may not take what this one took
        accepted = set()
    records = {record.alias: record for record in header.servers}
    problems: list[str] = []
    pool = ServerPool(out_dir=sandbox, sandbox=sandbox, device="cpu")  # holds the direct connections only
    pool.defenses = DefenseGuard(scenario.defenses, scenario.agent.grants)
    events: list[Event] = [header]
    async with AsyncExitStack() as stack:
        for alias, ref in scenario.servers.items():
            dispatcher = _RecordedDispatcher(alias, handshakes.get(alias, []), exchanges, blobs, problems)
            pool.connections[alias] = await _connect(
                stack, alias, records.get(alias), dispatcher, ref.transport, accepted
            )
        agent = build_agent(scenario, models)
        for run in sorted(runs):
            token = current_call.set(None)
            try:
                events.extend(
                    await _replay_run(runs[run], pool=pool, agent=agent, models=models, check_task=check_task,
                                      scenario=scenario, blobs=blobs,
                                      shown_sandbox=shown_sandbox if shown_sandbox is not None else sandbox,
                                      problems=problems)
                )  # fmt: skip
            finally:
                current_call.reset(token)
    return events
