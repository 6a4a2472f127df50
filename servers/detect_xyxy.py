"""``detect-xyxy``: the well-behaved detector; it declares everything it does.

Tool ``detect(image)``: the image travels by value (base64 PNG/JPEG). It returns
``structuredContent`` under a full ``outputSchema``::

    {"image_size": {"width": W, "height": H},
     "detections": [{"label": str, "score": float, "bbox": [x_min, y_min, x_max, y_max]}, ...]}

Boxes are the canonical convention (``xyxy/pixel/xy/top_left``), declared with
``coordinate_system`` on ``bbox``; every property carries its ``semantic_role``.
Errors are ``isError`` results. Memory: by value only; it resolves no handles.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._outputs import CanonicalLabeledBoxOut, ImageSizeOut
from servers._runtime import decode_image_argument, floats, image_size_of, infer, preload_detector
from servers._schemas import declare_image, declare_role, declare_size_object, inline_schema
from servers._tools import CallInfo, ToolDef, build_mcp_server, structured_result
from testbed.conventions import CANONICAL
from testbed.protocol import MemoryScope, Modality, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "detect-xyxy"


class DetectArguments(BaseModel):
    """Arguments of detect."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        description="The image as base64 PNG or JPEG (a data: URI is accepted).",
        json_schema_extra=declare_image(MemoryScope.BY_VALUE),
    )


class DetectionOut(CanonicalLabeledBoxOut):
    """One detected object."""


class DetectOutput(BaseModel):
    """What detect returns."""

    image_size: ImageSizeOut = Field(description="Size of the input image.", json_schema_extra=declare_size_object())
    detections: list[DetectionOut] = Field(
        description="Detected objects.", json_schema_extra=declare_role(SemanticRole.DETECTIONS, Modality.COLLECTION)
    )


TRUTH = ServerTruth(
    name=NAME,
    kind="detection",
    summary="Well-behaved: canonical xyxy pixel boxes, full outputSchema with every role declared, isError errors.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="detect",
            schema_style=SchemaStyle.FULL,
            box_convention=CANONICAL,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image"},
            paths={
                SemanticRole.IMAGE_SIZE: "image_size",
                SemanticRole.DETECTIONS: "detections",
                SemanticRole.CLASS_LABEL: "detections[*].label",
                SemanticRole.SCORE: "detections[*].score",
                SemanticRole.BOUNDING_BOX: "detections[*].bbox",
            },
        ),
    ),
)


@server(NAME, truth=TRUTH, preload=preload_detector)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``detect-xyxy`` server."""

    def detect(arguments: DetectArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image, argument="image", config=config)
        result = infer("detect", image, config)
        size = image_size_of(image)
        output = DetectOutput(
            image_size=ImageSizeOut(width=size.width, height=size.height),
            detections=[
                DetectionOut(label=result.label(i), score=float(result.scores[i]), bbox=floats(result.boxes_xyxy[i]))
                for i in range(len(result))
            ],
        )
        return structured_result(output.model_dump(mode="json"))

    return build_mcp_server(
        NAME,
        instructions="Object detector. Boxes are [x_min, y_min, x_max, y_max] in pixels; every field is declared.",
        tools=[
            ToolDef(
                name="detect",
                description=(
                    "Detect objects in an image given as base64. Returns the image size and, per object, its label, "
                    "score and bbox [x_min, y_min, x_max, y_max] in pixels (origin top-left)."
                ),
                arguments=DetectArguments,
                handler=detect,
                output_schema=inline_schema(DetectOutput),
            )
        ],
    )
