"""``detect-yxyx``: a Gemini-style detector; JSON in a text block, ``box_2d`` on a 0-1000 grid.

Tool ``locate_objects(image_b64)``: the image travels by value. There is no
``outputSchema`` and no ``structuredContent``; the first text block holds::

    {"results": [{"label": str, "box_2d": [ymin, xmin, ymax, xmax]}, ...]}

Boxes are ``xyxy/per_mille/yx/top_left`` (y first, thousandths of the image), as
Gemini's ``box_2d``; there are no scores and no image size. Nothing is declared.
Errors are ``isError`` results. Memory: by value only; it resolves no handles.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument, floats, image_size_of, infer, preload_detector
from servers._tools import CallInfo, ToolDef, build_mcp_server, text_json_result
from testbed.conventions import BoxConvention, from_canonical
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "detect-yxyx"
BOX_CONVENTION = BoxConvention.from_name("xyxy/per_mille/yx/top_left")


class LocateObjectsArguments(BaseModel):
    """Arguments of locate_objects."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64.")


TRUTH = ServerTruth(
    name=NAME,
    kind="detection",
    summary="Gemini style: box_2d [ymin, xmin, ymax, xmax] on 0-1000, no outputSchema, JSON in a text block.",
    declares_conventions=False,
    tools=(
        ToolTruth(
            name="locate_objects",
            schema_style=SchemaStyle.TEXT_JSON,
            box_convention=BOX_CONVENTION,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image_b64"},
            paths={
                SemanticRole.DETECTIONS: "results",
                SemanticRole.CLASS_LABEL: "results[*].label",
                SemanticRole.BOUNDING_BOX: "results[*].box_2d",
            },
        ),
    ),
)


@server(NAME, truth=TRUTH, preload=preload_detector)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``detect-yxyx`` server."""

    def locate_objects(arguments: LocateObjectsArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        result = infer("detect", image, config)
        boxes = from_canonical(result.boxes_xyxy, BOX_CONVENTION, image_size_of(image))
        return text_json_result(
            {"results": [{"label": result.label(i), "box_2d": floats(boxes[i])} for i in range(len(result))]}
        )

    return build_mcp_server(
        NAME,
        instructions="Locates objects. Boxes are box_2d: [ymin, xmin, ymax, xmax] normalized to 0-1000.",
        tools=[
            ToolDef(
                name="locate_objects",
                description=(
                    "Locate objects in a base64 image. Returns JSON text: results with label and "
                    "box_2d [ymin, xmin, ymax, xmax] normalized to 0-1000."
                ),
                arguments=LocateObjectsArguments,
                handler=locate_objects,
            )
        ],
    )
