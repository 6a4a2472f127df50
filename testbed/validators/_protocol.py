"""Protocol validators: JSON-RPC ids, deadlines, closed transports, bad frames, error classes, list changes.

Each reads only the wire messages and call outcomes recorded for one run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from testbed.events import CallOutcomeKind, MessageEvent, internalize
from testbed.transport import LISTING_NODE
from testbed.validators._model import RunRecord, ValidatorSpec, Violation

__all__ = [
    "VALIDATORS",
    "check_error_misclassified",
    "check_id_mismatch",
    "check_malformed_message",
    "check_timeout",
    "check_tool_list_changed",
    "check_transport_closed",
]

"""The node name under which a run's own ``tools/list`` exchange is recorded."""

_COMPARED_TOOL_FIELDS = ("description", "inputSchema", "outputSchema")
"""What of a listed tool must stay the same across the experiment (besides its name)."""


def check_timeout(record: RunRecord) -> Iterator[Violation]:
    """``proto.timeout``: a call whose outcome is ``timeout`` (no response before its deadline)."""
    yield from _calls_with_outcome(record, CallOutcomeKind.TIMEOUT, "proto.timeout")


def check_transport_closed(record: RunRecord) -> Iterator[Violation]:
    """``proto.transport_closed``: a call whose outcome is ``transport_closed`` (the connection closed in flight)."""
    yield from _calls_with_outcome(record, CallOutcomeKind.TRANSPORT_CLOSED, "proto.transport_closed")


def _calls_with_outcome(record: RunRecord, outcome: CallOutcomeKind, violation_id: str) -> Iterator[Violation]:
    for position, call in record.call_events():
        if call.outcome is outcome:
            yield Violation.at_call(
                violation_id,
                record.started.run,
                position,
                call,
                f"{call.server}.{call.tool}: {call.error or outcome.value}",
            )


def check_malformed_message(record: RunRecord) -> Iterator[Violation]:
    """``proto.malformed_message``: a server-to-client frame recorded as a transport exception (unparseable)."""
    for position, message in record.messages_to_client():
        if "transport_exception" in message.message:
            yield Violation(
                id="proto.malformed_message",
                run=record.started.run,
                server=message.server,
                node=message.node,
                item=message.item,
                detail=f"unparseable frame from {message.server}: {message.message['transport_exception']}",
                evidence=(position,),
            )


def check_error_misclassified(record: RunRecord) -> Iterator[Violation]:
    """``proto.error_misclassified``: a ``tools/call`` request answered by a JSON-RPC error object, not a result."""
    for position, message in record.messages_to_client():
        if "error" not in message.message:
            continue
        request = _requests(record).get(_request_key(message, message.message.get("id")))
        if request is None or request[1].message.get("method") != "tools/call":
            continue
        request_position, request_event = request
        error = message.message["error"]
        code = error.get("code") if isinstance(error, dict) else None
        tool = request_event.message.get("params", {}).get("name", "?")
        yield Violation(
            id="proto.error_misclassified",
            run=record.started.run,
            server=message.server,
            node=message.node,
            item=message.item,
            detail=f"{message.server}.{tool} answered with JSON-RPC error {code} instead of a result with isError",
            evidence=(request_position, position),
        )


def check_id_mismatch(record: RunRecord) -> Iterator[Violation]:
    """``proto.id_mismatch``: a response whose id answers no request of its call in the run, or answers one twice."""
    requests = _requests(record)
    answered: dict[tuple[str, str | None, int | None, str], int] = {}
    for position, message in record.messages_to_client():
        body = message.message
        if not ("result" in body or "error" in body):
            continue
        if body.get("id") is None:
            continue  # an error about an unparseable request carries no id: a malformed frame, not a mismatch
        key = _request_key(message, body["id"])
        if key not in requests:
            detail = f"response id {body['id']!r} from {message.server} answers no request of this run"
            evidence: tuple[int, ...] = (position,)
        elif key in answered:
            detail = f"response id {body['id']!r} from {message.server} answers its request a second time"
            evidence = (requests[key][0], answered[key], position)
        else:
            answered[key] = position
            continue
        yield Violation(
            id="proto.id_mismatch",
            run=record.started.run,
            server=message.server,
            node=message.node,
            item=message.item,
            detail=detail,
            evidence=evidence,
        )


def check_tool_list_changed(record: RunRecord) -> Iterator[Violation]:
    """``proto.tool_list_changed``: a run's ``tools/list`` differs from the listing recorded in the header.

    Tools are compared by name, description, ``inputSchema`` and ``outputSchema``.
    One violation per server and run, naming every difference.
    """
    for position, message in record.messages_to_client():
        if message.node != LISTING_NODE:
            continue
        if _listed_as_recorded(record, message):
            continue
        result = record.internalize(message.message.get("result"))
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            continue
        before = record.per_server(
            message.server, "proto.tools_by_name", lambda tools: _tools_by_name(internalize(tools, record.blobs))
        )
        after = _tools_by_name(result["tools"])
        changes = _listing_changes(before, after)
        if changes:
            yield Violation(
                id="proto.tool_list_changed",
                run=record.started.run,
                server=message.server,
                node=message.node,
                item=message.item,
                detail=f"{message.server} tools/list changed since the experiment started: {'; '.join(changes)}",
                evidence=(position,),
            )


def _listed_as_recorded(record: RunRecord, message: MessageEvent) -> bool:
    """Whether a ``tools/list`` result is, as recorded, the header's listing of its server: then nothing changed.

    Blob references are content-addressed, so equal recorded values resolve to equal values; comparing them as
    recorded spares resolving both. Anything else is left to the full comparison.
    """
    server = record.servers.get(message.server)
    result = message.message.get("result")
    return server is not None and isinstance(result, dict) and result.get("tools") == server.tools


def _listing_changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    changes = [f"tool {name!r} removed" for name in before if name not in after]
    changes += [f"tool {name!r} added" for name in after if name not in before]
    for name, tool in before.items():
        if name not in after:
            continue
        changed = [key for key in _COMPARED_TOOL_FIELDS if tool.get(key) != after[name].get(key)]
        if changed:
            changes.append(f"tool {name!r} changed its {', '.join(changed)}")
    return changes


def _tools_by_name(tools: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(tools, list):
        return {}
    return {str(tool.get("name")): tool for tool in tools if isinstance(tool, dict)}


def _requests(record: RunRecord) -> dict[tuple[str, str | None, int | None, str], tuple[int, MessageEvent]]:
    """The run's client requests by :func:`_request_key`, with their positions (the first when a key repeats).

    Once per run: shared, read-only."""
    return record.memo("proto.requests", lambda: _find_requests(record))


def _find_requests(record: RunRecord) -> dict[tuple[str, str | None, int | None, str], tuple[int, MessageEvent]]:
    found: dict[tuple[str, str | None, int | None, str], tuple[int, MessageEvent]] = {}
    for position, message in record.messages_to_server():
        body = message.message
        if "method" in body and body.get("id") is not None:
            found.setdefault(_request_key(message, body["id"]), (position, message))
    return found


def _request_key(message: MessageEvent, request_id: Any) -> tuple[str, str | None, int | None, str]:
    """Server, call (node, item) and id: a response is recorded under the call of the request it answers.

    Keying on the call as well keeps apart equal ids of a restarted server's new connection.
    """
    return (message.server, message.node, message.item, _id_key(request_id))


def _id_key(request_id: Any) -> str:
    """A JSON-RPC id as a key that keeps ``1`` and ``"1"`` apart (they are different ids)."""
    kind = type(request_id)
    if kind is int or kind is str:  # the ids clients send: a few, again and again, each written once
        found = _ID_KEYS.get((kind, request_id))
        if found is None:
            if len(_ID_KEYS) >= 4096:
                _ID_KEYS.clear()
            found = _ID_KEYS[(kind, request_id)] = f"{kind.__name__}:{request_id}"
        return found
    return f"{kind.__name__}:{request_id}"


_ID_KEYS: dict[tuple[type, int | str], str] = {}


VALIDATORS: tuple[ValidatorSpec, ...] = (
    ValidatorSpec("proto.timeout", ("proto.timeout",), check_timeout),
    ValidatorSpec("proto.transport_closed", ("proto.transport_closed",), check_transport_closed),
    ValidatorSpec("proto.malformed_message", ("proto.malformed_message",), check_malformed_message),
    ValidatorSpec("proto.error_misclassified", ("proto.error_misclassified",), check_error_misclassified),
    ValidatorSpec("proto.id_mismatch", ("proto.id_mismatch",), check_id_mismatch),
    ValidatorSpec("proto.tool_list_changed", ("proto.tool_list_changed",), check_tool_list_changed),
)
