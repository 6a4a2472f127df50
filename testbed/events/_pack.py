"""No part of a message twice in ``events.jsonl``: a line leaves out what an earlier line holds already, and the
reader puts it back, so every event reads back exactly as it was made. The log stays readable on its own (no
blob is needed to read it).

What a line leaves out is set to ``None`` in place (``{}`` for arguments, the rest of the dict for ``_meta``), so
key order is kept, and named in the event's ``elided`` field with where to find it:

- ``"result": "handshake"``: a ``tools/list`` result the same as the one its server listed in its handshake;
- ``"params._meta"`` or ``"result._meta"``: ``"handshake"``: the ``_meta`` ends with every entry (in order) of
  the ``_meta`` its server's latest handshake message that way had (protocol version, client or server info);
- ``"result.structuredContent": "text:<i>"``: a tool result's ``structuredContent`` that is the JSON of its
  ``i``-th content block's text, kept in the line (servers send both);
- ``"arguments": "request:<seq>"`` and ``"payload": "response:<seq>"`` (a call event): the ``params.arguments``
  of its request, the ``result.structuredContent`` of its response: message ``seq`` of the same run, node, item
  and server, recorded earlier in that run.

Each is left out only when putting it back gives the same JSON, byte for byte; otherwise the line keeps it. A
value found in a left-out place (a line edited by hand) wins over what it refers to. Nothing is re-derived from
image or model libraries: only JSON, parsed and written by the same code both ways.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final, TypeVar

from pydantic_core import to_json

from testbed.events._model import CallEvent, Direction, Event, MessageEvent, RunFinished, RunStarted

RESULT: Final = "result"
STRUCTURED: Final = "result.structuredContent"
ARGUMENTS: Final = "arguments"
PAYLOAD: Final = "payload"
_META: Final = {Direction.CLIENT_TO_SERVER: "params", Direction.SERVER_TO_CLIENT: "result"}
"""Where a message's ``_meta`` is, by direction."""
_META_PATHS: Final = {f"{outer}._meta": direction for direction, outer in _META.items()}
"""The ``elided`` path of each direction's ``_meta``."""

_HANDSHAKE: Final = "handshake"
_TEXT: Final = "text:"
_REQUEST: Final = "request:"
_RESPONSE: Final = "response:"
_NO_ELIDED: Final = {"elided"}

_Json = tuple[Any, bytes]
"""A value and its JSON."""


class _Recorded:
    """What earlier lines hold, as the reader has it when it reaches a line: writer and reader keep the same, so a
    reference the writer makes names what the reader finds."""

    def __init__(self) -> None:
        self._runs: dict[int, dict[tuple[str, int, str], dict[int, MessageEvent]]] = {}
        """The messages of each run not finished yet, by call (node, item, server), then seq."""
        self._meta: dict[tuple[str, Direction], _Json] = {}
        self._listing: dict[str, _Json] = {}

    def see(self, event: Event) -> None:
        if isinstance(event, MessageEvent):  # most lines: checked first
            self.see_message(event)
        elif isinstance(event, RunStarted):
            self._runs[event.run] = {}  # a run recorded again (after a kill) starts afresh
        elif isinstance(event, RunFinished):
            self._runs.pop(event.run, None)

    def see_message(self, event: MessageEvent) -> None:
        if event.run is not None and event.node is not None:
            calls = self._runs.get(event.run)
            if calls is None:
                calls = self._runs[event.run] = {}
            key = (event.node, event.item or 0, event.server)
            seen = calls.get(key)
            if seen is None:
                seen = calls[key] = {}
            seen[event.seq] = event
        elif event.run is None:
            meta = _meta_of(event.message, event.direction)
            if isinstance(meta, dict) and meta:
                self._meta[(event.server, event.direction)] = meta, to_json(meta)
            result = event.message.get("result")
            if isinstance(result, dict) and isinstance(result.get("tools"), list):
                self._listing[event.server] = result, to_json(result)

    def handshake_meta(self, server: str, direction: Direction) -> _Json | None:
        """The ``_meta`` of the server's latest handshake message that way."""
        return self._meta.get((server, direction))

    def handshake_listing(self, server: str) -> _Json | None:
        """The server's latest ``tools/list`` result in a handshake."""
        return self._listing.get(server)

    def of_call(self, call: CallEvent) -> dict[int, MessageEvent]:
        """The call's messages by seq (the latest recorded for each)."""
        return self._runs.get(call.run, {}).get((call.node, call.item, call.server), {})


def _meta_of(message: dict[str, Any], direction: Direction) -> Any:
    outer = message.get(_META[direction])
    return outer.get("_meta") if isinstance(outer, dict) else None


def _without_tail(meta: dict[str, Any], tail: _Json) -> dict[str, Any] | None:
    """``meta`` without its last entries when they are ``tail``'s, in order and as JSON; else ``None``."""
    items = list(meta.items())
    cut = len(items) - len(tail[0])
    if cut < 0 or to_json(dict(items[cut:])) != tail[1]:
        return None
    return dict(items[:cut])


def _first_text(result: dict[str, Any]) -> tuple[int, Any] | None:
    content = result.get("content")
    if not isinstance(content, list):
        return None
    for index, block in enumerate(content):
        if isinstance(block, dict) and block.get("type") == "text":
            return index, block.get("text")
    return None


def _holds_json_of(text: str, value: Any) -> bool:
    """Whether ``text`` parses to ``value`` (the same JSON, not merely equal in Python: ``1 == 1.0``)."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return False
    return to_json(parsed) == to_json(value)


def _request_arguments(message: MessageEvent) -> Any:
    params = message.message.get("params")
    if message.message.get("method") != "tools/call" or not isinstance(params, dict):
        return None
    return params.get("arguments")


def _response_structured(message: MessageEvent) -> Any:
    result = message.message.get("result")
    return result.get("structuredContent") if isinstance(result, dict) else None


class Packer:
    """Turns events into the lines that record them (see the module docstring), batch after batch."""

    def __init__(self) -> None:
        self._recorded = _Recorded()

    def lines(self, events: Iterable[Event]) -> str:
        lines: list[str] = []
        for event in events:
            event_line: Event
            if isinstance(event, MessageEvent):
                event_line = self._message(event)
            elif isinstance(event, CallEvent):
                event_line = self._call(event)
            else:
                event_line = event
            self._recorded.see(event)
            if isinstance(event_line, MessageEvent | CallEvent) and event_line.elided is None:
                lines.append(event_line.model_dump_json(exclude=_NO_ELIDED))
            else:
                lines.append(event_line.model_dump_json())
        return "".join(line + "\n" for line in lines)

    def _message(self, event: MessageEvent) -> MessageEvent:
        if event.elided is not None or event.run is None:  # a handshake message, which others refer to: whole
            return event
        message = event.message
        elided: dict[str, str] = {}
        result = message.get(RESULT)
        listing = self._recorded.handshake_listing(event.server)
        if isinstance(result, dict) and listing is not None and "tools" in result and to_json(result) == listing[1]:
            elided[RESULT] = _HANDSHAKE
            message = {**message, RESULT: None}
        outer_key = _META[event.direction]
        outer = message.get(outer_key)
        tail = self._recorded.handshake_meta(event.server, event.direction)
        if isinstance(outer, dict) and isinstance(outer.get("_meta"), dict) and tail is not None:
            kept = _without_tail(outer["_meta"], tail)
            if kept is not None:
                elided[f"{outer_key}._meta"] = _HANDSHAKE
                message = {**message, outer_key: {**outer, "_meta": kept}}
        result = message.get(RESULT)
        if isinstance(result, dict) and result.get("structuredContent") is not None:
            found = _first_text(result)
            text = found[1] if found is not None else None
            # Only a text kept in the line (not a blob reference): the log must read without its blobs.
            if found is not None and isinstance(text, str) and _holds_json_of(text, result["structuredContent"]):
                elided[STRUCTURED] = f"{_TEXT}{found[0]}"
                message = {**message, RESULT: {**result, "structuredContent": None}}
        if not elided:
            return event
        return event.model_copy(update={"message": message, "elided": elided})

    def _call(self, event: CallEvent) -> CallEvent:
        messages = self._recorded.of_call(event)
        if event.elided is not None or not messages:
            return event
        elided: dict[str, str] = {}
        update: dict[str, Any] = {}
        for seq in sorted(messages, reverse=True):  # the latest that matches
            message = messages[seq]
            if message.direction is Direction.CLIENT_TO_SERVER and ARGUMENTS not in elided:
                arguments = _request_arguments(message)
                if isinstance(arguments, dict) and event.arguments and to_json(arguments) == to_json(event.arguments):
                    elided[ARGUMENTS] = f"{_REQUEST}{seq}"
                    update[ARGUMENTS] = {}
            elif message.direction is Direction.SERVER_TO_CLIENT and PAYLOAD not in elided:
                structured = _response_structured(message)
                if structured is not None and to_json(structured) == to_json(event.payload):
                    elided[PAYLOAD] = f"{_RESPONSE}{seq}"
                    update[PAYLOAD] = None
        if not elided:
            return event
        return event.model_copy(update={**update, "elided": dict(sorted(elided.items()))})


class Unpacker:
    """Puts back what lines left out, reading them in order."""

    def __init__(self) -> None:
        self._recorded = _Recorded()

    def event(self, event: Event) -> Event:
        """The event as made, from the event its line reads as; that event is this reader's (just validated from
        its line, shared with no one), and is completed in place. Raises ``ValueError`` naming what is missing or
        malformed."""
        if isinstance(event, MessageEvent):
            if event.elided is not None:
                event = self._message(event, event.elided)
            self._recorded.see_message(event)
            return event
        if isinstance(event, CallEvent) and event.elided is not None:
            event = self._call(event, event.elided)
        self._recorded.see(event)
        return event

    def _message(self, event: MessageEvent, elided: dict[str, str]) -> MessageEvent:
        message = dict(event.message)
        for path, source in elided.items():
            if path == RESULT and source == _HANDSHAKE:
                if message.get(RESULT) is None:  # a value in the line (edited by hand) wins
                    message[RESULT] = self._handshake(event, self._recorded.handshake_listing(event.server))
            elif (direction := _META_PATHS.get(path)) is not None and source == _HANDSHAKE:
                outer_key = _META[direction]
                tail = self._handshake(event, self._recorded.handshake_meta(event.server, direction))
                outer = message.get(outer_key)
                if not isinstance(outer, dict) or not isinstance(meta := outer.get("_meta"), dict):
                    raise ValueError(f"elided {path}: the line has no {path} to complete")
                message[outer_key] = {**outer, "_meta": {**meta, **tail}}
            elif path == STRUCTURED and source.startswith(_TEXT) and isinstance(message.get(RESULT), dict):
                result = dict(message[RESULT])
                if result.get("structuredContent") is None:
                    result["structuredContent"] = json.loads(_text_at(result, source.removeprefix(_TEXT)))
                    message[RESULT] = result
            else:
                raise ValueError(f"elided: cannot restore {path!r} from {source!r}")
        return _completed(event, {"message": message, "elided": None})

    @staticmethod
    def _handshake(event: MessageEvent, found: _Json | None) -> Any:
        """The handshake's own value, shared (as read back from its JSON, which is what the writer compared)."""
        if found is None:
            raise ValueError(f"elided: no handshake of server {event.server} ({event.direction.value}) before it")
        return found[0]

    def _call(self, event: CallEvent, elided: dict[str, str]) -> CallEvent:
        update: dict[str, Any] = {"elided": None}
        for path, source in elided.items():
            if path == ARGUMENTS and source.startswith(_REQUEST):
                if event.arguments:
                    continue  # a value in the line (edited by hand) wins
                request = self._message_of(event, source.removeprefix(_REQUEST), Direction.CLIENT_TO_SERVER)
                update[ARGUMENTS] = _request_arguments(request)
                if not isinstance(update[ARGUMENTS], dict):
                    raise ValueError(f"elided arguments: message {source} of this call is no tools/call request")
            elif path == PAYLOAD and source.startswith(_RESPONSE):
                if event.payload is not None:
                    continue
                response = self._message_of(event, source.removeprefix(_RESPONSE), Direction.SERVER_TO_CLIENT)
                update[PAYLOAD] = _response_structured(response)
            else:
                raise ValueError(f"elided: cannot restore {path!r} from {source!r}")
        return _completed(event, update)

    def _message_of(self, event: CallEvent, seq: str, direction: Direction) -> MessageEvent:
        found = self._recorded.of_call(event).get(int(seq))
        if found is None or found.direction is not direction:
            raise ValueError(
                f"elided: message {seq} ({direction.value}) of call {event.node}[{event.item}] on "
                f"{event.server} is not recorded before it in run {event.run}"
            )
        return found


_E = TypeVar("_E", MessageEvent, CallEvent)


def _completed(event: _E, update: dict[str, Any]) -> _E:
    """``event.model_copy(update=update)`` without the copy, for an event no one else holds yet (a third of
    reading a log went into copying each event just read)."""
    event.__dict__.update(update)
    event.__pydantic_fields_set__.update(update)
    return event


def _text_at(result: dict[str, Any], index: str) -> str:
    content = result.get("content")
    position = int(index)
    if isinstance(content, list) and 0 <= position < len(content) and isinstance(content[position], dict):
        text = content[position].get("text")
        if isinstance(text, str):
            return text
    raise ValueError(f"elided result.structuredContent: content block {index} holds no text")
