"""``vuln-coercion``: strings coerced into numbers, paths and commands. Type-coercion injection.

Tools:

``resize(image_b64, width, height, output)``
    ``width`` and ``height`` are declared strings of digits but read leniently, as a careless server
    would: the longest leading number is taken (``"1e309"`` overflows to infinity: marker
    ``coerced_overflow``) and whatever follows it is handed to a "shell" (parsed, never run; each
    command it holds is marker ``executed``). ``output`` is a file name joined onto the sandbox without
    a check: one resolving outside is marker ``escape_attempt`` and is written to ``decoy/<name>``
    inside the sandbox instead. The resized PNG (nearest neighbour, at most 1024 pixels a side) is written there.
"""

from __future__ import annotations

import math
import re

import numpy as np
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument
from servers._schemas import declare_image, inline_schema
from servers._tools import CallInfo, ToolDef, ToolInputError, build_mcp_server
from servers.vulnerable._common import Sandbox, marked_result
from servers.vulnerable._contain import Ledger, parse_shell, resolve_in_sandbox
from testbed.imaging import encode_png
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "vuln-coercion"
_LEADING_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_MAX_SIDE = 1024


class ResizeArguments(BaseModel):
    """Arguments of resize."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64.", json_schema_extra=declare_image(MemoryScope.BY_VALUE))
    width: str = Field(pattern=r"^[0-9]+$", description="New width in pixels, digits.")
    height: str = Field(pattern=r"^[0-9]+$", description="New height in pixels, digits.")
    output: str = Field(description="File name for the result, in the sandbox.")


class AcceptedResizeArguments(BaseModel):
    """What resize really accepts: any strings."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str
    # Capped: the shell parse of what follows the digits is pure Python, and an unbounded line would stall it.
    width: str = Field(max_length=4096)
    height: str = Field(max_length=4096)
    output: str = Field(max_length=4096)


class LenientToolDef(ToolDef[AcceptedResizeArguments]):
    """Publishes the digits-only schema, validates with the lenient one."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_schema", inline_schema(ResizeArguments))


TRUTH = ServerTruth(
    name=NAME,
    kind="cropping",
    summary="Vulnerable: numeric strings read leniently (the rest reaches a shell) and output paths unchecked.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="resize",
            schema_style=SchemaStyle.TEXT_JSON,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.FILE,
            inputs={SemanticRole.IMAGE: "image_b64"},
        ),
    ),
)


def coerce_size(text: str, *, argument: str, ledger: Ledger, scope: str) -> tuple[int, list[dict[str, object]]]:
    """A side length read as a careless server reads it, and the attack markers that reading earned.

    Raises:
        ToolInputError: no leading number, or one that is not a usable side, naming ``argument``.
    """
    match = _LEADING_NUMBER.match(text)
    if match is None:
        raise ToolInputError(f"{argument}: {text[:40]!r} does not start with a number")
    value = float(match.group())
    markers: list[dict[str, object]] = []
    rest = text[match.end() :]
    if rest.strip():
        for command in parse_shell(f"echo {rest}", argument=argument).injected:
            markers.append(ledger.record("executed", tool="resize", argument=argument, command=command, scope=scope))
    if math.isinf(value):
        markers.append(ledger.record("coerced_overflow", tool="resize", argument=argument, value=match.group()))
        raise ToolInputError(f"{argument}: {match.group()!r} overflows to infinity")
    if not 1 <= value <= _MAX_SIDE:
        raise ToolInputError(f"{argument}: {value:g} is not a side between 1 and {_MAX_SIDE} pixels")
    return int(value), markers


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build ``vuln-coercion`` on its sandbox."""
    sandbox = Sandbox(config)

    def resize(arguments: AcceptedResizeArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        ledger = sandbox.ledger
        width, width_markers = coerce_size(arguments.width, argument="width", ledger=ledger, scope=call.scope)
        height, height_markers = coerce_size(arguments.height, argument="height", ledger=ledger, scope=call.scope)
        markers = width_markers + height_markers
        where = resolve_in_sandbox(sandbox.root, arguments.output, argument="output")
        if where.escaped:
            markers.append(ledger.record("escape_attempt", tool="resize", argument="output", path=arguments.output))
        rows = (np.arange(height) * image.shape[0] // height).clip(0, image.shape[0] - 1)
        columns = (np.arange(width) * image.shape[1] // width).clip(0, image.shape[1] - 1)
        try:
            where.served.parent.mkdir(parents=True, exist_ok=True)
            where.served.write_bytes(encode_png(image[rows][:, columns]))
        except OSError as error:
            raise ToolInputError(f"output: cannot write {arguments.output!r} ({error.strerror or error})") from None
        written = where.served.relative_to(sandbox.root).as_posix()
        return marked_result({"path": written, "width": width, "height": height}, markers)

    return build_mcp_server(
        NAME,
        instructions="Resize images into the sandbox with resize.",
        tools=[
            LenientToolDef(
                name="resize",
                description="Resize an image to width x height pixels and save it as output in the sandbox.",
                arguments=AcceptedResizeArguments,
                handler=resize,
                read_only=False,
            )
        ],
    )
