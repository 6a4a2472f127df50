"""Role-based tool binding: each tool's privilege level, and the agent's role (the highest level it may call)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import mcp.types as types

from testbed.defenses._config import Defenses, PrivilegeLevel

__all__ = ["annotated_level", "role_level", "tool_levels"]


def annotated_level(tool: types.Tool) -> PrivilegeLevel:
    """A tool's level from its annotations, with the protocol's defaults (not read-only, destructive)."""
    annotations = tool.annotations
    if annotations is not None and annotations.read_only_hint:
        return PrivilegeLevel.READ
    if annotations is not None and annotations.destructive_hint is False:
        return PrivilegeLevel.WRITE
    return PrivilegeLevel.DESTRUCTIVE


def tool_levels(catalog: Mapping[str, Sequence[types.Tool]], defenses: Defenses) -> dict[str, PrivilegeLevel]:
    """Every listed ``alias.tool``'s level: the scenario's ``privileges`` where given, else its annotations."""
    levels = {f"{alias}.{tool.name}": annotated_level(tool) for alias, tools in catalog.items() for tool in tools}
    return {**levels, **defenses.privileges}


def role_level(
    levels: Mapping[str, PrivilegeLevel], defenses: Defenses, grants: Sequence[str] | None
) -> PrivilegeLevel:
    """The agent's role: the scenario's ``role``, else the highest level among its granted tools (unlisted ones
    count as destructive), else destructive (an agent without grants may call anything)."""
    if defenses.role is not None:
        return defenses.role
    if grants is None:
        return PrivilegeLevel.DESTRUCTIVE
    granted = [levels.get(name, PrivilegeLevel.DESTRUCTIVE) for name in grants]
    return max(granted, key=lambda level: level.rank, default=PrivilegeLevel.READ)
