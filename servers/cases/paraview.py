"""``case-paraview`` and ``case-paraview-memo``: renders whose binary texture travels inside JSON (the ParaView case).

``render_view`` renders the image from a camera (rotated, at twice its resolution, smoothed in
:data:`SHADING_PASSES` passes, then brought back to its size) and returns the texture as raw RGBA bytes,
base64, nested in JSON (``view.texture.data``). A downstream tool that reads base64 images cannot parse
it: ``conn.binary_unparseable``. ``case-paraview`` renders every call anew; ``case-paraview-memo`` memoises
renders by (image, camera) for its process, so repeated calls with the same camera cost a lookup.
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import cv2
import numpy as np
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument
from servers._tools import CallInfo, ToolDef, build_mcp_server, structured_result
from testbed._arrays import RGBImage
from testbed.imaging import image_digest
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME: Final = "case-paraview"
MEMO_NAME: Final = "case-paraview-memo"
SHADING_PASSES: Final = 24
MEMO_SIZE: Final = 64


class Camera(BaseModel):
    """Where the view is rendered from."""

    model_config = ConfigDict(extra="forbid")

    azimuth: float = Field(ge=-180, le=180, description="Degrees about the view axis.")
    elevation: float = Field(ge=-90, le=90, description="Degrees; shades the view.")


class RenderArguments(BaseModel):
    """The dataset (an image) and the camera."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The dataset, base64.")
    camera: Camera


_NUMBER: Final = {"type": "number"}
OUTPUT_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "view": {
            "type": "object",
            "properties": {
                "camera": {"type": "object", "properties": {"azimuth": _NUMBER, "elevation": _NUMBER}},
                "texture": {
                    "type": "object",
                    "properties": {
                        "format": {"type": "string", "const": "rgba8"},
                        "width": {"type": "integer"},
                        "height": {"type": "integer"},
                        "data": {"type": "string", "contentEncoding": "base64"},
                    },
                    "required": ["format", "width", "height", "data"],
                },
            },
            "required": ["camera", "texture"],
        }
    },
    "required": ["view"],
}


def render(image: RGBImage, camera: Camera) -> np.ndarray:
    """The view's RGBA texture: a real computation whose cost grows with :data:`SHADING_PASSES`."""
    height, width = image.shape[:2]
    big = cv2.resize(np.asarray(image, dtype=np.float32), (width * 2, height * 2), interpolation=cv2.INTER_LINEAR)
    rotation = cv2.getRotationMatrix2D((width, height), camera.azimuth, 1.0)
    view = cv2.warpAffine(big, rotation, (width * 2, height * 2))
    for _ in range(SHADING_PASSES):
        view = (view + np.roll(view, 1, axis=0) + np.roll(view, 1, axis=1)) / 3.0
    view *= 0.5 + 0.5 * np.cos(np.radians(camera.elevation))
    small = cv2.resize(view, (width, height), interpolation=cv2.INTER_AREA)
    alpha = np.full((height, width, 1), 255, dtype=np.uint8)
    return np.concatenate([np.clip(small, 0, 255).astype(np.uint8), alpha], axis=2)


def _payload(texture: np.ndarray, camera: Camera) -> dict[str, Any]:
    data = base64.b64encode(np.ascontiguousarray(texture).tobytes()).decode("ascii")
    return {
        "view": {
            "camera": camera.model_dump(),
            "texture": {"format": "rgba8", "width": texture.shape[1], "height": texture.shape[0], "data": data},
        }
    }


class _Memo:
    """Renders by (image digest, camera), the latest :data:`MEMO_SIZE`."""

    def __init__(self) -> None:
        self._views: OrderedDict[tuple[str, float, float], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, float, float], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            found = self._views.get(key)
        if found is None:
            found = compute()
            with self._lock:
                self._views[key] = found
                while len(self._views) > MEMO_SIZE:
                    self._views.popitem(last=False)
        return found


def _truth(name: str, memoised: bool) -> ServerTruth:
    how = "memoised by (image, camera)" if memoised else "re-rendered on every call"
    return ServerTruth(
        name=name,
        kind="cropping",
        summary=f"Case ParaView: raw RGBA textures base64 inside nested JSON; renders {how}.",
        declares_conventions=False,
        tools=(
            ToolTruth(
                name="render_view",
                schema_style=SchemaStyle.FULL,
                accepts=(MemoryScope.BY_VALUE,),
                returns=MemoryScope.BY_VALUE,
                inputs={SemanticRole.IMAGE: "image_b64"},
            ),
        ),
    )


def _build(name: str, config: ServerConfig, *, memoised: bool) -> MCPServer:
    memo = _Memo()

    def render_view(arguments: RenderArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        camera = arguments.camera

        def compute() -> dict[str, Any]:
            return _payload(render(image, camera), camera)

        if not memoised:
            return structured_result(compute())
        return structured_result(memo.get((image_digest(image), camera.azimuth, camera.elevation), compute))

    tool = ToolDef(
        name="render_view",
        description="Render the dataset from a camera; returns the view's texture.",
        arguments=RenderArguments,
        handler=render_view,
        output_schema=OUTPUT_SCHEMA,
    )
    return build_mcp_server(name, instructions="Renders views of a dataset.", tools=[tool])


@server(NAME, truth=_truth(NAME, memoised=False))
def build(config: ServerConfig) -> MCPServer:
    """Build ``case-paraview`` (every call renders)."""
    return _build(NAME, config, memoised=False)


@server(MEMO_NAME, truth=_truth(MEMO_NAME, memoised=True))
def build_memoised(config: ServerConfig) -> MCPServer:
    """Build ``case-paraview-memo`` (renders memoised)."""
    return _build(MEMO_NAME, config, memoised=True)
