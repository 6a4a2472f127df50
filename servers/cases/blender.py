"""``case-blender``: a scene whose datablocks outlive their bindings (the Blender case).

``add_object`` stores an image as an object of the calling session's scene and returns its ``object_id``.
``apply_modifier`` replaces an object by a modified copy, as applying a modifier in Blender creates a new
datablock: the new id is linked into the scene, the old one is unlinked but kept (an orphan, as Blender
keeps orphan data until it is purged), and the result also echoes the old id as ``previous_id``. A later
step that binds to the old id holds a stale binding: ``render`` rejects it as an orphaned reference
(``memory.handle_unknown``). ``scene_stats`` reports what the session's scene retains, in bytes.
Scenes are per session (the run's scope); the process keeps the latest :data:`MAX_SESSIONS`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import cv2
import numpy as np
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument
from servers._stores import make_handle
from servers._tools import CallInfo, ToolDef, ToolInputError, build_mcp_server, structured_result
from servers.vulnerable._common import ImageArguments
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth, declare_handle
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME: Final = "case-blender"
MAX_SESSIONS: Final = 256

_OBJECT = declare_handle(SemanticRole.IMAGE_HANDLE, MemoryScope.SESSION)


class ObjectArguments(BaseModel):
    """An object of this session's scene."""

    model_config = ConfigDict(extra="forbid")

    object_id: str = Field(description="An object id returned in this session.", json_schema_extra=_OBJECT)


class ModifierArguments(ObjectArguments):
    """An object and the modifier to apply to it."""

    modifier: Literal["subdivide", "mirror", "smooth"] = Field(description="The modifier.")


@dataclass
class _Scene:
    linked: dict[str, np.ndarray] = field(default_factory=dict)
    orphans: dict[str, np.ndarray] = field(default_factory=dict)
    created: int = 0

    def retained_bytes(self) -> int:
        return sum(int(block.nbytes) for block in (*self.linked.values(), *self.orphans.values()))


def _modified(block: np.ndarray, modifier: str) -> np.ndarray:
    if modifier == "subdivide":
        return np.asarray(cv2.resize(block, (block.shape[1] * 2, block.shape[0] * 2), interpolation=cv2.INTER_LINEAR))
    if modifier == "mirror":
        return np.ascontiguousarray(block[:, ::-1])
    return np.asarray(cv2.blur(block, (3, 3)))


class _Scenes:
    """Every session's scene, the latest :data:`MAX_SESSIONS` of them."""

    def __init__(self) -> None:
        self._scenes: OrderedDict[str, _Scene] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, scope: str, block: np.ndarray) -> str:
        with self._lock:
            scene = self._scene(scope)
            scene.created += 1
            object_id = make_handle("obj", scope, str(scene.created))
            scene.linked[object_id] = block
            return object_id

    def replace(self, scope: str, object_id: str, modifier: str) -> str:
        with self._lock:
            scene = self._scene(scope)
            block = self._linked(scene, object_id)
            scene.created += 1
            new_id = make_handle("obj", scope, str(scene.created))
            scene.orphans[object_id] = scene.linked.pop(object_id)
            scene.linked[new_id] = _modified(block, modifier)
            return new_id

    def get(self, scope: str, object_id: str) -> np.ndarray:
        with self._lock:
            return self._linked(self._scene(scope), object_id)

    def stats(self, scope: str, object_id: str) -> dict[str, int]:
        with self._lock:
            scene = self._scene(scope)
            self._linked(scene, object_id)
            return {
                "objects": len(scene.linked),
                "orphans": len(scene.orphans),
                "retained_bytes": scene.retained_bytes(),
            }

    def _scene(self, scope: str) -> _Scene:
        scene = self._scenes.setdefault(scope, _Scene())
        self._scenes.move_to_end(scope)
        while len(self._scenes) > MAX_SESSIONS:
            self._scenes.popitem(last=False)
        return scene

    @staticmethod
    def _linked(scene: _Scene, object_id: str) -> np.ndarray:
        block = scene.linked.get(object_id)
        if block is not None:
            return block
        if object_id in scene.orphans:
            raise ToolInputError(f"object_id: {object_id!r} is an orphaned reference (unlinked from the scene)")
        raise ToolInputError(f"object_id: {object_id!r} is not in this session's scene")


def _object_schema(*extra: str) -> dict[str, object]:
    properties: dict[str, object] = {"object_id": {"type": "string", **_OBJECT}}
    properties.update({name: {"type": "string"} for name in extra})
    return {"type": "object", "properties": properties, "required": list(properties)}


_COUNTS: Final = {"type": "integer", "minimum": 0}
_STATS_SCHEMA: Final = {
    "type": "object",
    "properties": {"objects": _COUNTS, "orphans": _COUNTS, "retained_bytes": _COUNTS},
    "required": ["objects", "orphans", "retained_bytes"],
}
_RENDER_SCHEMA: Final = {
    "type": "object",
    "properties": {"width": _COUNTS, "height": _COUNTS, "mean": {"type": "number"}},
    "required": ["width", "height", "mean"],
}


def _truth(name: str, *, issues: bool, reads: bool) -> ToolTruth:
    return ToolTruth(
        name=name,
        schema_style=SchemaStyle.FULL,
        accepts=(MemoryScope.SESSION,) if reads else (MemoryScope.BY_VALUE,),
        returns=MemoryScope.SESSION if issues else MemoryScope.BY_VALUE,
        inputs={SemanticRole.IMAGE_HANDLE: "object_id"} if reads else {SemanticRole.IMAGE: "image_b64"},
        paths={SemanticRole.IMAGE_HANDLE: "object_id"} if issues else {},
    )


TRUTH: Final = ServerTruth(
    name=NAME,
    kind="cropping",
    summary="Case Blender: session scenes; modified objects leave orphaned datablocks that old bindings still name.",
    declares_conventions=True,
    tools=(
        _truth("add_object", issues=True, reads=False),
        _truth("apply_modifier", issues=True, reads=True),
        _truth("render", issues=False, reads=True),
        _truth("scene_stats", issues=False, reads=True),
    ),
)


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build ``case-blender`` with one process-wide set of session scenes."""
    scenes = _Scenes()

    def add_object(arguments: ImageArguments, call: CallInfo) -> CallToolResult:
        block = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        return structured_result({"object_id": scenes.add(call.scope, np.array(block))})

    def apply_modifier(arguments: ModifierArguments, call: CallInfo) -> CallToolResult:
        new_id = scenes.replace(call.scope, arguments.object_id, arguments.modifier)
        return structured_result({"object_id": new_id, "previous_id": arguments.object_id})

    def render(arguments: ObjectArguments, call: CallInfo) -> CallToolResult:
        block = scenes.get(call.scope, arguments.object_id)
        return structured_result({"width": block.shape[1], "height": block.shape[0], "mean": float(block.mean())})

    def scene_stats(arguments: ObjectArguments, call: CallInfo) -> CallToolResult:
        return structured_result(scenes.stats(call.scope, arguments.object_id))

    tools: list[ToolDef[Any]] = [
        ToolDef("add_object", "Add an image to this session's scene as an object.", ImageArguments, add_object,
                _object_schema(), read_only=False),
        ToolDef("apply_modifier", "Apply a modifier: the object is replaced by a new one (previous_id: the old).",
                ModifierArguments, apply_modifier, _object_schema("previous_id"), read_only=False),
        ToolDef("render", "Render one object of the scene.", ObjectArguments, render, _RENDER_SCHEMA),
        ToolDef("scene_stats", "What the scene holding an object retains.", ObjectArguments, scene_stats,
                _STATS_SCHEMA),
    ]  # fmt: skip
    return build_mcp_server(NAME, instructions="A scene per session; objects by id.", tools=tools)
