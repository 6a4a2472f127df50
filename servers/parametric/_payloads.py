"""How a parametric tool publishes and sends a payload: its schema style, declarations, and output validation."""

from __future__ import annotations

from typing import Any

import jsonschema
from mcp_types import CallToolResult

from servers._schemas import LOOSE_OUTPUT_SCHEMA, declare_role, declare_size_object
from servers._tools import ToolInputError, structured_result, text_json_result
from testbed.conventions import MaskEncoding
from testbed.profile import ConventionProfile, box_name
from testbed.protocol import Modality, SchemaStyle, SemanticRole, declare_box, declare_image_size, declare_mask

__all__ = [
    "box_schema",
    "emit",
    "mask_schema",
    "output_schema",
    "results_schema",
    "validated",
]

_NUMBER = {"type": "number"}


class OutputInvalidError(ToolInputError):
    """A payload that does not fit the tool's own full output schema (reported, never sent)."""


def output_schema(profile: ConventionProfile, full: dict[str, Any]) -> dict[str, Any] | None:
    """The published ``outputSchema``: ``full`` for the full style, ``{"type": "object"}`` for loose, else none."""
    if profile.schema_style is SchemaStyle.FULL:
        return full
    if profile.schema_style is SchemaStyle.LOOSE:
        return LOOSE_OUTPUT_SCHEMA
    return None


def emit(profile: ConventionProfile, payload: dict[str, Any], full: dict[str, Any]) -> CallToolResult:
    """Send ``payload`` in the profile's schema style, validated against ``full`` first where the profile says so."""
    if profile.validates_outputs:
        validated(payload, full)
    if profile.schema_style is SchemaStyle.TEXT_JSON:
        return text_json_result(payload)
    return structured_result(payload)


def validated(payload: Any, schema: dict[str, Any]) -> Any:
    """``payload``, once it fits ``schema``.

    Raises:
        OutputInvalidError: it does not; the message names the first misfit and where.
    """
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(payload))
    if error is not None:
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
        raise OutputInvalidError(f"output{where}: {error.message} (not sent)")
    return payload


def _declared(profile: ConventionProfile, schema: dict[str, Any], keywords: dict[str, Any]) -> dict[str, Any]:
    return schema | keywords if profile.declares_extensions else schema


def box_schema(profile: ConventionProfile, *, description: str) -> dict[str, Any]:
    """A box property (or argument) in the profile's convention."""
    schema = {"type": "array", "items": _NUMBER, "minItems": 4, "maxItems": 4, "description": description}
    return _declared(profile, schema, declare_box(profile.box))


def mask_schema(profile: ConventionProfile) -> dict[str, Any]:
    """One mask value (or a label map of several) in the profile's encoding."""
    encoding = profile.mask.encoding
    size = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
    schema: dict[str, Any]
    if encoding is MaskEncoding.COCO_RLE:
        schema = {"type": "object", "properties": {"size": size, "counts": {"type": "string"}}}
    elif encoding is MaskEncoding.LABEL_MAP:
        schema = {"type": "object", "properties": {"size": size, "png": {"type": "string"}}}
    elif encoding is MaskEncoding.POLYGON:
        schema = {"type": "array", "items": {"type": "array", "items": _NUMBER}}
    else:
        schema = {"type": "string"}
    if schema["type"] == "object":
        schema["required"] = list(schema["properties"])
    described = schema | {"description": f"Mask: {encoding.value} at {profile.mask.resolution.value} resolution."}
    return _declared(profile, described, declare_mask(encoding, profile.mask.resolution))


def results_schema(
    profile: ConventionProfile, *, items: str, item: dict[str, Any], role: SemanticRole
) -> dict[str, Any]:
    """The full output schema of a detector or segmenter: optional image size, then its list of results."""
    names = profile.names
    properties: dict[str, Any] = {}
    if names.image_size is not None:
        if profile.shape_order is None:
            axes = {"type": "integer", "exclusiveMinimum": 0}
            size = {"type": "object", "properties": {"width": axes, "height": axes}, "required": ["width", "height"]}
            properties[names.image_size] = _declared(profile, size, declare_size_object())
        else:
            pair = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
            properties[names.image_size] = _declared(profile, pair, declare_image_size(profile.shape_order))
    listing = {"type": "array", "items": item}
    properties[items] = _declared(profile, listing, declare_role(role, Modality.COLLECTION))
    return {"type": "object", "properties": properties, "required": list(properties)}


def item_schema(profile: ConventionProfile, *, mask: bool) -> dict[str, Any]:
    """One detection or instance: label, score, box and (per-result) mask, as the profile names them."""
    names = profile.names
    properties: dict[str, Any] = {}
    if names.label is not None:
        label = {"type": "string", "description": "Class name."}
        properties[names.label] = _declared(profile, label, declare_role(SemanticRole.CLASS_LABEL, Modality.LABEL))
    if names.score is not None:
        score = {"type": "number", "minimum": 0, "maximum": 1, "description": "Confidence."}
        properties[names.score] = _declared(profile, score, declare_role(SemanticRole.SCORE, Modality.SCORE))
    properties[box_name("detect", profile)] = box_schema(profile, description=f"Box as {profile.box}.")
    if mask:
        properties[names.mask] = mask_schema(profile)
    return {"type": "object", "properties": properties, "required": list(properties)}
