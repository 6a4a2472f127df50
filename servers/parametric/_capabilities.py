"""The capability tool of each parametric server: arguments, handler and full output schema from a profile."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field, create_model

from servers._runtime import crop_canonical, floats, image_size_of, infer
from servers._schemas import declare_role
from servers._tools import CallInfo, ToolDef, ToolInputError, image_result
from servers.crop_masked import cut_out
from servers.parametric._context import CROP_REF, MASK_REF, ContextMemory
from servers.parametric._intake import Intake
from servers.parametric._payloads import box_schema, emit, item_schema, mask_schema, output_schema, results_schema
from servers.segment_rle import prompted_instances
from testbed.conventions import (
    MaskEncoding,
    MaskPayloadError,
    MaskResolution,
    decode_masks,
    encode_masks,
    from_canonical,
    report_shape,
    to_canonical,
)
from testbed.imaging import encode_png_base64
from testbed.memory import is_context_uri
from testbed.profile import Capability, ConventionProfile, box_name, default_tool_name, writes_one_label_map
from testbed.protocol import Modality, SchemaStyle, SemanticRole, declare_mask, declare_pixel_spacing
from testbed.server_config import ServerConfig
from testbed.vision import InferenceResult

__all__ = ["capability_tool"]

_MAX_MASK_RESOURCES = 4096
"""Mask resources kept per process (oldest dropped first); a dropped URI reads as unresolvable."""


class _MaskResources:
    """The process's server-side mask resources (``resource_uri`` masks): URI to base64 PNG.

    Shared by the parametric servers of one process, as tools of one backend share its storage; a
    server in another process (or any other reader) cannot resolve these URIs.
    """

    def __init__(self) -> None:
        self._pngs: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, masks: np.ndarray, profile: ConventionProfile) -> Any:
        written: dict[str, str] = {}
        payload = encode_masks(
            masks, profile.mask.encoding, normalized_polygons=profile.mask.normalized_polygons, resources=written
        )
        with self._lock:
            self._pngs.update(written)
            while len(self._pngs) > _MAX_MASK_RESOURCES:
                self._pngs.popitem(last=False)
        return payload

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._pngs)


MASK_RESOURCES = _MaskResources()

Handler = Callable[[BaseModel, CallInfo], CallToolResult]


def capability_tool(
    capability: Capability, profile: ConventionProfile, config: ServerConfig, intake: Intake
) -> ToolDef[Any]:
    """The tool a ``capability`` server built from ``profile`` serves besides its store tool."""
    build = {
        "detect": _detect,
        "segment": _segment,
        "crop": _crop,
        "crop-mask": _crop_mask,
        "measure": _measure,
    }[capability]
    fields, handler, full, description = build(profile, config, intake)
    arguments = create_model(
        f"{capability.title().replace('-', '')}Arguments",
        __config__=ConfigDict(extra="forbid"),
        **{intake.argument: intake.field(), **fields},
    )
    return ToolDef(
        name=profile.names.tool or default_tool_name(capability),
        description=description + (f" Fallback: {profile.fallback}." if profile.fallback else ""),
        arguments=arguments,
        handler=handler,
        output_schema=output_schema(profile, full) if full is not None else None,
        error_style=profile.error_style,
    )


Built = tuple[dict[str, Any], Handler, dict[str, Any] | None, str]
"""Extra argument fields, the handler, the full output schema (``None``: content), and the description."""


def _said(profile: ConventionProfile, declared: str, undeclared: str) -> str:
    """Declared servers say what convention they use in their prose too; undeclared ones stay vague."""
    return declared if profile.declares_extensions else undeclared


def _box_field(profile: ConventionProfile, *, extra: dict[str, Any] | None = None) -> tuple[Any, Any]:
    schema = box_schema(profile, description=f"Box as {profile.box}.")
    keywords = {key: value for key, value in schema.items() if key not in ("type", "items", "minItems", "maxItems")}
    keywords.pop("description")
    if extra and profile.declares_extensions:
        keywords |= extra
    return (list[float], Field(min_length=4, max_length=4, description="The box.", json_schema_extra=keywords or None))


def _results(profile: ConventionProfile, result: InferenceResult, size: Any, keep: list[int]) -> list[dict[str, Any]]:
    names, box = profile.names, box_name("detect", profile)
    boxes = from_canonical(result.boxes_xyxy, profile.box, size)
    items = []
    for i in keep:
        item: dict[str, Any] = {}
        if names.label is not None:
            item[names.label] = result.label(i)
        if names.score is not None:
            item[names.score] = float(result.scores[i])
        item[box] = floats(boxes[i])
        items.append(item)
    return items


def _with_size(profile: ConventionProfile, size: Any) -> dict[str, Any]:
    field = profile.names.image_size
    if field is None:
        return {}
    if profile.shape_order is None:
        return {field: {"width": size.width, "height": size.height}}
    return {field: list(report_shape(size, profile.shape_order))}


def _detect(profile: ConventionProfile, config: ServerConfig, intake: Intake) -> Built:
    items = profile.names.items or "detections"
    full = results_schema(profile, items=items, item=item_schema(profile, mask=False), role=SemanticRole.DETECTIONS)

    def detect(arguments: BaseModel, call: CallInfo) -> CallToolResult:
        image = intake.image(arguments, call)
        result = infer("detect", image, config)
        size = image_size_of(image)
        payload = {**_with_size(profile, size), items: _results(profile, result, size, list(range(len(result))))}
        return emit(profile, payload, full)

    said = _said(profile, f"boxes as {profile.box}", "boxes")
    return {}, detect, full, f"Detect objects in an image. Returns, per object, its {said}."


def _segment(profile: ConventionProfile, config: ServerConfig, intake: Intake) -> Built:
    names = profile.names
    items = names.items or "instances"
    one_map = writes_one_label_map("segment", profile)
    full = results_schema(
        profile, items=items, item=item_schema(profile, mask=not one_map), role=SemanticRole.INSTANCES
    )
    if one_map:
        full["properties"][names.mask] = mask_schema(profile)
        full["required"].append(names.mask)
    context = intake.store if isinstance(intake.store, ContextMemory) else None
    if context is not None:
        reference = {"type": "string", "description": "The instance's mask as a versioned context:// reference."}
        full["properties"][items]["items"]["properties"][MASK_REF] = reference
        full["properties"][items]["items"]["required"].append(MASK_REF)
    tool = names.tool or default_tool_name("segment")
    fields: dict[str, Any] = {}
    if names.prompts is not None:
        keywords = box_schema(profile, description="")
        declared = {
            key: value
            for key, value in keywords.items()
            if key not in ("type", "items", "minItems", "maxItems", "description")
        }
        fields[names.prompts] = (
            list[list[float]] | None,
            Field(default=None, description="Optional box prompts.", json_schema_extra=declared or None),
        )

    def segment(arguments: BaseModel, call: CallInfo) -> CallToolResult:
        image = intake.image(arguments, call)
        result = infer("segment", image, config)
        size = image_size_of(image)
        masks = result.model_masks if profile.mask.resolution is MaskResolution.MODEL else result.masks
        assert masks is not None  # a segmentation model always returns masks
        keep = list(range(len(result)))
        prompts = getattr(arguments, names.prompts) if names.prompts is not None else None
        if prompts is not None and names.prompts is not None:
            keep = prompted_instances(result.boxes_xyxy, _canonical_prompts(prompts, profile, size, names.prompts))
        encoded = MASK_RESOURCES.encode(masks[keep], profile)
        results = _results(profile, result, size, keep)
        if context is not None:
            source = (getattr(arguments, intake.argument),)
            for item, mask in zip(results, masks[keep], strict=True):
                item[MASK_REF] = context.put(mask, call, tool=tool, role=SemanticRole.MASK, inputs=source).ref.uri
        if one_map:
            return emit(profile, {**_with_size(profile, size), items: results, names.mask: encoded}, full)
        for item, mask in zip(results, encoded, strict=True):
            item[names.mask] = mask
        return emit(profile, {**_with_size(profile, size), items: results}, full)

    said = _said(profile, f"boxes as {profile.box} and {profile.mask.encoding.value} masks", "boxes and masks")
    return fields, segment, full, f"Segment objects in an image. Returns, per object, its {said}."


def _canonical_prompts(prompts: list[list[float]], profile: ConventionProfile, size: Any, argument: str) -> Any:
    if not prompts:
        return []
    if any(len(prompt) != 4 for prompt in prompts):
        raise ToolInputError(f"{argument}: each prompt must be four numbers, a box as {profile.box}")
    return to_canonical(np.asarray(prompts, dtype=np.float64), profile.box, size).tolist()


def _crop_output(profile: ConventionProfile, intake: Intake) -> dict[str, Any] | None:
    if profile.schema_style is SchemaStyle.CONTENT:
        return None
    crop = {"type": "string", "description": "The crop, base64 PNG."}
    if profile.declares_extensions:
        crop |= declare_role(SemanticRole.CROP, Modality.IMAGE)
    properties = {profile.names.crop: crop, "width": {"type": "integer"}, "height": {"type": "integer"}}
    if isinstance(intake.store, ContextMemory):
        properties[CROP_REF] = {"type": "string", "description": "The crop as a versioned context:// reference."}
    return {"type": "object", "properties": properties, "required": list(properties)}


def _send_crop(
    profile: ConventionProfile,
    piece: np.ndarray,
    full: dict[str, Any] | None,
    *,
    kept: tuple[ContextMemory, CallInfo, str, tuple[str, ...]] | None = None,
) -> CallToolResult:
    """The crop as image content, or a payload; ``kept`` (a context store, the call, the tool, the inputs read):
    the crop also becomes a context entry, its reference beside it (a content-only result has no place for it)."""
    png = encode_png_base64(piece)
    if full is None:
        return image_result(png)
    payload = {profile.names.crop: png, "width": int(piece.shape[1]), "height": int(piece.shape[0])}
    if kept is not None:
        context, call, tool, inputs = kept
        payload[CROP_REF] = context.put(piece, call, tool=tool, role=SemanticRole.CROP, inputs=inputs).ref.uri
    return emit(profile, payload, full)


def _kept(intake: Intake, arguments: BaseModel, call: CallInfo, tool: str, *names: str) -> Any:
    """What :func:`_send_crop` needs to keep a crop in the context store (``None`` outside the context scope): the
    inputs are the image reference read, then each of ``names`` (a context reference, else ``argument:<name>``)."""
    if not isinstance(intake.store, ContextMemory):
        return None
    read = [getattr(arguments, intake.argument)]
    for name in names:
        value = getattr(arguments, name)
        read.append(value if is_context_uri(value) else f"argument:{name}")
    return intake.store, call, tool, tuple(read)


def _crop(profile: ConventionProfile, config: ServerConfig, intake: Intake) -> Built:
    box = box_name("crop", profile)
    full = _crop_output(profile, intake)
    tool = profile.names.tool or default_tool_name("crop")

    def crop(arguments: BaseModel, call: CallInfo) -> CallToolResult:
        image = intake.image(arguments, call)
        piece = crop_canonical(image, getattr(arguments, box), profile.box, argument=box)
        return _send_crop(profile, piece, full, kept=_kept(intake, arguments, call, tool, box))

    said = _said(profile, f"box ({profile.box})", "box")
    return {box: _box_field(profile)}, crop, full, f"Crop an image to a {said}. Returns the crop as a PNG."


def _crop_mask(profile: ConventionProfile, config: ServerConfig, intake: Intake) -> Built:
    field = profile.names.mask
    encoding = profile.mask.encoding
    full = _crop_output(profile, intake)
    tool = profile.names.tool or default_tool_name("crop-mask")
    context = intake.store if isinstance(intake.store, ContextMemory) else None
    keywords = declare_mask(encoding, profile.mask.resolution) if profile.declares_extensions else None
    fields = {field: (Any, Field(description=f"One object's mask ({encoding.value}).", json_schema_extra=keywords))}

    def crop_mask(arguments: BaseModel, call: CallInfo) -> CallToolResult:
        image = intake.image(arguments, call)
        value = getattr(arguments, field)
        if context is not None and is_context_uri(value):
            mask = context.mask(value, call, argument=field, image=image)
            if not mask.any():
                raise ToolInputError(f"{field}: the mask is empty; there is nothing to cut out")
            return _send_crop(profile, cut_out(image, mask), full, kept=_kept(intake, arguments, call, tool, field))
        try:
            masks = decode_masks(
                value if encoding is MaskEncoding.LABEL_MAP else [value],
                encoding,
                image_size_of(image),
                normalized_polygons=profile.mask.normalized_polygons,
                expected_count=1,
                resources=MASK_RESOURCES.snapshot() if encoding is MaskEncoding.RESOURCE_URI else None,
            )
        except MaskPayloadError as error:
            raise ToolInputError(f"{field}: {str(error).split(': ', 1)[-1]}") from None
        if not masks[0].any():
            raise ToolInputError(f"{field}: the mask is empty; there is nothing to cut out")
        return _send_crop(profile, cut_out(image, masks[0]), full, kept=_kept(intake, arguments, call, tool, field))

    said = _said(profile, f"mask ({encoding.value} at image resolution)", "mask")
    return fields, crop_mask, full, f"Cut one object out of an image along its {said}. Returns a PNG."


def _measure(profile: ConventionProfile, config: ServerConfig, intake: Intake) -> Built:
    box = box_name("measure", profile)
    spacing = profile.pixel_spacing_mm
    length = {"type": "number", "minimum": 0}
    full = {
        "type": "object",
        "properties": {"width": length, "height": length, "unit": {"type": "string", "const": "mm"}},
        "required": ["width", "height", "unit"],
    }

    def measure(arguments: BaseModel, call: CallInfo) -> CallToolResult:
        image = intake.image(arguments, call)
        values = np.asarray(getattr(arguments, box), dtype=np.float64).reshape(1, 4)
        if not np.isfinite(values).all():
            raise ToolInputError(f"{box}: must be four finite numbers")
        x1, y1, x2, y2 = to_canonical(values, profile.box, image_size_of(image))[0]
        if x2 <= x1 or y2 <= y1:
            raise ToolInputError(f"{box}: box {values[0].tolist()} has no area")
        payload = {"width": float(x2 - x1) * spacing, "height": float(y2 - y1) * spacing, "unit": "mm"}
        return emit(profile, payload, full)

    said = _said(profile, f"box ({profile.box}) at {spacing:g} mm per pixel", "box")
    fields = {box: _box_field(profile, extra=declare_pixel_spacing(spacing))}
    return fields, measure, full, f"Measure an object's physical width and height from its {said}, in mm."
