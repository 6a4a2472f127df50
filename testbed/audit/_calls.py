"""Bounded tool calls for the audit, with the evidence each leaves and the server's liveness."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import mcp.types as types

from testbed.audit._card import Evidence
from testbed.audit._payload import excerpt, result_excerpt
from testbed.events import CallOutcomeKind
from testbed.orchestrator import CallOutcome, call_tool
from testbed.protocol import CLOCK_META_KEY, SCOPE_META_KEY
from testbed.transport import Connection

__all__ = ["AUDIT_SCOPE", "MAX_RESPONSE_CHARS", "Called", "Caller"]

AUDIT_SCOPE: Final = "audit"
"""The scope (``SCOPE_META_KEY``) of the audit's own calls; the scope probe uses another."""
MAX_RESPONSE_CHARS: Final = 16_000_000
"""A result larger than this (as JSON) is reported as oversized and not analysed further."""


@dataclass(frozen=True)
class Called:
    """One call: its outcome and the evidence for a finding about it."""

    outcome: CallOutcome
    evidence: Evidence
    oversized: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome.kind is CallOutcomeKind.OK and not self.oversized

    @property
    def result(self) -> types.CallToolResult | None:
        return None if self.oversized else self.outcome.result


@dataclass
class Caller:
    """Makes the audit's calls on one connection; notices when the server stops answering."""

    connection: Connection
    timeout_s: float
    max_response_chars: int = MAX_RESPONSE_CHARS
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    timed_out: set[str] = field(default_factory=set)
    """Tools a call to which timed out (their remaining probes are skipped: each would wait as long)."""
    closed: str | None = None
    """Why the server stopped answering (its transport closed, or ``tools/list`` went unanswered), or ``None``."""
    unresponsive: bool = False
    """Whether it stopped by not answering (still connected) rather than by closing its transport."""

    async def call(
        self, tool: str, arguments: dict[str, Any], *, scope: str = AUDIT_SCOPE, clock: float | None = None
    ) -> Called:
        meta: dict[str, Any] = {SCOPE_META_KEY: scope}
        if clock is not None:
            meta[CLOCK_META_KEY] = clock
        outcome = await call_tool(self.connection, tool, arguments, meta=meta, deadline_s=self.timeout_s)
        shown = f"tools/call {tool} {excerpt(arguments, 160)}" + (f" (_meta clock {clock:g}s)" if clock else "")
        if outcome.kind is CallOutcomeKind.TRANSPORT_CLOSED and self.closed is None:
            self.closed = outcome.error or "transport closed"
        if outcome.kind is CallOutcomeKind.TIMEOUT:
            self.timed_out.add(tool)
        response = _response_text(outcome)
        oversized = outcome.result is not None and _size(outcome.result) > self.max_response_chars
        if outcome.kind is CallOutcomeKind.OK and not oversized:
            self.latencies_ms.setdefault(tool, []).append(outcome.duration_s * 1000.0)
        return Called(outcome, Evidence(call=shown, response=response), oversized)

    async def read_resource(self, uri: str) -> str | None:
        """The text (or base64 blob) of resource ``uri``, or ``None`` when it cannot be read in time."""
        if self.closed is not None:
            return None
        try:
            with anyio.fail_after(self.timeout_s):
                result = await self.connection.client.read_resource(uri)
        except Exception:  # unreadable for any reason: the mask probe then finds no masks there
            return None
        for content in result.contents:
            text = getattr(content, "text", None) or getattr(content, "blob", None)
            if isinstance(text, str) and len(text) <= self.max_response_chars:
                return text
        return None

    async def alive(self) -> bool:
        """Whether the server still answers ``tools/list`` within the call bound."""
        if self.closed is not None:
            return False
        try:
            with anyio.fail_after(self.timeout_s):
                await self.connection.client.list_tools()
        except TimeoutError:
            self.closed, self.unresponsive = f"tools/list unanswered within {self.timeout_s:g}s", True
            return False
        except Exception as error:  # any other failure here means its transport is gone
            self.closed = f"tools/list failed: {error.__class__.__name__}: {str(error)[:120]}"
            return False
        return True


def _response_text(outcome: CallOutcome) -> str:
    if outcome.result is not None:
        return result_excerpt(outcome.result)
    return f"{outcome.kind.value}: {outcome.error}"


def _size(result: types.CallToolResult) -> int:
    return len(json.dumps(result.model_dump(by_alias=True, mode="json", exclude_none=True)))
