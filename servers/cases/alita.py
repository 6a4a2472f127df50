"""``case-alita``: tool schemas generated at run time, outputs sent without type enforcement (the ALITA case).

An ALITA-style agent writes its own tools: a spec (name, argument types, result types) and the code that
implements it. This server generates its tools from such specs when it starts: each tool's arguments model
and ``outputSchema`` are built from its spec, and its result is whatever the generated code returned,
serialised with ``json.dumps(default=str)`` and never checked against the schema. Generated code that
leaks numpy scalars (as ``count_regions``'s does: OpenCV returns ``numpy.int32`` counts) therefore sends
numbers as strings under an ``integer`` schema; code that converts them (``region_area``) conforms.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import cv2
import numpy as np
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field, create_model

from servers._runtime import decode_image_argument
from servers._tools import CallInfo, ToolDef, build_mcp_server, structured_result
from testbed._arrays import RGBImage
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME: Final = "case-alita"

_JSON_TYPES: Final[dict[str, type]] = {"integer": int, "number": float, "string": str}

GeneratedCode = Callable[[RGBImage, dict[str, Any]], dict[str, Any]]
"""A generated tool's implementation: the image and its other arguments to its result."""


@dataclass(frozen=True)
class ToolSpec:
    """One generated tool as the agent wrote it: its interface (JSON types) and its code."""

    name: str
    description: str
    code: GeneratedCode
    outputs: dict[str, str]
    inputs: dict[str, str] = field(default_factory=dict)


def _gray(image: RGBImage) -> np.ndarray:
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY))


def _image_stats(image: RGBImage, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"width": int(image.shape[1]), "height": int(image.shape[0]), "mean": float(_gray(image).mean())}


def _count_regions(image: RGBImage, arguments: dict[str, Any]) -> dict[str, Any]:
    bright = (_gray(image) > arguments["threshold"]).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(bright)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return {"count": np.int32(count - 1), "largest_area": areas.max() if len(areas) else np.int32(0)}


def _region_area(image: RGBImage, arguments: dict[str, Any]) -> dict[str, Any]:
    bright = _gray(image) > arguments["threshold"]
    return {"area": int(bright.sum()), "share": float(bright.mean())}


SPECS: Final = (
    ToolSpec("image_stats", "Summarise an image: size and mean brightness.", _image_stats,
             {"width": "integer", "height": "integer", "mean": "number"}),
    ToolSpec("count_regions", "Count the bright regions above a brightness threshold.", _count_regions,
             {"count": "integer", "largest_area": "integer"}, {"threshold": "number"}),
    ToolSpec("region_area", "The area of the pixels above a brightness threshold.", _region_area,
             {"area": "integer", "share": "number"}, {"threshold": "number"}),
)  # fmt: skip
"""The tools the agent generated, in the order they are listed."""


def _output_schema(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in spec.outputs.items()},
        "required": list(spec.outputs),
    }


def _arguments_model(spec: ToolSpec) -> type[BaseModel]:
    image = (str, Field(description="The image, base64."))
    fields: dict[str, Any] = {name: (_JSON_TYPES[kind], ...) for name, kind in spec.inputs.items()}
    model: type[BaseModel] = create_model(
        f"{spec.name.title().replace('_', '')}Arguments",
        __config__=ConfigDict(extra="forbid"),
        image_b64=image,
        **fields,
    )
    return model


def _generated_tool(spec: ToolSpec, config: ServerConfig) -> ToolDef[Any]:
    def handler(arguments: BaseModel, call: CallInfo) -> CallToolResult:
        values = arguments.model_dump()
        image = decode_image_argument(values.pop("image_b64"), argument="image_b64", config=config)
        # No type enforcement: whatever the generated code returned goes out, stringified where JSON has no type.
        return structured_result(json.loads(json.dumps(spec.code(image, values), default=str)))

    return ToolDef(
        name=spec.name,
        description=spec.description,
        arguments=_arguments_model(spec),
        handler=handler,
        output_schema=_output_schema(spec),
    )


TRUTH: Final = ServerTruth(
    name=NAME,
    kind="measuring",
    summary="Case ALITA: tools generated from specs at start-up; outputs never checked against their schemas.",
    declares_conventions=False,
    tools=tuple(
        ToolTruth(
            name=spec.name,
            schema_style=SchemaStyle.FULL,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image_b64"},
        )
        for spec in SPECS
    ),
)


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build ``case-alita``: one tool generated from each of :data:`SPECS`."""
    return build_mcp_server(
        NAME,
        instructions="Tools generated at run time from their specs.",
        tools=[_generated_tool(spec, config) for spec in SPECS],
    )
