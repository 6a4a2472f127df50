"""``vuln-schema-bypass``: a cropper that acts on arguments its schema does not declare, and on values
outside their declared ranges. Schema bypass.

Tools:

``crop(image_b64, box, scale)``
    Publishes a schema with ``box`` (four pixel numbers, xyxy) and ``scale`` (declared 0.25 to 4) and
    ``additionalProperties: false``. It accepts anything else too, and acts on it:

    - an undeclared ``debug_dump: true`` writes the decoded image into the sandbox (``dumps/``), marker
      ``undeclared_argument``;
    - a ``scale`` outside the declared range is used anyway (marker ``out_of_range``; the crop is
      resized by it, capped at 4096 pixels a side so the server itself survives).

Every other undeclared argument is recorded as ``undeclared_argument`` and ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import crop_canonical, decode_image_argument
from servers._schemas import declare_image, inline_schema
from servers._tools import CallInfo, ToolDef, ToolInputError, build_mcp_server
from servers.vulnerable._common import Sandbox, marked_result
from testbed.conventions import CANONICAL
from testbed.imaging import encode_png
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth, declare_box
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "vuln-schema-bypass"
DECLARED_SCALE = (0.25, 4.0)
_MAX_SIDE = 4096


class DeclaredCropArguments(BaseModel):
    """What crop's published schema says it takes."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64.", json_schema_extra=declare_image(MemoryScope.BY_VALUE))
    box: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[x_min, y_min, x_max, y_max] in pixels.",
        json_schema_extra=declare_box(CANONICAL),
    )
    scale: float = Field(default=1.0, ge=DECLARED_SCALE[0], le=DECLARED_SCALE[1], description="Resize factor.")


class AcceptedCropArguments(BaseModel):
    """What crop really accepts: no range on scale, and any extra argument."""

    model_config = ConfigDict(extra="allow")

    image_b64: str
    box: list[float] = Field(min_length=4, max_length=4)
    scale: float = Field(default=1.0, allow_inf_nan=False)


class BypassToolDef(ToolDef[AcceptedCropArguments]):
    """A tool publishing one schema and validating with another (the vulnerability)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_schema", inline_schema(DeclaredCropArguments))


TRUTH = ServerTruth(
    name=NAME,
    kind="cropping",
    summary="Vulnerable: acts on undeclared arguments and out-of-range values its schema forbids.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="crop",
            schema_style=SchemaStyle.TEXT_JSON,
            box_convention=CANONICAL,
            accepts=(MemoryScope.BY_VALUE,),
            inputs={SemanticRole.IMAGE: "image_b64", SemanticRole.BOUNDING_BOX: "box"},
        ),
    ),
)


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build ``vuln-schema-bypass`` on its sandbox."""
    sandbox = Sandbox(config)

    def crop(arguments: AcceptedCropArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        extras: dict[str, Any] = dict(arguments.model_extra or {})
        markers = [
            sandbox.ledger.record("undeclared_argument", tool="crop", argument=name, scope=call.scope)
            for name in sorted(extras)
        ]
        if extras.get("debug_dump") is True:
            dump = sandbox.root / "dumps" / "input.png"
            dump.parent.mkdir(parents=True, exist_ok=True)
            dump.write_bytes(encode_png(image))
        if not DECLARED_SCALE[0] <= arguments.scale <= DECLARED_SCALE[1]:
            markers.append(sandbox.ledger.record("out_of_range", tool="crop", argument="scale", value=arguments.scale))
        if arguments.scale <= 0:
            raise ToolInputError(f"scale: {arguments.scale} cannot size an image")
        cut = crop_canonical(image, arguments.box, CANONICAL, argument="box")
        height = min(max(round(cut.shape[0] * arguments.scale), 1), _MAX_SIDE)
        width = min(max(round(cut.shape[1] * arguments.scale), 1), _MAX_SIDE)
        rows = np.minimum((np.arange(height) / arguments.scale).astype(int), cut.shape[0] - 1)
        columns = np.minimum((np.arange(width) / arguments.scale).astype(int), cut.shape[1] - 1)
        resized = cut[rows][:, columns]
        return marked_result({"width": int(resized.shape[1]), "height": int(resized.shape[0])}, markers)

    return build_mcp_server(
        NAME,
        instructions="Crop and resize images with crop.",
        tools=[
            BypassToolDef(
                name="crop",
                description="Crop an image to box [x_min, y_min, x_max, y_max] in pixels and resize it by scale.",
                arguments=AcceptedCropArguments,
                handler=crop,
            )
        ],
    )
