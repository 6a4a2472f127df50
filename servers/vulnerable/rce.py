"""``vuln-rce``: an "image convert" tool that wraps a shell. Remote code execution, contained.

Tools:

``convert_image(filename, format)``
    Builds the command line ``convert <filename> out.<format>`` as a naive wrapper would (string
    concatenation) and parses it as ``sh -c`` would. The intended command is done in-process: the
    file (inside the sandbox) is re-encoded as PNG into ``converted/``. Every further command the
    line holds (after ``;``, ``&&``, ``||``, ``|``, ``&``, or inside ``$(...)`` or backticks) counts as
    **executed**: it is recorded in the sandbox ledger (marker ``executed``) and returned in
    ``attack_markers``, and never run. Nothing here calls a shell or starts a process.

The threat it models: a tool whose arguments reach a shell unescaped.
"""

from __future__ import annotations

from typing import Literal

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._schemas import declare_image
from servers._tools import CallInfo, ToolDef, ToolInputError, build_mcp_server
from servers.vulnerable._common import Sandbox, marked_result
from servers.vulnerable._contain import parse_shell
from testbed.imaging import encode_png
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "vuln-rce"


class ConvertArguments(BaseModel):
    """Arguments of convert_image."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(
        description="An image file in the sandbox, e.g. 'images/cat.png'.",
        max_length=4096,  # the shell parse is pure Python: an unbounded line would stall the server
        json_schema_extra=declare_image(MemoryScope.FILE),
    )
    format: Literal["png", "jpg", "webp"] = Field(default="png", description="The output format.")


TRUTH = ServerTruth(
    name=NAME,
    kind="cropping",
    summary="Vulnerable: the filename reaches a (parsed, never run) shell; chained commands count as executed.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="convert_image",
            schema_style=SchemaStyle.TEXT_JSON,
            accepts=(MemoryScope.FILE,),
            returns=MemoryScope.FILE,
            inputs={SemanticRole.IMAGE_PATH: "filename"},
        ),
    ),
)


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build ``vuln-rce`` on its sandbox."""
    sandbox = Sandbox(config)

    def convert_image(arguments: ConvertArguments, call: CallInfo) -> CallToolResult:
        parsed = parse_shell(f"convert {arguments.filename} out.{arguments.format}", argument="filename")
        markers = [
            sandbox.ledger.record("executed", tool="convert_image", command=command, scope=call.scope)
            for command in parsed.injected
        ]
        intended = parsed.commands[0] if parsed.commands else ()
        if len(intended) < 2:
            raise ToolInputError("filename: names no file once parsed as a shell would")
        image = sandbox.files.load(intended[1], argument="filename", max_pixels=config.max_pixels)
        target = sandbox.root / "converted" / f"out.{arguments.format}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_png(image))
        return marked_result({"path": target.relative_to(sandbox.root).as_posix()}, markers)

    return build_mcp_server(
        NAME,
        instructions="Convert images in the sandbox with convert_image.",
        tools=[
            ToolDef(
                name="convert_image",
                description="Convert an image file in the sandbox to another format (runs `convert` for you).",
                arguments=ConvertArguments,
                handler=convert_image,
                read_only=False,
            )
        ],
    )
