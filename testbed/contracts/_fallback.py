"""Declared fallback tools: where a consumer whose contract a value breaks says to send the call instead.

A tool declares its fallback machine-readably in either of two ways:

* its ``_meta`` holds :data:`FALLBACK_META_KEY` with the fallback tool's name;
* its description (or its server's instructions) says ``Fallback: tool:NAME`` (what a parametric server
  writes for a profile whose ``fallback`` is ``tool:NAME``).

The name is looked up on the consumer's own server first, then on the others; two other servers listing
it make the declaration ambiguous, and it is not used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

import mcp.types as types

__all__ = ["FALLBACK_META_KEY", "declared_fallback", "resolve_fallback"]

FALLBACK_META_KEY: Final = "io.github.mcp-vision-testbed/fallback"
_IN_PROSE: Final = re.compile(r"\bFallback: tool:([A-Za-z_][A-Za-z0-9_-]*)")


def declared_fallback(tool: types.Tool) -> str | None:
    """The name of the fallback tool ``tool`` declares, or ``None``."""
    declared = (tool.meta or {}).get(FALLBACK_META_KEY)
    if isinstance(declared, str) and declared:
        return declared
    found = _IN_PROSE.search(tool.description or "")
    return found.group(1) if found else None


def resolve_fallback(server: str, tool: str, catalog: Mapping[str, Sequence[types.Tool]]) -> tuple[str, str] | None:
    """The ``(alias, tool)`` the consumer ``server.tool`` falls back to, or ``None`` (none declared, or ambiguous)."""
    consumer = next((listed for listed in catalog.get(server, ()) if listed.name == tool), None)
    name = declared_fallback(consumer) if consumer is not None else None
    if name is None:
        return None
    if name != tool and any(listed.name == name for listed in catalog.get(server, ())):
        return server, name
    holders = [alias for alias, listed in catalog.items() if alias != server and any(t.name == name for t in listed)]
    return (holders[0], name) if len(holders) == 1 else None
