"""The fault injector: a transport hook that applies a fault plan to one server's connection.

Wrap a connection with ``TapTransport(inner, injector)`` (or call the injector
from a composed hook). On each client→server ``tools/call`` it asks the plan
which faults apply to the current call site (:data:`~testbed.transport.current_call`),
applies the request-side ones (restart, delay, clock jump registration, drop) and keeps
the rest by JSON-RPC id until the response with that id comes back. A ``tools/list`` made in a run's listing context
(node ``@list``) gets the run's rug pulls.

Response-side faults apply in a fixed order whatever their order in the list:
payload changes first (what the server "said"), then a JSON-RPC error in place of
the result, frame damage, duplication, loss, holding (reorder), and last a kill,
which closes the connection: the hook then raises ``anyio.EndOfStream``, so the
client sees the stream end as it would when a server process dies.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import anyio
import mcp.types as types
from mcp.shared.message import SessionMessage

from testbed.events import Direction, FaultEvent
from testbed.faults._effects import (
    EffectContext,
    NotApplicableError,
    alter_result,
    alter_tool_list,
    corrupted_frame,
    payload_effect,
    truncated_frame,
)
from testbed.faults._model import (
    CorruptJsonFault,
    DelayFault,
    DropFault,
    DuplicateFault,
    ExpireHandleFault,
    FaultSpec,
    JsonRpcErrorFault,
    KillFault,
    ReorderFault,
    RestartFault,
    RugPullFault,
    TimeoutFault,
    TruncateFault,
)
from testbed.faults._plan import FaultPlan
from testbed.protocol import CLOCK_META_KEY
from testbed.transport import LISTING_NODE, CallSite, Item, current_call
from testbed.workflow._paths import PayloadPathError, read_path

__all__ = ["FaultInjector", "OnFault", "ProcessAction"]

OnFault = Callable[[FaultEvent], None]
"""Called once for every fault the injector applied (or found not applicable)."""
ProcessAction = Callable[[], Awaitable[None]]
"""Kills or restarts the server process."""

RequestId = int | str

_PING_PREFIX: Final = "testbed-fault-ping-"
_NOT_APPLICABLE: Final = "not applicable: "

# Response-side faults apply in this order (then by their index in the list).
_RESPONSE_STAGE: Final[dict[type, int]] = {
    JsonRpcErrorFault: 1,
    TruncateFault: 2,
    CorruptJsonFault: 2,
    DuplicateFault: 3,
    TimeoutFault: 4,
    ReorderFault: 5,
    KillFault: 6,
}


@dataclass
class _Pending:
    """The response-side faults of one request, kept until its response arrives."""

    site: CallSite
    faults: list[tuple[int, FaultSpec]]


@dataclass
class _ClockJump:
    """An ``expire_handle`` fault: later requests of ``run`` carry a clock advanced by ``advance_s``."""

    run: int
    after_clock: float | None
    advance_s: float
    confirmed: bool = False


class FaultInjector:
    """Applies a :class:`FaultPlan` to the messages of one server connection; use it as a TapTransport hook."""

    def __init__(
        self,
        plan: FaultPlan,
        alias: str,
        *,
        on_fault: OnFault,
        kill: ProcessAction | None = None,
        restart: ProcessAction | None = None,
    ) -> None:
        """Args:
        plan: the scenario's faults and seed.
        alias: the scenario's alias of the server this connection reaches.
        on_fault: called once per fault applied (or found not applicable), as it happens.
        kill: kills the server process (a ``kill`` fault awaits it before closing the connection).
        restart: restarts the server process (a ``restart`` fault awaits it before sending the call).
        """
        self.plan = plan
        self.alias = alias
        self._on_fault = on_fault
        self._kill = kill
        self._restart = restart
        self._pending: dict[RequestId, _Pending] = {}
        self._jumps: dict[tuple[RequestId, int], _ClockJump] = {}
        self._in_flight: set[RequestId] = set()
        self._held: list[Item] = []
        """Responses a ``reorder`` fault holds until the next response passes them."""
        self._pings: set[str] = set()
        self._ping_count = 0
        self._closed = False
        """Whether a ``kill`` closed the connection (it stays closed)."""

    async def __call__(self, direction: Direction, item: Item) -> list[Item]:
        """The TapTransport hook: return what to forward in place of ``item``.

        Raises:
            anyio.EndOfStream: a ``kill`` fault closed the connection.
        """
        if not isinstance(item, SessionMessage):
            return [item]
        if direction is Direction.CLIENT_TO_SERVER:
            return await self._outgoing(item)
        return await self._incoming(item)

    # --- client -> server ----------------------------------------------------------------------

    async def _outgoing(self, item: SessionMessage) -> list[Item]:
        message = item.message
        out: list[Item] = [item]
        if isinstance(message, types.JSONRPCNotification) and message.method == "notifications/cancelled":
            self._in_flight.discard((message.params or {}).get("requestId", ""))
        elif isinstance(message, types.JSONRPCRequest):
            self._in_flight.add(message.id)
            if message.method == "tools/call":
                out = await self._call_request(item, message)
            elif message.method == "tools/list":
                self._listing_request(message)
        return out + self._flush_pings()

    async def _call_request(self, item: SessionMessage, message: types.JSONRPCRequest) -> list[Item]:
        site = self._call_site(message)
        if site is None:
            return [item]
        item = self._advance_clock(item, message, site)
        faults = self.plan.faults_for(site)
        response_side: list[tuple[int, FaultSpec]] = []
        for index, fault in faults:
            if isinstance(fault, RestartFault):
                if self._restart is None:
                    self._record(site, index, fault, "no restart callback for this server", applied=False)
                else:
                    await self._restart()
                    self._record(site, index, fault, "server restarted before the call")
            elif isinstance(fault, DelayFault):
                await anyio.sleep(fault.seconds)
                self._record(site, index, fault, f"request sent {fault.seconds:g}s late")
            elif isinstance(fault, ExpireHandleFault):
                self._jumps[(message.id, index)] = _ClockJump(
                    run=site.run, after_clock=_clock_of(message), advance_s=0.0
                )
                response_side.append((index, fault))
            elif not isinstance(fault, DropFault):
                response_side.append((index, fault))
        drops = [(index, fault) for index, fault in faults if isinstance(fault, DropFault)]
        if drops:
            self._in_flight.discard(message.id)
            for index, _ in response_side:
                self._jumps.pop((message.id, index), None)
            first = drops[0][0]
            self._record(site, first, drops[0][1], "request dropped before it reached the server")
            for index, fault in sorted(drops[1:] + response_side, key=lambda entry: entry[0]):
                self._record(site, index, fault, f"the request was dropped by faults[{first}]", applied=False)
            return []
        if response_side:
            self._pending[message.id] = _Pending(site, response_side)
        return [item]

    def _listing_request(self, message: types.JSONRPCRequest) -> None:
        site = current_call.get()
        if site is None or site.node != LISTING_NODE or site.server not in (None, self.alias):
            return
        site = replace(site, server=self.alias, tool=None)
        faults: list[tuple[int, FaultSpec]] = list(self.plan.listing_faults(site.run, server=self.alias))
        if faults:
            self._pending[message.id] = _Pending(site, faults)

    def _call_site(self, message: types.JSONRPCRequest) -> CallSite | None:
        """The current call as this connection sees it; a site that names no server or tool gets them here."""
        site = current_call.get()
        if site is None or site.server not in (None, self.alias):
            return None
        if site.server is None or site.tool is None:
            tool = (message.params or {}).get("name")
            site = replace(site, server=self.alias, tool=site.tool or (tool if isinstance(tool, str) else None))
        return site

    def _advance_clock(self, item: SessionMessage, message: types.JSONRPCRequest, site: CallSite) -> SessionMessage:
        clock = _clock_of(message)
        now = clock if clock is not None else 0.0
        advance = sum(
            jump.advance_s
            for jump in self._jumps.values()
            if jump.confirmed and jump.run == site.run and (jump.after_clock is None or now > jump.after_clock)
        )
        if not advance:
            return item
        params = dict(message.params or {})
        meta = dict(params.get("_meta") or {})
        meta[CLOCK_META_KEY] = now + advance
        params["_meta"] = meta
        return SessionMessage(message.model_copy(update={"params": params}), item.metadata)

    def _flush_pings(self) -> list[Item]:
        """A ping whose response releases held responses, when nothing else in flight could pass them."""
        if not self._held or self._in_flight or self._pings:
            return []
        self._ping_count += 1
        ping_id = f"{_PING_PREFIX}{self._ping_count}"
        self._pings.add(ping_id)
        return [SessionMessage(types.JSONRPCRequest(jsonrpc="2.0", id=ping_id, method="ping"))]

    # --- server -> client ----------------------------------------------------------------------

    async def _incoming(self, item: SessionMessage) -> list[Item]:
        if self._closed:
            raise anyio.EndOfStream
        message = item.message
        if not isinstance(message, types.JSONRPCResponse | types.JSONRPCError) or message.id is None:
            return [item]
        released, self._held = self._held, []
        if isinstance(message.id, str) and message.id in self._pings:
            self._pings.discard(message.id)
            return released
        self._in_flight.discard(message.id)
        pending = self._pending.pop(message.id, None)
        out: list[Item] = [item] if pending is None else await self._respond(item, message, pending)
        return out + released

    async def _respond(
        self, item: SessionMessage, message: types.JSONRPCResponse | types.JSONRPCError, pending: _Pending
    ) -> list[Item]:
        site = pending.site
        items: list[Item] = [item]
        ordered = sorted(pending.faults, key=lambda entry: (_RESPONSE_STAGE.get(type(entry[1]), 0), entry[0]))
        close = False
        for index, fault in ordered:
            try:
                items, detail, close_now = await self._apply(index, fault, items, site)
            except NotApplicableError as error:
                if isinstance(fault, ExpireHandleFault) and message.id is not None:
                    self._jumps.pop((message.id, index), None)
                self._record(site, index, fault, str(error), applied=False)
                continue
            close = close or close_now
            self._record(site, index, fault, detail)
        if close:
            self._closed = True
            raise anyio.EndOfStream
        return items

    async def _apply(
        self,
        index: int,
        fault: FaultSpec,
        items: list[Item],
        site: CallSite,
    ) -> tuple[list[Item], str, bool]:
        """Apply one response-side fault to the items about to be delivered: (new items, detail, close?)."""
        context = EffectContext(site=site, index=index, seed=self.plan.seed)
        effect = payload_effect(fault)
        if effect is not None or isinstance(fault, RugPullFault | ExpireHandleFault):
            response, metadata = _only_response(items)
            if isinstance(fault, RugPullFault):
                result, detail = alter_tool_list(fault, response.result)
            elif isinstance(fault, ExpireHandleFault):
                detail = self._confirm_jump(index, fault, response, site)
                return items, detail, False
            else:
                assert effect is not None
                try:
                    path = fault.target.payload_path(site.truth)
                except PayloadPathError as error:
                    raise NotApplicableError(str(error)) from None
                result, detail = alter_result(response.result, lambda payload: effect(fault, path, payload, context))
            return [SessionMessage(response.model_copy(update={"result": result}), metadata)], detail, False
        if isinstance(fault, JsonRpcErrorFault):
            response, metadata = _only_response(items)
            replacement = types.JSONRPCError(
                jsonrpc="2.0", id=response.id, error=types.ErrorData(code=fault.code, message=fault.message)
            )
            return [SessionMessage(replacement, metadata)], f"result replaced by JSON-RPC error {fault.code}", False
        if isinstance(fault, KillFault):
            if self._kill is not None:
                await self._kill()
                return [], "server killed with the call in flight; connection closed", True
            return [], "no kill callback: connection closed with the call in flight", True
        if not items:
            raise NotApplicableError("the response was already withheld by another fault")
        if isinstance(fault, TruncateFault | CorruptJsonFault):
            damaged: list[Item] = []
            detail = ""
            for entry in items:
                if not isinstance(entry, SessionMessage):
                    damaged.append(entry)
                    continue
                if isinstance(fault, TruncateFault):
                    error_item, detail = truncated_frame(entry.message, keep=fault.keep)
                else:
                    error_item, detail = corrupted_frame(entry.message, rng=context.rng("corrupt"))
                damaged.append(error_item)
            return damaged, detail, False
        if isinstance(fault, DuplicateFault):
            return items + items, "response delivered twice", False
        if isinstance(fault, TimeoutFault):
            return [], "response withheld: it never reaches the client", False
        if isinstance(fault, ReorderFault):
            if self._in_flight:
                self._held.extend(items)
                return [], "response held until the next response on the connection passes it", False
            await anyio.sleep(fault.hold_s)
            return items, f"nothing else in flight: response held {fault.hold_s:g}s", False
        raise NotApplicableError(f"{fault.kind} does not act on responses")  # pragma: no cover

    def _confirm_jump(
        self, index: int, fault: ExpireHandleFault, response: types.JSONRPCResponse, site: CallSite
    ) -> str:
        jump = self._jumps.get((response.id, index))
        if jump is None:  # pragma: no cover - registered with the request
            raise NotApplicableError("the request was not seen")
        if response.result.get("isError"):
            raise NotApplicableError("the tool returned an error result")
        if fault.target.path is not None or fault.target.role is not None:
            payload = response.result.get("structuredContent")
            try:
                path = fault.target.payload_path(site.truth)
                if payload is None:
                    raise PayloadPathError("the result has no structuredContent")
                read_path(payload, path)
            except PayloadPathError as error:
                raise NotApplicableError(str(error)) from None
        advance = fault.advance_s
        if advance is None:
            ttl = site.truth.ttl_seconds if site.truth is not None else None
            if ttl is None:
                raise NotApplicableError("the handle TTL is unknown: give advance_s for servers without a truth")
            advance = ttl + 1.0
        jump.advance_s = advance
        jump.confirmed = True
        after = "every later request" if jump.after_clock is None else f"requests with clock > {jump.after_clock:g}"
        return f"logical clock advanced by {advance:g}s for {after} of run {site.run}"

    def _record(self, site: CallSite, index: int, fault: FaultSpec, detail: str, *, applied: bool = True) -> None:
        self._on_fault(
            FaultEvent(
                time=time.time(),
                run=site.run,
                node=site.node,
                item=site.item,
                server=self.alias,
                index=index,
                kind=fault.kind,
                layer=fault.layer,
                expected=fault.expected if applied else (),
                detail=detail if applied else _NOT_APPLICABLE + detail,
                applied=applied,
            )
        )


def _only_response(items: list[Item]) -> tuple[types.JSONRPCResponse, Any]:
    """The single result response among ``items`` (a payload fault needs one), and its metadata."""
    if len(items) == 1 and isinstance(items[0], SessionMessage):
        message = items[0].message
        if isinstance(message, types.JSONRPCResponse):
            return message, items[0].metadata
        if isinstance(message, types.JSONRPCError):
            raise NotApplicableError(f"the server answered with JSON-RPC error {message.error.code}")
    raise NotApplicableError("the response was already replaced by another fault")


def _clock_of(message: types.JSONRPCRequest) -> float | None:
    """The logical clock a request carries in its ``_meta``, if any."""
    meta = (message.params or {}).get("_meta")
    value = meta.get(CLOCK_META_KEY) if isinstance(meta, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
