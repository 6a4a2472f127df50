"""The tool boundary: argument validation, request ``_meta``, error styles and result shapes.

Every reference tool is a :class:`ToolDef`: a pydantic model for its arguments
(which also gives its published ``inputSchema``), an optional hand-written
``outputSchema``, and a synchronous handler that runs on a worker thread.
:func:`build_mcp_server` turns them into an ``MCPServer``.

The server validates arguments itself (not through the SDK's signature-derived
model), so every bad input becomes a one-line error naming the argument, in the
tool's own :class:`~testbed.protocol.ErrorStyle`: an ``isError`` result, or a
normal-looking ``{"error": ...}`` payload.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import anyio.to_thread
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ContentBlock, ImageContent, TextContent, ToolAnnotations
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from servers._schemas import inline_schema
from testbed._errors import TestbedError
from testbed.protocol import AGENT_META_KEY, CLOCK_META_KEY, SCOPE_META_KEY, ErrorStyle
from testbed.telemetry import active_session

__all__ = [
    "DEFAULT_SCOPE",
    "CallInfo",
    "ToolDef",
    "ToolInputError",
    "build_mcp_server",
    "image_result",
    "spans_recorded",
    "structured_result",
    "text_json_result",
]

logger = logging.getLogger("servers")

DEFAULT_SCOPE = "default"
"""The scope of a call whose request ``_meta`` names none."""

ArgsT = TypeVar("ArgsT", bound=BaseModel)


class ToolInputError(TestbedError):
    """A caller mistake a tool reports as its error result; the message is one line naming the argument."""


@dataclass(frozen=True)
class CallInfo:
    """What a call's request ``_meta`` says about who is calling and when."""

    scope: str = DEFAULT_SCOPE
    """The scope (run) the call belongs to (``SCOPE_META_KEY``); session-scoped handles are keyed on it."""
    clock: float = 0.0
    """The run's logical clock in seconds (``CLOCK_META_KEY``); TTL handles expire on it, never on wall time."""
    agent: str | None = None
    """The calling agent (``AGENT_META_KEY``), in multi-agent runs."""

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> CallInfo:
        """Read the testbed's keys from a request ``_meta``; absent keys take the defaults.

        Raises:
            ToolInputError: a key is present with the wrong type.
        """
        meta = meta or {}
        scope = meta.get(SCOPE_META_KEY, DEFAULT_SCOPE)
        clock = meta.get(CLOCK_META_KEY, 0.0)
        agent = meta.get(AGENT_META_KEY)
        if not isinstance(scope, str) or not scope:
            raise ToolInputError(f"_meta[{SCOPE_META_KEY!r}]: must be a non-empty string, got {scope!r}")
        if isinstance(clock, bool) or not isinstance(clock, int | float) or clock != clock:
            raise ToolInputError(f"_meta[{CLOCK_META_KEY!r}]: must be a number of seconds, got {clock!r}")
        if agent is not None and not isinstance(agent, str):
            raise ToolInputError(f"_meta[{AGENT_META_KEY!r}]: must be a string, got {agent!r}")
        return cls(scope=scope, clock=float(clock), agent=agent)


@dataclass(frozen=True)
class ToolDef(Generic[ArgsT]):
    """One tool: its arguments model, its published output schema, its error style and its handler."""

    name: str
    """Name in ``tools/list``."""
    description: str
    """Description in ``tools/list``; says what conventions the tool uses, as a real server's prose would."""
    arguments: type[ArgsT]
    """Validates the arguments; its JSON schema (with any extension keywords) is the published ``inputSchema``."""
    handler: Callable[[ArgsT, CallInfo], CallToolResult]
    """Does the work on a worker thread; raises :class:`ToolInputError` (or any ``TestbedError``) for bad input."""
    output_schema: dict[str, Any] | None = None
    """The published ``outputSchema``; ``None`` publishes none."""
    error_style: ErrorStyle = ErrorStyle.IS_ERROR
    """How failures reach the client."""
    read_only: bool = True
    """Published as the ``readOnlyHint`` annotation."""
    input_schema: dict[str, Any] = field(init=False)
    """The published ``inputSchema`` (derived from ``arguments``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_schema", inline_schema(self.arguments))

    def error(self, message: str) -> CallToolResult:
        """The result reporting ``message`` in this tool's error style."""
        if self.error_style is ErrorStyle.PAYLOAD:
            return structured_result({"error": message})
        return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)

    def invoke(self, raw_arguments: object, meta: Mapping[str, Any] | None) -> CallToolResult:
        """Validate, run and shape one call; every failure becomes an error result (never an exception)."""
        try:
            call = CallInfo.from_meta(meta)
            arguments = _validate_arguments(self.arguments, raw_arguments)
            return self.handler(arguments, call)
        except TestbedError as error:
            return self.error(_one_line(str(error)))
        except Exception:  # the tool-handler boundary: a crash is logged with its traceback and reported
            logger.exception("tool %r crashed", self.name)
            return self.error("internal error in the server; see its log")


def _validate_arguments(model: type[ArgsT], raw: object) -> ArgsT:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ToolInputError(f"arguments: must be an object, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(_segment(part) for part in first["loc"]) or "arguments"
        if first["type"] == "extra_forbidden":
            raise ToolInputError(f"{location}: unknown argument") from None
        raise ToolInputError(f"{location}: {first['msg']}") from None


def _segment(part: str | int) -> str:
    """A location segment as written in an error: a name a caller could not read back (blank, control
    characters, spaces) is quoted, so the message still names exactly the argument sent."""
    text = str(part)
    return text if text.isprintable() and text and not any(char.isspace() for char in text) else repr(text)


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "error"


def _make_tool(definition: ToolDef[Any]) -> Tool:
    async def call(ctx: Context) -> CallToolResult:
        # The SDK's own argument model is empty (the function takes no arguments), so the raw
        # arguments are read from the request and validated by the tool's model, with our messages.
        params = ctx.request_context.params or {}
        work = partial(definition.invoke, params.get("arguments"), ctx.request_context.meta)
        return await anyio.to_thread.run_sync(work)

    tool = Tool.from_function(
        call,
        name=definition.name,
        description=definition.description,
        structured_output=False,
        annotations=ToolAnnotations(read_only_hint=definition.read_only, open_world_hint=False),
    )
    tool.parameters = definition.input_schema
    tool.fn_metadata.output_schema = definition.output_schema
    return tool


def build_mcp_server(name: str, *, instructions: str, tools: Sequence[ToolDef[Any]]) -> MCPServer:
    """An ``MCPServer`` serving ``tools``.

    Args:
        name: the server's name in its ``serverInfo``.
        instructions: shown to clients as the server's instructions.
        tools: its tools, in ``tools/list`` order.
    """
    built = MCPServer(
        name,
        version="0.1.0",
        instructions=instructions,
        log_level="WARNING",
        tools=[_make_tool(definition) for definition in tools],
    )
    lowlevel = built._lowlevel_server  # the SDK's own in-memory transport reads it the same way
    lowlevel.middleware = [
        _SpansWhenRecorded(middleware) if isinstance(middleware, OpenTelemetryMiddleware) else middleware
        for middleware in lowlevel.middleware
    ]
    return built


class _SpansWhenRecorded:
    """The SDK's server span around each message, skipped while no span would be recorded.

    Without a tracer provider (a server process nobody traces), or with the testbed's own provider and no
    span session, the SDK's span is a no-op that still costs its attributes, context extraction and context
    switch on every message; the messages and results are the same either way.
    """

    def __init__(self, spans: ServerMiddleware[Any]) -> None:
        self._spans = spans

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if spans_recorded():
            return await self._spans(ctx, call_next)
        return await call_next(ctx)


def spans_recorded() -> bool:
    """Whether an OpenTelemetry span started now would be recorded: a testbed span session is active, or
    the process's tracer provider is one installed by someone else (an OpenTelemetry SDK set up by a user)."""
    if active_session() is not None:
        return True
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return False  # none installed: every span is the API's no-op
    # testbed.telemetry installs a provider that records only inside a span session (checked above).
    return not type(provider).__module__.startswith("testbed.telemetry")


def structured_result(payload: dict[str, Any]) -> CallToolResult:
    """A result carrying ``payload`` as ``structuredContent`` and as JSON in a text block."""
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(payload))], structured_content=payload)


def text_json_result(payload: object) -> CallToolResult:
    """A result carrying ``payload`` only as JSON inside a text block (no ``structuredContent``)."""
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(payload))])


def image_result(png_base64: str, *, caption: dict[str, Any] | None = None) -> CallToolResult:
    """A result carrying a PNG as image content, optionally followed by a JSON text block."""
    content: list[ContentBlock] = [ImageContent(type="image", data=png_base64, mime_type="image/png")]
    if caption is not None:
        content.append(TextContent(type="text", text=json.dumps(caption)))
    return CallToolResult(content=content)
