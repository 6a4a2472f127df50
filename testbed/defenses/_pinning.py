"""Tool pinning: a hash of each tool's description and schemas, taken at its first listing."""

from __future__ import annotations

import hashlib
import json

import mcp.types as types

__all__ = ["ToolPins", "tool_fingerprint"]

_PINNED_FIELDS = ("description", "inputSchema", "outputSchema", "annotations")


def tool_fingerprint(tool: types.Tool) -> str:
    """sha256 of the tool's description, input and output schemas and annotations (canonical JSON)."""
    listed = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
    pinned = {field: listed.get(field) for field in _PINNED_FIELDS}
    return hashlib.sha256(json.dumps(pinned, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ToolPins:
    """The first fingerprint of every ``alias.tool`` seen, across the experiment's runs."""

    def __init__(self) -> None:
        self._pins: dict[str, str] = {}

    def check(self, catalog: dict[str, list[types.Tool]]) -> dict[str, str]:
        """Pin tools listed for the first time; return the changed ones (``alias.tool`` to why)."""
        changed: dict[str, str] = {}
        for alias, tools in catalog.items():
            for tool in tools:
                name = f"{alias}.{tool.name}"
                fingerprint = tool_fingerprint(tool)
                pinned = self._pins.setdefault(name, fingerprint)
                if pinned != fingerprint:
                    changed[name] = (
                        f"{name} is listed with another description or schema than at its first listing "
                        f"(sha256 {fingerprint[:12]}, pinned {pinned[:12]})"
                    )
        return changed
