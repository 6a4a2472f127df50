"""``detect-xywh-bl``: a file-path detector with bottom-left-origin ``xywh`` boxes and ``(h, w)`` shapes.

Tools:

``save_image(image_b64)``
    Writes the image (by value) into the server's sandbox directory and returns
    ``{"path": "images/<hash>.png"}``, relative to the sandbox.
``detect_file(path)``
    Reads an image file inside the sandbox (relative to it, or absolute) and returns::

        {"shape": [H, W], "boxes": [{"name": str, "prob": float, "bounding_box": [x, y, w, h]}, ...]}

Boxes are ``xywh/pixel/xy/bottom_left``: y is measured upwards from the image's
bottom edge, and ``(x, y)`` is the box's **bottom-left** corner (the corner with
minimal coordinates in that frame), so a canonical ``(x1, y1, x2, y2)`` is
``[x1, H - y2, x2 - x1, y2 - y1]``. The shape is ``(height, width)``. Both tools
publish a typed ``outputSchema`` but no extension keywords. Errors are ``isError``.

Memory: file paths inside the sandbox only (``config.sandbox``, default a fresh
temporary directory); a path that resolves outside it (``..``, absolute elsewhere,
a symlink out) is refused. It resolves no handles.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument, floats, image_size_of, infer, preload_detector
from servers._schemas import inline_schema
from servers._stores import FileStore
from servers._tools import CallInfo, ToolDef, build_mcp_server, structured_result
from testbed.conventions import BoxConvention, ShapeOrder, from_canonical, report_shape
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "detect-xywh-bl"
BOX_CONVENTION = BoxConvention.from_name("xywh/pixel/xy/bottom_left")
SHAPE_ORDER = ShapeOrder.HW


class SaveImageArguments(BaseModel):
    """Arguments of save_image."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64.")


class SaveImageOutput(BaseModel):
    """What save_image returns."""

    path: str = Field(description="Where the image was saved, relative to the server's image folder.")


class DetectFileArguments(BaseModel):
    """Arguments of detect_file."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Path of an image file saved with save_image.")


class BoxOut(BaseModel):
    """One detected object."""

    name: str
    prob: float
    bounding_box: list[float] = Field(min_length=4, max_length=4)


class DetectFileOutput(BaseModel):
    """What detect_file returns."""

    shape: list[int] = Field(min_length=2, max_length=2, description="Image shape.")
    boxes: list[BoxOut]


TRUTH = ServerTruth(
    name=NAME,
    kind="detection",
    summary=(
        "xywh pixel boxes in a bottom-left-origin frame, anchored at the box's bottom-left corner "
        "([x1, H - y2, w, h] for canonical [x1, y1, x2, y2]); shape as (h, w); images by file path inside "
        "its sandbox; typed outputSchema without extension keywords."
    ),
    declares_conventions=False,
    tools=(
        ToolTruth(
            name="save_image",
            schema_style=SchemaStyle.FULL,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.FILE,
            inputs={SemanticRole.IMAGE: "image_b64"},
            paths={SemanticRole.IMAGE_PATH: "path"},
        ),
        ToolTruth(
            name="detect_file",
            schema_style=SchemaStyle.FULL,
            box_convention=BOX_CONVENTION,
            shape_order=SHAPE_ORDER,
            accepts=(MemoryScope.FILE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE_PATH: "path"},
            paths={
                SemanticRole.IMAGE_SIZE: "shape",
                SemanticRole.DETECTIONS: "boxes",
                SemanticRole.CLASS_LABEL: "boxes[*].name",
                SemanticRole.SCORE: "boxes[*].prob",
                SemanticRole.BOUNDING_BOX: "boxes[*].bounding_box",
            },
        ),
    ),
)


@server(NAME, truth=TRUTH, preload=preload_detector)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``detect-xywh-bl`` server, with its own file store on ``config.sandbox``."""
    files = FileStore(config.sandbox)

    def save_image(arguments: SaveImageArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        return structured_result(SaveImageOutput(path=files.save(image)).model_dump(mode="json"))

    def detect_file(arguments: DetectFileArguments, call: CallInfo) -> CallToolResult:
        image = files.load(arguments.path, argument="path", max_pixels=config.max_pixels)
        result = infer("detect", image, config)
        size = image_size_of(image)
        boxes = from_canonical(result.boxes_xyxy, BOX_CONVENTION, size)
        output = DetectFileOutput(
            shape=list(report_shape(size, SHAPE_ORDER)),
            boxes=[
                BoxOut(name=result.label(i), prob=float(result.scores[i]), bounding_box=floats(boxes[i]))
                for i in range(len(result))
            ],
        )
        return structured_result(output.model_dump(mode="json"))

    return build_mcp_server(
        NAME,
        instructions="Save images with save_image, then detect objects in them by path with detect_file.",
        tools=[
            ToolDef(
                name="save_image",
                description="Save a base64 image to the server's working directory and return its path.",
                arguments=SaveImageArguments,
                handler=save_image,
                output_schema=inline_schema(SaveImageOutput),
                read_only=False,
            ),
            ToolDef(
                name="detect_file",
                description=(
                    "Detect objects in a saved image file. Returns the image shape (height, width) and boxes as "
                    "[x, y, w, h] in pixels with the origin at the image's bottom-left corner, y pointing up; "
                    "(x, y) is the box's bottom-left corner."
                ),
                arguments=DetectFileArguments,
                handler=detect_file,
                output_schema=inline_schema(DetectFileOutput),
            ),
        ],
    )
