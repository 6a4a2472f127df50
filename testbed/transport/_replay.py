"""Serve a recorded experiment's server responses: replay needs no servers, models or LLMs.

Each client request is matched to the recording by the call it belongs to
(run, node, item, from :data:`current_call`) or, outside calls, by its place in
the connection's handshake. The recorded responses are sent back with the new
request's JSON-RPC id. A call recorded as ending with a closed transport ends
the replayed stream the same way.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import mcp.types as types
from mcp.shared.message import SessionMessage
from pydantic import TypeAdapter

from testbed.events import (
    BlobStore,
    CallEvent,
    CallOutcomeKind,
    Direction,
    Event,
    MessageEvent,
    ReadOnceBlobs,
    internalize,
)
from testbed.transport._recorder import CallSite, RecordedFrameError, current_call

CallKey = tuple[int, str, int]
_MESSAGE: TypeAdapter[types.JSONRPCMessage] = TypeAdapter(types.JSONRPCMessage)


@dataclass
class ServerRecording:
    """What one server alias sent the client, grouped the way replay asks for it."""

    handshake: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[CallKey, list[dict[str, Any]]] = field(default_factory=dict)
    closed: set[CallKey] = field(default_factory=set)
    """Calls whose recorded outcome was a closed transport."""


def recordings_by_server(events: list[Event], blobs: BlobStore) -> dict[str, ServerRecording]:
    """Split recorded events into per-server recordings (large strings restored from blobs, each read once).

    Every recorded response is parsed into a JSON-RPC message once, when replay serves it (with the new
    request's id): a replay asks each call once, so nothing is parsed twice.
    """
    recordings: dict[str, ServerRecording] = collections.defaultdict(ServerRecording)
    once = ReadOnceBlobs(blobs)
    for event in events:
        if isinstance(event, MessageEvent) and event.direction is Direction.SERVER_TO_CLIENT:
            message = internalize(event.message, once)
            recording = recordings[event.server]
            if event.run is None or event.node is None:
                recording.handshake.append(message)
            else:
                recording.calls.setdefault((event.run, event.node, event.item or 0), []).append(message)
        elif isinstance(event, CallEvent) and event.outcome is not CallOutcomeKind.SKIPPED:
            key = (event.run, event.node, event.item)
            recordings[event.server].calls.setdefault(key, [])  # a call that got no answer is still a recorded call
            if event.outcome is CallOutcomeKind.TRANSPORT_CLOSED:
                recordings[event.server].closed.add(key)
    return dict(recordings)


def _as_item(message: dict[str, Any], request_id: Any) -> SessionMessage | Exception:
    if "transport_exception" in message:
        return RecordedFrameError(str(message["transport_exception"]))
    replayed = dict(message)
    if "id" in replayed and ("result" in replayed or "error" in replayed):
        replayed["id"] = request_id
    return SessionMessage(_MESSAGE.validate_python(replayed))


class _ReplayRead:
    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[SessionMessage | Exception](1000)
        self.ended = False

    async def receive(self) -> SessionMessage | Exception:
        return await self._receive.receive()

    def __aiter__(self) -> _ReplayRead:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def push(self, item: SessionMessage | Exception) -> None:
        self._send.send_nowait(item)

    def end(self) -> None:
        self.ended = True
        self._send.close()

    async def aclose(self) -> None:
        self._send.close()
        self._receive.close()


class _ReplayWrite:
    def __init__(self, recording: ServerRecording, read: _ReplayRead) -> None:
        self._recording = recording
        self._read = read
        self._handshake = collections.deque(recording.handshake)
        self._served: set[CallKey] = set()

    async def send(self, item: SessionMessage) -> None:
        if self._read.ended:
            raise anyio.ClosedResourceError
        message = item.message
        if not isinstance(message, types.JSONRPCRequest):
            return  # notifications need no answer
        context: CallSite | None = current_call.get()
        if context is None:
            response = self._handshake.popleft() if self._handshake else None
            if response is None:
                self._read.push(_missing(message.id, f"no recorded handshake answer for {message.method}"))
            else:
                self._read.push(_as_item(response, message.id))
            return
        key = (context.run, context.node, context.item)
        if key in self._served:
            self._read.push(_missing(message.id, f"call {key} asked twice"))
            return
        self._served.add(key)
        recorded = self._recording.calls.get(key)
        if recorded is None and key not in self._recording.closed:
            self._read.push(_missing(message.id, f"no recorded call {key}"))
            return
        for response in recorded or []:
            self._read.push(_as_item(response, message.id))
        if key in self._recording.closed:
            self._read.end()

    async def aclose(self) -> None:
        await self._read.aclose()


def _missing(request_id: Any, reason: str) -> SessionMessage:
    error = types.JSONRPCError(
        jsonrpc="2.0", id=request_id, error=types.ErrorData(code=types.INTERNAL_ERROR, message=f"replay: {reason}")
    )
    return SessionMessage(error)


class ReplayTransport:
    """A client transport that answers from a :class:`ServerRecording`."""

    def __init__(self, recording: ServerRecording) -> None:
        self._recording = recording

    async def __aenter__(self) -> tuple[_ReplayRead, _ReplayWrite]:
        read = _ReplayRead()
        return read, _ReplayWrite(self._recording, read)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None
