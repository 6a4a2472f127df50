"""``detect-cxcywh``: a Roboflow/YOLO-label style detector with a loose schema and payload errors.

Tool ``detect_objects(image_base64)``: the image travels by value. It returns
``structuredContent`` under an ``outputSchema`` of exactly ``{"type": "object"}``::

    {"size": [W, H], "objects": [{"class": str, "confidence": float, "box": [cx, cy, w, h]}, ...]}

Boxes are ``cxcywh/normalized/xy/top_left`` (centre and size as fractions of the
image), the size pair is ``(width, height)``; nothing is declared. Failures come
back as a normal result whose payload is ``{"error": "..."}`` (never ``isError``).
Memory: by value only; it resolves no handles.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument, floats, image_size_of, infer, preload_detector
from servers._schemas import LOOSE_OUTPUT_SCHEMA
from servers._tools import CallInfo, ToolDef, build_mcp_server, structured_result
from testbed.conventions import BoxConvention, ShapeOrder, from_canonical, report_shape
from testbed.protocol import ErrorStyle, MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "detect-cxcywh"
BOX_CONVENTION = BoxConvention.from_name("cxcywh/normalized/xy/top_left")
SHAPE_ORDER = ShapeOrder.WH


class DetectObjectsArguments(BaseModel):
    """Arguments of detect_objects."""

    model_config = ConfigDict(extra="forbid")

    image_base64: str = Field(description="Base64-encoded image.")


TRUTH = ServerTruth(
    name=NAME,
    kind="detection",
    summary=(
        "Centre boxes [cx, cy, w, h] normalized 0-1, size as (w, h), loose outputSchema, renamed fields "
        "(objects/class/confidence/box), errors as an {'error': ...} payload; declares nothing."
    ),
    declares_conventions=False,
    tools=(
        ToolTruth(
            name="detect_objects",
            schema_style=SchemaStyle.LOOSE,
            error_style=ErrorStyle.PAYLOAD,
            box_convention=BOX_CONVENTION,
            shape_order=SHAPE_ORDER,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image_base64"},
            paths={
                SemanticRole.IMAGE_SIZE: "size",
                SemanticRole.DETECTIONS: "objects",
                SemanticRole.CLASS_LABEL: "objects[*].class",
                SemanticRole.SCORE: "objects[*].confidence",
                SemanticRole.BOUNDING_BOX: "objects[*].box",
            },
        ),
    ),
)


@server(NAME, truth=TRUTH, preload=preload_detector)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``detect-cxcywh`` server."""

    def detect_objects(arguments: DetectObjectsArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_base64, argument="image_base64", config=config)
        result = infer("detect", image, config)
        size = image_size_of(image)
        boxes = from_canonical(result.boxes_xyxy, BOX_CONVENTION, size)
        return structured_result(
            {
                "size": list(report_shape(size, SHAPE_ORDER)),
                "objects": [
                    {"class": result.label(i), "confidence": float(result.scores[i]), "box": floats(boxes[i])}
                    for i in range(len(result))
                ],
            }
        )

    return build_mcp_server(
        NAME,
        instructions="Finds objects in images.",
        tools=[
            ToolDef(
                name="detect_objects",
                description="Find objects in a base64 image. Returns objects with class, confidence and box.",
                arguments=DetectObjectsArguments,
                handler=detect_objects,
                output_schema=LOOSE_OUTPUT_SCHEMA,
                error_style=ErrorStyle.PAYLOAD,
            )
        ],
    )
