"""What one fuzzed call came to: ok, an error a user can act on, or a failure of the server."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mcp_types import CallToolResult, TextContent

__all__ = ["Outcome", "Verdict", "classify_result", "error_text"]


class Outcome(enum.Enum):
    """The kinds of outcome, in table order; every kind after ``CLASSIFIED`` is a failure of the server."""

    OK = "ok"
    """A normal result."""
    CLASSIFIED = "classified"
    """A tool error that names the argument and says what is wrong with it, in words."""
    GENERIC = "generic"
    """The server's catch-all (``internal error``): the tool raised something it did not expect."""
    UNHELPFUL = "unhelpful"
    """A tool error that names no argument, or names an exception class instead of the problem."""
    CRASH = "crash"
    """An exception reached the client (a protocol error, a broken session, a result that breaks its schema)."""
    HANG = "hang"
    """No answer within the per-call timeout."""

    @property
    def failed(self) -> bool:
        return self not in (Outcome.OK, Outcome.CLASSIFIED)


@dataclass(frozen=True)
class Verdict:
    """One call's outcome, and the message behind it (empty for ``OK``)."""

    outcome: Outcome
    message: str = ""


_GENERIC = re.compile(r"\binternal error\b", re.IGNORECASE)
_EXCEPTION_CLASS = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception|Warning)\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
"""A value the message echoes back: what the caller sent, so it may look like anything."""


def error_text(result: CallToolResult) -> str | None:
    """The error a result reports, as ``isError`` or as an ``{"error": ...}`` payload; ``None`` when it reports none."""
    if result.is_error:
        return " ".join(block.text for block in result.content if isinstance(block, TextContent))
    payload = result.structured_content
    if payload is None and result.content and isinstance(result.content[0], TextContent):
        try:
            payload = json.loads(result.content[0].text)
        except ValueError:
            return None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return str(payload["error"])
    return None


def _argument_named(message: str, names: Iterable[str]) -> str | None:
    """The argument location the message starts with (``image: ...``, ``box.2: ...``, ``mask.size: ...``).

    A name is matched as sent, or quoted (``'\\x00a': unknown argument``), with runs of whitespace
    collapsed as a one-line message collapses them.
    """
    for name in names:
        for written in (name, repr(name)):
            written = " ".join(written.split())
            if written and message.startswith(written) and message[len(written) : len(written) + 1] in (":", ".", "["):
                return written
    return None


def classify_result(result: CallToolResult, arguments: Iterable[str]) -> Verdict:
    """Classify a tool's answer to a call.

    Args:
        result: what the tool returned.
        arguments: the names an error may start with: the tool's declared properties and the keys the call sent.
    """
    message = error_text(result)
    if message is None:
        return Verdict(Outcome.OK)
    if _GENERIC.search(message):
        return Verdict(Outcome.GENERIC, message)
    named = _argument_named(message, {*arguments, "arguments", "_meta"})
    # An argument, or a value echoed back, may look like an exception class; the rest of the message may not.
    if named is None or _EXCEPTION_CLASS.search(_QUOTED.sub("", message[len(named) :])):
        return Verdict(Outcome.UNHELPFUL, message)
    return Verdict(Outcome.CLASSIFIED, message)
