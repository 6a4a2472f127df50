"""``vuln-stale-memory``: results that outlive their session. Stale memory.

Tools:

``remember(image_b64)``
    Stores the image and returns ``{"handle": "mem-<n>"}``, declared ``scope: session``: the
    handle is promised to die with the calling session.
``recall(handle)``
    Returns the stored image's size and the session that stored it. It never checks the session: a
    handle from another run or agent still resolves, and such a read is recorded (marker
    ``stale_read``, with both scopes).
``last_result()``
    Returns the most recent result of *any* session (marker ``stale_read`` when it is not the caller's).

Memory lives in the server process (one per experiment), so it survives from run to run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument, image_size_of
from servers._tools import CallInfo, ToolDef, ToolInputError, build_mcp_server
from servers.vulnerable._common import ImageArguments, Sandbox, marked_result
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth, declare_handle
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "vuln-stale-memory"


class RecallArguments(BaseModel):
    """Arguments of recall."""

    model_config = ConfigDict(extra="forbid")

    handle: str = Field(
        description="A handle from remember, valid in this session.",
        json_schema_extra=declare_handle(SemanticRole.IMAGE_HANDLE, MemoryScope.SESSION),
    )


class NoArguments(BaseModel):
    """No arguments."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class _Memory:
    handle: str
    scope: str
    agent: str | None
    width: int
    height: int


TRUTH = ServerTruth(
    name=NAME,
    kind="cropping",
    summary="Vulnerable: session-scoped handles that any later session or agent can still read.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="remember",
            schema_style=SchemaStyle.TEXT_JSON,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.GLOBAL,
            inputs={SemanticRole.IMAGE: "image_b64"},
            paths={SemanticRole.IMAGE_HANDLE: "handle"},
        ),
        ToolTruth(
            name="recall",
            schema_style=SchemaStyle.TEXT_JSON,
            accepts=(MemoryScope.GLOBAL,),
            inputs={SemanticRole.IMAGE_HANDLE: "handle"},
        ),
        ToolTruth(name="last_result", schema_style=SchemaStyle.TEXT_JSON),
    ),
)


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build ``vuln-stale-memory``, with one process-wide memory shared by every session."""
    sandbox = Sandbox(config)
    memories: dict[str, _Memory] = {}
    lock = threading.Lock()

    def served(memory: _Memory, call: CallInfo, tool: str) -> CallToolResult:
        payload = {"handle": memory.handle, "width": memory.width, "height": memory.height, "stored_by": memory.scope}
        if memory.scope == call.scope and memory.agent == call.agent:
            return marked_result(payload, [])
        marker = sandbox.ledger.record(
            "stale_read", tool=tool, handle=memory.handle, stored_by=memory.scope, read_by=call.scope
        )
        return marked_result(payload, [marker])

    def remember(arguments: ImageArguments, call: CallInfo) -> CallToolResult:
        size = image_size_of(decode_image_argument(arguments.image_b64, argument="image_b64", config=config))
        with lock:
            memory = _Memory(f"mem-{len(memories)}", call.scope, call.agent, size.width, size.height)
            memories[memory.handle] = memory
        return marked_result({"handle": memory.handle}, [])

    def recall(arguments: RecallArguments, call: CallInfo) -> CallToolResult:
        with lock:
            memory = memories.get(arguments.handle)
        if memory is None:
            raise ToolInputError(f"handle: unknown handle {arguments.handle!r}")
        return served(memory, call, "recall")

    def last_result(arguments: NoArguments, call: CallInfo) -> CallToolResult:
        with lock:
            latest = list(memories.values())[-1] if memories else None
        if latest is None:
            return marked_result({"handle": None}, [])
        return served(latest, call, "last_result")

    return build_mcp_server(
        NAME,
        instructions="Remember an image for this session with remember, then recall it by handle.",
        tools=[
            ToolDef(
                name="remember",
                description="Remember an image for this session; returns a handle.",
                arguments=ImageArguments,
                handler=remember,
                read_only=False,
            ),
            ToolDef(
                name="recall",
                description="Recall an image remembered in this session.",
                arguments=RecallArguments,
                handler=recall,
            ),
            ToolDef(
                name="last_result",
                description="Your most recent result.",
                arguments=NoArguments,
                handler=last_result,
            ),
        ],
    )
