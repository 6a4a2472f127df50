"""The scenario's ``defenses`` key: the paper's defenses as switches, all off by default."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

__all__ = ["DEFENSE_NAMES", "Defense", "Defenses", "PrivilegeLevel"]

_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*\.[^.\s]+$")


class Defense(StrEnum):
    """One defense, by its switch's name in the scenario (``defenses.<name>``)."""

    TOOL_PINNING = "tool_pinning"
    ROLE_BINDING = "role_binding"
    SCOPED_MEMORY = "scoped_memory"
    PROVENANCE_TAGS = "provenance_tags"


DEFENSE_NAMES: Final = tuple(defense.value for defense in Defense)


class PrivilegeLevel(StrEnum):
    """How much a tool may change, lowest first (the order :meth:`rank` gives)."""

    READ = "read"
    """It only reads (annotated ``readOnlyHint: true``)."""
    WRITE = "write"
    """It writes, but nothing it writes is destroyed (``readOnlyHint: false``, ``destructiveHint: false``)."""
    DESTRUCTIVE = "destructive"
    """It may destroy or act beyond itself: the protocol's default for a tool not annotated read-only."""

    @property
    def rank(self) -> int:
        return list(PrivilegeLevel).index(self)


class Defenses(BaseModel):
    """Which defenses the orchestrator enforces, and their settings. Each refusal is a ``defense`` event and a
    ``defense.*`` violation; the call it refuses is recorded as skipped, never sent."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    tool_pinning: StrictBool = False
    """Hash each tool's description and schemas at its first listing; refuse calls to a tool listed differently."""
    role_binding: StrictBool = False
    """Refuse a call to a tool whose privilege level is above the agent's role."""
    scoped_memory: StrictBool = False
    """Refuse a handle not issued to this run and agent, or older than ``memory_ttl_s``; forget a run's handles
    when it ends."""
    provenance_tags: StrictBool = False
    """Refuse an image, path, handle or mask argument that is neither the run's scene nor returned by a call of
    the run."""
    role: PrivilegeLevel | None = None
    """The agent's role: the highest privilege level it may call (default: the highest among its granted tools,
    or ``destructive`` when the agent has no grants)."""
    privileges: dict[str, PrivilegeLevel] = Field(default_factory=dict)
    """Privilege levels by ``alias.tool``, over what the tools' annotations say (annotations can lie)."""
    memory_ttl_s: float = Field(default=60.0, gt=0)
    """How long a handle lives under scoped memory, in logical seconds (agent steps are 10 s apart)."""

    @field_validator("privileges")
    @classmethod
    def _check_tool_names(cls, value: dict[str, PrivilegeLevel]) -> dict[str, PrivilegeLevel]:
        for name in value:
            if not _TOOL_NAME.match(name):
                raise ValueError(f"{name!r} is not a tool name: expected alias.tool, e.g. priv.forward_call")
        return value

    @property
    def enabled(self) -> tuple[Defense, ...]:
        """The defenses switched on, in :class:`Defense` order."""
        return tuple(defense for defense in Defense if getattr(self, defense.value))
