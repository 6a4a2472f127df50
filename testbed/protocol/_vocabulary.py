"""The protocol-extension vocabulary: keywords a server may put on its tool schemas' properties.

These are what a server *declares*, readable by any MCP client from
``tools/list``. Most real servers declare none of them; the well-behaved
reference servers declare all. The keywords (the paper's §6, made concrete):

``semantic_role``
    What a value means in a vision pipeline (:class:`SemanticRole`).
``modality``
    What kind of data it is (:class:`Modality`).
``coordinate_system``
    For boxes: ``{"format", "units", "origin", "axis_order"}``, the fields of
    :class:`testbed.conventions.BoxConvention`.
``shape_order``
    For an image size given as a pair: ``"wh"`` or ``"hw"``.
``encoding`` and ``resolution``
    For masks: a :class:`testbed.conventions.MaskEncoding` and ``"image"`` or ``"model"``.
``scope`` and ``ttl_seconds``
    For handles: how long and to whom a handle is valid (:class:`MemoryScope`).
``provenance``
    For handles: ``true`` when results name the call that produced them.
``pixel_spacing``
    For boxes measured in physical units: ``{"value": mm, "units": "mm"}``, the size of one pixel.

Changing the meaning of a keyword breaks recorded experiments: add new ones instead.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from testbed.conventions import BoxConvention, MaskEncoding, MaskResolution, ShapeOrder

EXTENSION_KEYWORDS = (
    "semantic_role",
    "modality",
    "coordinate_system",
    "shape_order",
    "encoding",
    "resolution",
    "scope",
    "ttl_seconds",
    "provenance",
    "pixel_spacing",
)


class SemanticRole(StrEnum):
    """What a schema property means in a vision pipeline."""

    IMAGE = "image"
    IMAGE_HANDLE = "image_handle"
    IMAGE_PATH = "image_path"
    IMAGE_SIZE = "image_size"
    BOUNDING_BOX = "bounding_box"
    CLASS_LABEL = "class_label"
    SCORE = "score"
    MASK = "mask"
    DETECTIONS = "detections"
    INSTANCES = "instances"
    CROP = "crop"
    CROP_HANDLE = "crop_handle"


class Modality(StrEnum):
    """The kind of data a property carries."""

    IMAGE = "image"
    BOX = "box"
    MASK = "mask"
    LABEL = "label"
    SCORE = "score"
    HANDLE = "handle"
    SIZE = "size"
    COLLECTION = "collection"


class MemoryScope(StrEnum):
    """How images and results travel, and who may resolve a handle.

    ``by_value``: the content itself (base64) travels; nothing is retained.
    ``session``: a handle valid only within the scope (run) that created it.
    ``global``: a handle any client of the server can resolve, forever.
    ``ttl``: a handle that expires ``ttl_seconds`` after creation (on the run's logical clock).
    ``file``: a path to a file inside the server's sandbox directory.
    ``context``: a versioned ``context://`` reference into the protocol-native context store
    (:mod:`testbed.memory`): readable within its run only, with provenance and an optional TTL.
    """

    BY_VALUE = "by_value"
    SESSION = "session"
    GLOBAL = "global"
    TTL = "ttl"
    FILE = "file"
    CONTEXT = "context"


def declare_box(convention: BoxConvention, *, role: SemanticRole = SemanticRole.BOUNDING_BOX) -> dict[str, Any]:
    """Extension keywords declaring a box property's convention."""
    return {
        "semantic_role": role.value,
        "modality": Modality.BOX.value,
        "coordinate_system": convention.model_dump(mode="json"),
    }


def declare_mask(encoding: MaskEncoding, resolution: MaskResolution) -> dict[str, Any]:
    """Extension keywords declaring a mask property's encoding and resolution."""
    return {
        "semantic_role": SemanticRole.MASK.value,
        "modality": Modality.MASK.value,
        "encoding": encoding.value,
        "resolution": resolution.value,
    }


def declare_handle(
    role: SemanticRole, scope: MemoryScope, *, ttl_seconds: float | None = None, provenance: bool = True
) -> dict[str, Any]:
    """Extension keywords declaring a handle property's memory scope."""
    declared: dict[str, Any] = {
        "semantic_role": role.value,
        "modality": Modality.HANDLE.value,
        "scope": scope.value,
        "provenance": provenance,
    }
    if ttl_seconds is not None:
        declared["ttl_seconds"] = ttl_seconds
    return declared


def declare_pixel_spacing(millimetres: float) -> dict[str, Any]:
    """Extension keyword declaring the physical size of one pixel (for tools that measure)."""
    return {"pixel_spacing": {"value": millimetres, "units": "mm"}}


def declare_image_size(order: ShapeOrder) -> dict[str, Any]:
    """Extension keywords declaring how an image size pair is ordered."""
    return {"semantic_role": SemanticRole.IMAGE_SIZE.value, "modality": Modality.SIZE.value, "shape_order": order.value}


def declared_box_convention(schema_property: dict[str, Any]) -> BoxConvention | None:
    """The box convention a schema property declares, or ``None`` when it declares none (or an invalid one)."""
    declared = schema_property.get("coordinate_system")
    if not isinstance(declared, dict):
        return None
    try:
        return BoxConvention.model_validate(declared)
    except ValueError:
        return None


def extension_keywords(schema_property: dict[str, Any]) -> dict[str, Any]:
    """Only the extension keywords present on a schema property."""
    return {k: schema_property[k] for k in EXTENSION_KEYWORDS if k in schema_property}
