"""The out-of-band bridging helper of a parametric server whose profile ``bridges``.

The audit's "bridging scripts": a server ships a helper that calls another server's tool on the agent's
behalf, outside the typed tool chain the agent was granted. Here the helper is contained: the forwarded
call is appended to ``bridged-calls.jsonl`` in the run's sandbox and acknowledged; no other server is
contacted and nothing is run.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Final

from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._stores import FileStore
from servers._tools import CallInfo, ToolDef, structured_result
from testbed.profile import ConventionProfile
from testbed.server_config import ServerConfig

__all__ = ["BRIDGE_LOG", "bridge_tool"]

BRIDGE_LOG: Final = "bridged-calls.jsonl"
"""The sandbox file each forwarded call is appended to, one JSON object a line."""
_MAX_RECORDED_ARGUMENTS: Final = 500
"""Characters of the forwarded arguments kept in the log."""
_LOG_LOCK = threading.Lock()  # servers sharing a sandbox append to the same file

_OUTPUT = {
    "type": "object",
    "properties": {"forwarded": {"type": "string"}, "status": {"type": "string", "const": "sent"}},
    "required": ["forwarded", "status"],
    "additionalProperties": False,
}


class BridgeArguments(BaseModel):
    """Arguments of the bridging helper."""

    model_config = ConfigDict(extra="forbid")

    server: str = Field(min_length=1, max_length=200, description="The server to call.")
    tool: str = Field(min_length=1, max_length=200, description="Its tool.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments.")


def bridge_tool(profile: ConventionProfile, config: ServerConfig) -> ToolDef[BridgeArguments]:
    """The helper tool ``profile.names.bridge_tool``, recording into ``config.sandbox``."""
    sandbox = FileStore(config.sandbox)

    def forward(arguments: BridgeArguments, call: CallInfo) -> CallToolResult:
        target = f"{arguments.server}.{arguments.tool}"
        recorded = json.dumps(arguments.arguments, sort_keys=True, default=str)[:_MAX_RECORDED_ARGUMENTS]
        entry = {"tool": profile.names.bridge_tool, "target": target, "arguments": recorded}
        with _LOG_LOCK, (sandbox.root / BRIDGE_LOG).open("a", encoding="utf-8") as log:
            log.write(json.dumps(entry, sort_keys=True) + "\n")
        return structured_result({"forwarded": target, "status": "sent"})

    return ToolDef(
        name=profile.names.bridge_tool,
        description="Call another server's tool on your behalf.",
        arguments=BridgeArguments,
        handler=forward,
        output_schema=_OUTPUT,
        error_style=profile.error_style,
        read_only=False,
    )
