"""A plug-in for mcp-vision-testbed: one deliberately faulty detection server and one new fault kind.

``detect-yxhw`` (served as ``faulty-server-plugin/detect-yxhw``) finds objects with the
testbed's shipped YOLO detector and writes each box as ``[y, x, h, w]`` in fractions of the
image (``xywh/normalized/yx/top_left``), a convention no built-in server uses. It declares
none of it: no ``outputSchema``, no ``coordinate_system``, JSON inside a text block. Its truth
manifest says what it really does, so validators can judge what crosses its edges.

``swap_axes`` (``faulty-server-plugin/swap_axes``) swaps x and y in every box at its target,
pair by pair: the y-first/x-first mix-up of real pipelines.

Only the testbed's public modules are used; the entry point in ``pyproject.toml`` names this module.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from mcp.server.mcpserver import MCPServer

from testbed.conventions import BoxConvention, ImageSize, from_canonical
from testbed.faults import (
    EffectContext,
    FaultLayer,
    NotApplicableError,
    PayloadFault,
    PayloadPath,
    format_payload_path,
    read_path,
    write_path,
)
from testbed.imaging import decode_base64_image
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import fault_kind, server
from testbed.server_config import ServerConfig
from testbed.vision import InferenceParams, VisionModel, shipped_weights

NAME = "detect-yxhw"
BOXES = BoxConvention.from_name("xywh/normalized/yx/top_left")  # [y, x, h, w], fractions of the image

TRUTH = ServerTruth(  # what the server actually does: the testbed keeps it and never sends it
    name=NAME,
    kind="detection",
    summary="Boxes [y, x, h, w] as fractions of the image, JSON in a text block; declares nothing.",
    declares_conventions=False,
    tools=(
        ToolTruth(
            name="find_objects",  # exactly the tools the server declares, or registration fails
            schema_style=SchemaStyle.TEXT_JSON,
            box_convention=BOXES,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE: "image"},
            paths={
                SemanticRole.DETECTIONS: "objects",
                SemanticRole.CLASS_LABEL: "objects[*].label",
                SemanticRole.BOUNDING_BOX: "objects[*].box",
            },
        ),
    ),
)


@cache
def detector(weights: Path | None, device: str) -> VisionModel:
    """One model per process, loaded on first use (registering the server lists its tools, loading nothing)."""
    return VisionModel(weights or shipped_weights("detect"), device=device, quiet=True)


def preload(config: ServerConfig) -> None:
    """Load and warm the model before the server answers, so no call's deadline pays for it."""
    detector(config.detect_weights, config.device).warm_up(InferenceParams(imgsz=config.imgsz, conf=config.conf))


@server(NAME, truth=TRUTH, preload=preload)
def build(config: ServerConfig) -> MCPServer:
    """Build a fresh ``detect-yxhw`` server (the testbed builds one per connection)."""
    mcp = MCPServer(NAME, instructions="Finds objects in images.")

    @mcp.tool(structured_output=False)
    def find_objects(image: str) -> str:
        """Find the objects in a base64 image. Returns {"objects": [{"label", "box"}]}."""
        pixels = decode_base64_image(image, max_pixels=config.max_pixels)
        params = InferenceParams(imgsz=config.imgsz, conf=config.conf)
        found = detector(config.detect_weights, config.device).predict(pixels, params)
        boxes = from_canonical(found.boxes_xyxy, BOXES, ImageSize(width=pixels.shape[1], height=pixels.shape[0]))
        objects = [{"label": found.label(i), "box": boxes[i].tolist()} for i in range(len(found))]
        return json.dumps({"objects": objects})

    return mcp


@fault_kind
class SwapAxesFault(PayloadFault):
    """The boxes at the target path have x and y swapped in every coordinate pair."""

    kind: Literal["faulty-server-plugin/swap_axes"] = "faulty-server-plugin/swap_axes"
    """Discriminator: a plug-in's fault kinds are namespaced by its distribution."""

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("coords.mismatch",)  # catalogued IDs it should cause

    def alter(self, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
        """Swap x and y in the boxes at ``path``; one box or any nesting of lists of boxes."""
        count = 0

        def swap(value: Any) -> Any:
            nonlocal count
            if isinstance(value, list) and len(value) == 4 and all(isinstance(v, int | float) for v in value):
                count += 1
                return [value[1], value[0], value[3], value[2]]
            if isinstance(value, list):
                return [swap(inner) for inner in value]
            raise NotApplicableError(f"expected boxes at {format_payload_path(path)!r}, found {type(value).__name__}")

        swapped = swap(read_path(payload, path))
        if not count:
            raise NotApplicableError(f"no boxes at {format_payload_path(path)!r}")
        return write_path(payload, path, swapped), f"x and y swapped in {count} boxes at {format_payload_path(path)}"
