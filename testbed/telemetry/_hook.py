"""The per-call hook, light enough to import everywhere: a shared no-op unless a span session is active.

Only the OpenTelemetry API is imported here (the MCP SDK imports it anyway); the SDK, the OTLP encoder and
protobuf load with :mod:`testbed.telemetry.export`, when a session starts.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from testbed.transport import current_call

if TYPE_CHECKING:
    from testbed.telemetry._session import SpanSession

__all__ = [
    "ITEM",
    "NODE",
    "OUTCOME",
    "RUN",
    "SERVER",
    "SPANS_FILE",
    "TOOL",
    "CallSpan",
    "active_session",
    "call_span",
    "opening_a_call_span",
    "set_active",
]

SPANS_FILE: Final = "spans.otlp.jsonl"
"""The spans of an experiment directory: one OTLP ``ExportTraceServiceRequest`` (JSON) per line, one per run."""
RUN: Final = "testbed.run"
NODE: Final = "testbed.node"
ITEM: Final = "testbed.item"
SERVER: Final = "testbed.server"
TOOL: Final = "gen_ai.tool.name"
OUTCOME: Final = "testbed.outcome"

_opening: contextvars.ContextVar[bool] = contextvars.ContextVar("opening_call_span", default=False)
"""Set while :func:`call_span` starts a call's own span (its ID is the call site's, see ``CallSiteIds``)."""

_active: list[SpanSession] = []
"""The active session (at most one per process)."""


def active_session() -> SpanSession | None:
    """The session collecting spans now, or ``None``."""
    return _active[0] if _active else None


def opening_a_call_span() -> bool:
    """Whether the span being started is a call's own (started by :func:`call_span`)."""
    return _opening.get()


def set_active(session: SpanSession | None) -> None:
    """Make ``session`` the active one (``None``: none)."""
    _active[:] = [session] if session is not None else []


class CallSpan:
    """The span of one tool call; :meth:`end` records its outcome (idempotent)."""

    def __init__(self, span: trace.Span | None, token: Any) -> None:
        self._span = span
        self._token = token

    def end(self, outcome: str, error: str | None) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        span.set_attribute(OUTCOME, outcome)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        context.detach(self._token)


_NO_SPAN: Final = CallSpan(None, None)


def call_span(tool: str) -> CallSpan:
    """Open the span of a call of ``tool`` at the current call site (and make it current), or a no-op."""
    session = active_session()
    if session is None:
        return _NO_SPAN
    site = current_call.get()
    attributes: dict[str, Any] = {TOOL: tool}
    if site is not None:
        attributes |= {RUN: site.run, NODE: site.node, ITEM: site.item}
        if site.server is not None:
            attributes[SERVER] = site.server
    token = _opening.set(True)
    try:
        span = session.tracer.start_span(f"testbed call {tool}", kind=SpanKind.INTERNAL, attributes=attributes)
    finally:
        _opening.reset(token)
    return CallSpan(span, context.attach(trace.set_span_in_context(span)))
