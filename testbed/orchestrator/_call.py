"""Make one tool call and classify its outcome; never raise for a server's misbehaviour."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import mcp.types as types
import pydantic
from mcp import MCPError

from testbed.events import CallOutcomeKind
from testbed.telemetry import call_span
from testbed.transport import Connection

_GRACE_S = 2.0
"""Beyond the SDK's own read timeout, the orchestrator's hard bound on a call (guards against hangs)."""


@dataclass(frozen=True)
class CallOutcome:
    kind: CallOutcomeKind
    result: types.CallToolResult | None
    error: str | None
    duration_s: float

    @functools.cached_property
    def payload(self) -> Any:
        return result_payload(self.result) if self.result is not None else None

    @functools.cached_property
    def content(self) -> list[dict[str, Any]]:
        if self.result is None:
            return []
        return [block.model_dump(by_alias=True, mode="json", exclude_none=True) for block in self.result.content]


class AnswersAtOnce:
    """A client that can answer a tool call itself, at once (direct replay: see :mod:`._direct_replay`).

    What it answers is exactly what its session's ``send_request`` of the call would return or raise, so
    :func:`call_tool` classifies the outcome as it would have. (A plain base class, not an ABC: telling a live
    client from it is then a quick check on every call.)
    """

    def answering(
        self, tool: str, arguments: dict[str, Any], meta: dict[str, Any]
    ) -> Callable[[], types.CallToolResult] | None:
        """What answers this call (returns its result or raises as the session would), or None where only the
        session can tell: the call is then sent through it (what this base class answers for every call)."""
        return None


def result_payload(result: types.CallToolResult) -> Any:
    """structuredContent when present, else the JSON of the first text block, else None."""
    if result.structured_content is not None:
        return result.structured_content
    for block in result.content:
        if isinstance(block, types.TextContent):
            try:
                return json.loads(block.text)
            except ValueError:
                return None
    return None


def _no_response(deadline_s: float | None) -> str:
    return f"no response within {deadline_s:g}s" if deadline_s is not None else "no response"


def _error_text(result: types.CallToolResult) -> str:
    texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
    return texts[0].strip().splitlines()[0] if texts and texts[0].strip() else "tool error"


async def call_tool(
    connection: Connection,
    tool: str,
    arguments: dict[str, Any],
    *,
    meta: dict[str, Any],
    deadline_s: float | None,
    nominal_deadline_s: float | None = None,
) -> CallOutcome:
    """Call a tool without the SDK's client-side outputSchema check (that is a validator's job).

    ``deadline_s`` is ``None`` only where no wait can happen (direct replay answers at once): nothing is armed.
    ``nominal_deadline_s`` is the deadline reported in a timeout's message when the wait is
    shortened (replay times a recorded timeout out at once).

    Returns:
        The classified outcome: ok, tool error, protocol error, timeout or transport closed.
    """
    client = connection.client
    answer = (
        client.answering(tool, arguments, meta) if deadline_s is None and isinstance(client, AnswersAtOnce) else None
    )
    if answer is None:
        params = types.CallToolRequestParams.model_validate({"name": tool, "arguments": arguments, "_meta": meta})
        request = types.CallToolRequest(params=params)
    started = time.perf_counter()
    span = call_span(tool)  # a shared no-op unless a span session is active (testbed.telemetry)
    reported = nominal_deadline_s if nominal_deadline_s is not None else deadline_s

    def finish(kind: CallOutcomeKind, result: types.CallToolResult | None, error: str | None) -> CallOutcome:
        span.end(kind.value, error)
        return CallOutcome(kind=kind, result=result, error=error, duration_s=time.perf_counter() - started)

    try:
        if answer is not None:
            result = answer()
        elif deadline_s is None:
            result = await client.session.send_request(request, types.CallToolResult)
        else:
            with anyio.fail_after(deadline_s + _GRACE_S):
                result = await client.session.send_request(
                    request, types.CallToolResult, request_read_timeout_seconds=deadline_s
                )
    except TimeoutError:
        return finish(CallOutcomeKind.TIMEOUT, None, _no_response(reported))
    except MCPError as error:
        if error.code == types.REQUEST_TIMEOUT:
            return finish(CallOutcomeKind.TIMEOUT, None, _no_response(reported))
        if error.code == types.CONNECTION_CLOSED:
            return finish(CallOutcomeKind.TRANSPORT_CLOSED, None, error.message)
        return finish(CallOutcomeKind.PROTOCOL_ERROR, None, f"JSON-RPC error {error.code}: {error.message}")
    except pydantic.ValidationError as error:
        return finish(CallOutcomeKind.PROTOCOL_ERROR, None, f"invalid result: {error.errors()[0]['msg']}")
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as error:
        return finish(CallOutcomeKind.TRANSPORT_CLOSED, None, error.__class__.__name__)
    except BaseException as error:  # not the server's doing (cancelled, or a replay giving up): end the span, so
        span.end("aborted", error.__class__.__name__)  # its context is not left current for what runs next
        raise
    if result.is_error:
        return finish(CallOutcomeKind.TOOL_ERROR, result, _error_text(result))
    return finish(CallOutcomeKind.OK, result, None)
