"""What one context-store entry is: its namespace, its versioned reference, its lifetime and its provenance."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from testbed._errors import TestbedError

__all__ = [
    "CONTEXT_URI_SCHEME",
    "NO_AGENT",
    "Entry",
    "EntryRef",
    "MemoryAccessError",
    "Namespace",
    "Provenance",
    "is_context_uri",
]

CONTEXT_URI_SCHEME: Final = "context"
NO_AGENT: Final = "_"
"""The agent segment of an entry written outside any named agent (single-agent runs)."""

_SEGMENT = r"[A-Za-z0-9_.\-]+"
_URI = re.compile(rf"^context://(?P<run>{_SEGMENT})/(?P<agent>{_SEGMENT})/(?P<role>{_SEGMENT})/(?P<key>{_SEGMENT})"
                  r"/v(?P<version>[1-9][0-9]*)$")  # fmt: skip


class MemoryAccessError(TestbedError):
    """A context reference that cannot be read: malformed, unknown, of another run, or expired."""


def _segment(value: str, what: str) -> str:
    if not re.fullmatch(_SEGMENT, value):
        raise MemoryAccessError(f"{what} {value!r}: use letters, digits, '_', '.' and '-' only")
    return value


@dataclass(frozen=True, order=True)
class Namespace:
    """Where an entry lives: the run (its sandbox), the agent that wrote it, and the value's semantic role."""

    run: str
    agent: str
    role: str

    def __post_init__(self) -> None:
        _segment(self.run, "run")
        _segment(self.agent, "agent")
        _segment(self.role, "role")


@dataclass(frozen=True, order=True)
class EntryRef:
    """One version of one entry, as the ``context://run/agent/role/key/vN`` URI that travels between calls."""

    namespace: Namespace
    key: str
    version: int

    def __post_init__(self) -> None:
        _segment(self.key, "key")
        if self.version < 1:
            raise MemoryAccessError(f"version {self.version}: versions start at 1")

    @property
    def uri(self) -> str:
        ns = self.namespace
        return f"{CONTEXT_URI_SCHEME}://{ns.run}/{ns.agent}/{ns.role}/{self.key}/v{self.version}"

    @property
    def latest_uri(self) -> str:
        """The entry's unversioned URI: what a subscriber watches for new versions."""
        return self.uri.rsplit("/", 1)[0]

    @classmethod
    def parse(cls, uri: str, *, argument: str = "reference") -> EntryRef:
        """The reference a URI names.

        Raises:
            MemoryAccessError: not a ``context://run/agent/role/key/vN`` URI (the message names ``argument``).
        """
        found = _URI.match(uri) if isinstance(uri, str) else None
        if found is None:
            raise MemoryAccessError(f"{argument}: {uri!r} is not a context://run/agent/role/key/vN reference")
        namespace = Namespace(found["run"], found["agent"], found["role"])
        return cls(namespace, found["key"], int(found["version"]))


def is_context_uri(value: Any) -> bool:
    """Whether ``value`` is a well-formed context reference."""
    return isinstance(value, str) and _URI.match(value) is not None


@dataclass(frozen=True)
class Provenance:
    """Which call produced an entry, and from which inputs (context URIs, or ``scene`` / ``argument:<name>``)."""

    tool: str
    """The producing tool (``server.tool`` where the server is known)."""
    call: str
    """The producing call, as the run's logical clock and the tool (deterministic, replayable)."""
    inputs: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"tool": self.tool, "call": self.call, "inputs": list(self.inputs)}


@dataclass(frozen=True)
class Entry:
    """One stored version: the value, its lifetime on the run's logical clock, and its provenance."""

    ref: EntryRef
    value: Any = field(compare=False)
    created_at: float
    expires_at: float | None
    """``None``: kept until the run's memory is dropped."""
    provenance: Provenance

    def expired(self, clock: float) -> bool:
        return self.expires_at is not None and clock >= self.expires_at

    def describe(self) -> dict[str, Any]:
        """The entry's metadata as JSON (what a resource read returns beside the value)."""
        return {
            "uri": self.ref.uri,
            "run": self.ref.namespace.run,
            "agent": self.ref.namespace.agent,
            "role": self.ref.namespace.role,
            "key": self.ref.key,
            "version": self.ref.version,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "provenance": self.provenance.as_json(),
        }
