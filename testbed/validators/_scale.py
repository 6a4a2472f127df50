"""``coords.scale_mismatch``: a measurement made at another pixel spacing than its image's.

A tool that measures (its server's truth kind is ``measuring``, it reads an image and a box and returns a
``width`` in ``mm``) applies some millimetres per pixel: the recorded width over the box's width in
pixels. An image carries its spacing where the call that produced it declares ``pixel_spacing`` on the
image property of its output schema. Where both are known and differ, the measurement is at the wrong
physical scale, whether or not the measuring tool declared its own spacing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any, Final

import numpy as np

from testbed.conventions import ImageSize, to_canonical
from testbed.events import CallEvent, CallOutcomeKind
from testbed.protocol import SemanticRole, ToolTruth
from testbed.validators._coords import tool_truth
from testbed.validators._model import RunRecord, ValidatorSpec, Violation

__all__ = ["VALIDATORS", "applied_spacing", "check_scale_mismatch", "declared_spacings"]

RELATIVE_TOLERANCE: Final = 1e-3
_PNG: Final = b"\x89PNG\r\n\x1a\n"


def png_size(image: str) -> ImageSize | None:
    """The size a base64 PNG declares in its header (``None``: not a base64 PNG)."""
    text = image.partition(",")[2] if image.startswith("data:") else image
    try:
        head = base64.b64decode(text[:32], validate=True)
    except (binascii.Error, ValueError):
        return None
    if not head.startswith(_PNG) or head[12:16] != b"IHDR":
        return None
    return ImageSize(width=int.from_bytes(head[16:20], "big"), height=int.from_bytes(head[20:24], "big"))


def _spacing_of(schema_property: Any) -> float | None:
    if not isinstance(schema_property, dict) or schema_property.get("semantic_role") != SemanticRole.IMAGE.value:
        return None
    spacing = schema_property.get("pixel_spacing")
    if not isinstance(spacing, dict) or spacing.get("units") != "mm":
        return None
    value = spacing.get("value")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def declared_spacings(record: RunRecord) -> dict[str, tuple[float, int]]:
    """Every image a call of the run returned under a declared pixel spacing: image to (mm, event position)."""
    found: dict[str, tuple[float, int]] = {}
    for at, call in record.call_events():
        if call.outcome is not CallOutcomeKind.OK:
            continue
        schema = record.listed_tools(call.server).get(call.tool, {}).get("outputSchema") or {}
        payload = record.internalize(call.payload)
        if not isinstance(payload, dict):
            continue
        for name, spacing in _spacing_properties(schema):
            image = payload.get(name)
            if isinstance(image, str):
                found.setdefault(image, (spacing, at))
    return found


def _spacing_properties(schema: Any) -> tuple[tuple[Any, float], ...]:
    """Each property of an outputSchema that declares a pixel spacing, in order, with it; once per schema object
    (listings are read once per experiment, so their schemas are shared). Raises as reading the schema raises."""
    if not schema:
        return ()  # no outputSchema listed: an empty one stands for it
    found = _SPACINGS.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1]
    spacings = []
    for name, schema_property in (schema.get("properties") or {}).items():
        spacing = _spacing_of(schema_property)
        if spacing is not None:
            spacings.append((name, spacing))
    if len(_SPACINGS) >= 1024:
        _SPACINGS.clear()
    _SPACINGS[id(schema)] = (schema, tuple(spacings))
    return tuple(spacings)


_SPACINGS: dict[int, tuple[Any, tuple[tuple[Any, float], ...]]] = {}


def _is_measurement(record: RunRecord, call: CallEvent, truth: ToolTruth) -> bool:
    server = record.truth(call.server)
    inputs = truth.inputs
    return (
        server is not None
        and server.kind == "measuring"
        and truth.box_convention is not None
        and SemanticRole.IMAGE in inputs
        and SemanticRole.BOUNDING_BOX in inputs
    )


def applied_spacing(truth: ToolTruth, arguments: dict[str, Any], payload: Any) -> float | None:
    """The millimetres per pixel a measuring call applied: its width in mm over its box's width in pixels."""
    if not isinstance(payload, dict) or payload.get("unit") != "mm" or truth.box_convention is None:
        return None
    width, image = payload.get("width"), arguments.get(truth.inputs[SemanticRole.IMAGE])
    box = arguments.get(truth.inputs[SemanticRole.BOUNDING_BOX])
    size = png_size(image) if isinstance(image, str) else None
    if not isinstance(width, int | float) or size is None or not isinstance(box, list) or len(box) != 4:
        return None
    try:
        x1, _, x2, _ = to_canonical(np.asarray([box], dtype=np.float64), truth.box_convention, size)[0]
    except (TypeError, ValueError):
        return None
    return float(width) / float(x2 - x1) if x2 > x1 else None


def check_scale_mismatch(record: RunRecord) -> Iterator[Violation]:
    """``coords.scale_mismatch``: a measuring call's applied spacing differs from its image's declared one."""
    spacings = declared_spacings(record)
    if not spacings:
        return
    for at, call in record.call_events():
        truth = tool_truth(record, call)
        if call.outcome is not CallOutcomeKind.OK or truth is None or not _is_measurement(record, call, truth):
            continue
        arguments = record.internalize(call.arguments)
        declared = spacings.get(arguments.get(truth.inputs[SemanticRole.IMAGE]))
        applied = applied_spacing(truth, arguments, record.internalize(call.payload))
        if declared is None or applied is None:
            continue
        spacing, origin = declared
        if abs(applied - spacing) > RELATIVE_TOLERANCE * spacing:
            yield Violation(
                "coords.scale_mismatch",
                record.started.run,
                call.server,
                call.node,
                call.item,
                f"{call.tool} measured at {applied:.4g} mm per pixel; its image declares {spacing:.4g} mm",
                (origin, at),
            )


VALIDATORS: Final = (ValidatorSpec("coords.scale_mismatch", ("coords.scale_mismatch",), check_scale_mismatch),)
