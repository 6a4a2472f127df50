"""What each fault does to a message: pure functions of the fault, the call site and the message.

Semantic effects rewrite a result payload (``structuredContent`` and, where it
holds JSON, the first text block, kept consistent); frame effects turn a message
into the exception the client's transport would yield for a damaged line.
Anything random is drawn from the seed and the call site, never from global state.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import mcp.types as types
import numpy as np

from testbed._seeding import derive_rng
from testbed.conventions import (
    BoxConvention,
    BoxUnits,
    ImageSize,
    MaskEncoding,
    MaskPayloadError,
    MaskResolution,
    Origin,
    convert_boxes,
    decode_masks,
    encode_masks,
    resize_masks,
)
from testbed.faults._model import (
    ChangeUnitsFault,
    EvictHandleFault,
    FlipConventionFault,
    MaskResolutionFault,
    NotApplicableError,
    PayloadFault,
    RemoveFieldFault,
    RenameFieldFault,
    RugPullFault,
)
from testbed.transport import CallSite
from testbed.workflow._paths import (
    PayloadPath,
    PayloadPathError,
    format_payload_path,
    read_path,
    remove_at,
    rename_at,
    write_path,
)

__all__ = [
    "PAYLOAD_EFFECTS",
    "SCHEMA_RUG_PULL_ARGUMENT",
    "EffectContext",
    "NotApplicableError",
    "alter_result",
    "alter_tool_list",
    "corrupted_frame",
    "payload_effect",
    "truncated_frame",
]

SCHEMA_RUG_PULL_ARGUMENT: Final = "confirm_token"
"""The required argument a ``schema`` rug pull adds to a tool's input schema."""
_DESCRIPTION_NOTE: Final = " (This description was changed mid-run.)"


@dataclass(frozen=True)
class EffectContext:
    """What an effect may depend on besides the message."""

    site: CallSite
    """The call the message belongs to."""
    index: int
    """The fault's index in the scenario's list."""
    seed: int
    """The experiment seed."""

    def rng(self, *keys: str | int) -> np.random.Generator:
        """A generator for this fault at this site (the same for every call with the same keys)."""
        site = self.site
        return derive_rng(self.seed, "fault-effect", site.run, site.node, site.item, self.index, *keys)


PayloadEffect = Callable[[Any, PayloadPath, Any, EffectContext], tuple[Any, str]]
"""``(fault, path, payload, context) -> (new payload, detail)``; raises :class:`NotApplicableError`."""


# --- result payloads ---------------------------------------------------------------------------


def alter_result(result: dict[str, Any], change: Callable[[Any], tuple[Any, str]]) -> tuple[dict[str, Any], str]:
    """Apply ``change`` to a tools/call result's payload, keeping ``structuredContent`` and its JSON text consistent.

    The payload is ``structuredContent`` when present, else the JSON of the first text block.
    When both are present, the text is rewritten too: as the new payload when it held the same
    JSON, else changed on its own where it can be.

    Args:
        result: the wire ``result`` of a tools/call response.
        change: maps a payload to the altered payload and a detail line; raises
            :class:`NotApplicableError` when it cannot.

    Returns:
        The new result and the detail line.

    Raises:
        NotApplicableError: the tool errored, there is no JSON payload, or ``change`` raised it.
    """
    if result.get("isError"):
        raise NotApplicableError("the tool returned an error result")
    structured = result.get("structuredContent")
    content = result.get("content")
    blocks: list[Any] = list(content) if isinstance(content, list) else []
    text_index = next(
        (i for i, block in enumerate(blocks) if isinstance(block, dict) and block.get("type") == "text"), None
    )
    text_payload: Any = None
    text_is_json = False
    if text_index is not None:
        try:
            text_payload = json.loads(blocks[text_index].get("text", ""))
            text_is_json = isinstance(text_payload, dict | list)
        except (TypeError, ValueError):
            text_is_json = False
    if structured is None and not text_is_json:
        raise NotApplicableError("the result has no JSON payload (no structuredContent, no JSON text block)")
    primary = structured if structured is not None else text_payload
    new_primary, detail = change(primary)
    altered = dict(result)
    if structured is not None:
        altered["structuredContent"] = new_primary
    if text_index is not None and text_is_json:
        if structured is None or text_payload == structured:
            new_text: Any = new_primary
        else:
            try:
                new_text, _ = change(text_payload)
            except NotApplicableError:
                new_text = text_payload
        original_text = blocks[text_index]["text"]
        indent = 2 if "\n" in original_text else None
        blocks[text_index] = {**blocks[text_index], "text": json.dumps(new_text, indent=indent)}
        altered["content"] = blocks
    return altered, detail


def _read(payload: Any, path: PayloadPath) -> Any:
    try:
        return read_path(payload, path)
    except PayloadPathError as error:
        raise NotApplicableError(str(error)) from None


def _write(payload: Any, path: PayloadPath, value: Any) -> Any:
    try:
        return write_path(payload, path, value)
    except PayloadPathError as error:
        raise NotApplicableError(str(error)) from None


def _rename(fault: RenameFieldFault, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
    try:
        altered = rename_at(payload, path, fault.new_name)
    except PayloadPathError as error:
        raise NotApplicableError(str(error)) from None
    if altered == payload:
        raise NotApplicableError(f"nothing to rename at {format_payload_path(path)!r}")
    return altered, f"renamed {format_payload_path(path)} to {fault.new_name!r}"


def _remove(fault: RemoveFieldFault, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
    try:
        altered = remove_at(payload, path)
    except PayloadPathError as error:
        raise NotApplicableError(str(error)) from None
    if altered == payload:
        raise NotApplicableError(f"nothing to remove at {format_payload_path(path)!r}")
    return altered, f"removed {format_payload_path(path)}"


def _true_convention(declared: BoxConvention | None, context: EffectContext) -> BoxConvention:
    if declared is not None:
        return declared
    truth = context.site.truth
    if truth is None or truth.box_convention is None:
        raise NotApplicableError("the server's box convention is unknown: give 'from' for servers without a truth")
    return truth.box_convention


def _needs_size(convention: BoxConvention) -> bool:
    return convention.units is not BoxUnits.PIXEL or convention.origin is Origin.BOTTOM_LEFT


def _rewrite_boxes(
    payload: Any, path: PayloadPath, source: BoxConvention, target: BoxConvention, context: EffectContext
) -> tuple[Any, str]:
    if source == target:
        raise NotApplicableError(f"the boxes are already in {target}")
    size = context.site.image_size
    if size is None:
        if _needs_size(source) or _needs_size(target):
            raise NotApplicableError("the image size is unknown, and the conversion needs it")
        size = ImageSize(width=1, height=1)  # unused: pixel top-left conventions do not depend on it
    value = _read(payload, path)
    boxes = list(_collect_boxes(value))
    if not boxes:
        raise NotApplicableError(f"no boxes at {format_payload_path(path)!r}")
    converted = iter(convert_boxes(np.array(boxes, dtype=np.float64), source, target, size).tolist())
    new_value = _rebuild_boxes(value, converted)
    text = format_payload_path(path)
    return _write(payload, path, new_value), f"{len(boxes)} boxes at {text} rewritten from {source} to {target}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_box(value: object) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)


def _collect_boxes(value: Any) -> Iterator[list[float]]:
    if _is_box(value):
        yield [float(v) for v in value]
    elif isinstance(value, list):
        for inner in value:
            yield from _collect_boxes(inner)
    else:
        raise NotApplicableError(f"expected boxes (lists of four numbers), found {type(value).__name__}")


def _rebuild_boxes(value: Any, converted: Iterator[list[float]]) -> Any:
    if _is_box(value):
        return next(converted)
    return [_rebuild_boxes(inner, converted) for inner in value]


def _flip(fault: FlipConventionFault, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
    source = _true_convention(fault.from_, context)
    return _rewrite_boxes(payload, path, source, fault.to, context)


def _units(fault: ChangeUnitsFault, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
    source = _true_convention(fault.from_, context)
    return _rewrite_boxes(payload, path, source, source.model_copy(update={"units": fault.to_units}), context)


def _resample(fault: MaskResolutionFault, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
    truth = context.site.truth
    encoding = fault.encoding or (truth.mask_encoding if truth is not None else None)
    if encoding is None:
        raise NotApplicableError("the mask encoding is unknown: give 'encoding' for servers without a truth")
    normalized = truth.normalized_polygons if truth is not None else False
    value = _read(payload, path)
    single = _is_single_mask(value, encoding)
    masks_payload: Any = [value] if single else value
    if encoding is not MaskEncoding.LABEL_MAP and (not isinstance(masks_payload, list) or not masks_payload):
        raise NotApplicableError(f"no masks at {format_payload_path(path)!r}")
    grid = _mask_grid(masks_payload, encoding, context.site, normalized=normalized)
    target = fault.image_size
    if grid == target:
        raise NotApplicableError(f"the masks are already {target.width}x{target.height}")
    try:
        stack = decode_masks(masks_payload, encoding, grid, normalized_polygons=normalized)
    except MaskPayloadError as error:
        raise NotApplicableError(f"cannot decode the masks: {error}") from None
    encoded: Any = encode_masks(resize_masks(stack, target), encoding, normalized_polygons=normalized)
    new_value = encoded[0] if single else encoded
    detail = (
        f"{stack.shape[0]} {encoding.value} masks at {format_payload_path(path)} resampled "
        f"from {grid.width}x{grid.height} to {target.width}x{target.height}"
    )
    return _write(payload, path, new_value), detail


def _is_single_mask(value: Any, encoding: MaskEncoding) -> bool:
    """Whether ``value`` is one object's mask (the path named one object) rather than a list of them."""
    if encoding is MaskEncoding.LABEL_MAP:
        return False
    if encoding is MaskEncoding.POLYGON:  # one object: a list of flat number lists
        return (
            isinstance(value, list)
            and bool(value)
            and isinstance(value[0], list)
            and all(_is_number(v) for v in value[0])
        )
    return isinstance(value, str | dict)


def _mask_grid(masks: Any, encoding: MaskEncoding, site: CallSite, *, normalized: bool) -> ImageSize:
    """The grid the masks are on, read from the payload where it says, else the image size."""
    if encoding is MaskEncoding.LABEL_MAP:
        size = masks.get("size") if isinstance(masks, dict) else None
        return _size_from_hw(size)
    if encoding is MaskEncoding.COCO_RLE:
        first = masks[0]
        return _size_from_hw(first.get("size") if isinstance(first, dict) else None)
    if encoding is MaskEncoding.PNG_BASE64:
        return _png_size(masks[0])
    truth = site.truth
    if truth is not None and truth.mask_resolution is MaskResolution.MODEL and not normalized:
        raise NotApplicableError("polygon masks at the model's resolution: their grid size is unknown")
    if site.image_size is None:
        raise NotApplicableError("the image size is unknown, and polygon masks are on the image's grid")
    return site.image_size


def _size_from_hw(size: Any) -> ImageSize:
    if not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise NotApplicableError(f"the mask payload's 'size' is not [height, width]: {size!r}")
    return ImageSize(width=size[1], height=size[0])


_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def _png_size(data: Any) -> ImageSize:
    """Width and height from a base64 PNG's IHDR chunk (the first 24 bytes)."""
    try:
        head = base64.b64decode(data[:32], validate=True) if isinstance(data, str) else b""
    except (binascii.Error, ValueError):
        head = b""
    if len(head) < 24 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise NotApplicableError("a mask is not a base64 PNG")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if width <= 0 or height <= 0:
        raise NotApplicableError("a mask PNG has an empty size")
    return ImageSize(width=width, height=height)


def _evict(fault: EvictHandleFault, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
    value = _read(payload, path)
    replaced: list[tuple[str, str]] = []

    def forge(handle: Any) -> Any:
        if isinstance(handle, list):
            return [forge(inner) for inner in handle]
        if not isinstance(handle, str) or not handle:
            raise NotApplicableError(f"expected a handle (a string), found {type(handle).__name__}")
        forged = _forged_handle(handle, context.rng("evict", len(replaced)))
        replaced.append((handle, forged))
        return forged

    new_value = forge(value)
    if not replaced:
        raise NotApplicableError(f"no handles at {format_payload_path(path)!r}")
    pairs = ", ".join(f"{old!r} -> {new!r}" for old, new in replaced)
    return _write(payload, path, new_value), f"handle at {format_payload_path(path)} replaced: {pairs}"


def _forged_handle(handle: str, rng: np.random.Generator) -> str:
    """A handle shaped like ``handle`` (same prefix up to the last ``-`` or ``/``, same length) but never issued."""
    cut = max(handle.rfind("-"), handle.rfind("/")) + 1
    prefix, body = handle[:cut], handle[cut:]
    alphabet = "0123456789abcdef"
    forged = prefix + "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), size=max(len(body), 8)))
    return forged if forged != handle else forged + "0"


PAYLOAD_EFFECTS: Final[dict[type, PayloadEffect]] = {
    RenameFieldFault: _rename,
    RemoveFieldFault: _remove,
    FlipConventionFault: _flip,
    ChangeUnitsFault: _units,
    MaskResolutionFault: _resample,
    EvictHandleFault: _evict,
}
"""The core's payload-altering semantic faults, by model class."""


def payload_effect(fault: object) -> PayloadEffect | None:
    """How ``fault`` alters a result payload, or ``None`` when it alters none.

    A core kind's effect is its entry in :data:`PAYLOAD_EFFECTS`; any other
    :class:`PayloadFault` (a plug-in's kind) brings its own, :meth:`PayloadFault.alter`.
    """
    effect = PAYLOAD_EFFECTS.get(type(fault))
    if effect is None and isinstance(fault, PayloadFault):
        return _alter_by_its_kind
    return effect


def _alter_by_its_kind(fault: PayloadFault, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
    try:
        return fault.alter(path, copy.deepcopy(payload), context)
    except NotApplicableError:
        raise
    except PayloadPathError as error:
        raise NotApplicableError(str(error)) from None
    except Exception as error:  # a plug-in's bug is recorded as the fault not applying; the run goes on
        raise NotApplicableError(f"{fault.kind}: alter raised {error.__class__.__name__}: {error}") from None


# --- tools/list ----------------------------------------------------------------------------------


def alter_tool_list(fault: RugPullFault, result: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Apply a rug pull to a tools/list result.

    Raises:
        NotApplicableError: the listing has no tool named ``fault.target.tool``.
    """
    name = fault.target.tool
    tools = result.get("tools")
    if not isinstance(tools, list):
        raise NotApplicableError("the tools/list result has no tool list")
    position = next((i for i, tool in enumerate(tools) if isinstance(tool, dict) and tool.get("name") == name), None)
    if position is None:
        raise NotApplicableError(f"tools/list has no tool {name!r}")
    changed = list(tools)
    tool: dict[str, Any] = dict(tools[position])
    if fault.change == "remove_tool":
        del changed[position]
        detail = f"tool {name!r} removed from tools/list"
    elif fault.change == "description":
        old = tool.get("description") or ""
        tool["description"] = fault.text if fault.text is not None else old + _DESCRIPTION_NOTE
        changed[position] = tool
        detail = f"description of {name!r} changed"
    else:
        schema = dict(tool.get("inputSchema") or {"type": "object"})
        properties = dict(schema.get("properties") or {})
        properties[SCHEMA_RUG_PULL_ARGUMENT] = {"type": "string", "description": "Required from now on."}
        required = [*(schema.get("required") or []), SCHEMA_RUG_PULL_ARGUMENT]
        tool["inputSchema"] = {**schema, "properties": properties, "required": required}
        changed[position] = tool
        detail = f"input schema of {name!r} gained the required argument {SCHEMA_RUG_PULL_ARGUMENT!r}"
    return {**result, "tools": changed}, detail


# --- frames --------------------------------------------------------------------------------------


def _frame(message: types.JSONRPCMessage) -> str:
    return message.model_dump_json(by_alias=True, exclude_unset=True)


def _parse_error(line: str | bytes) -> Exception:
    """The exception the SDK's stdio transport yields for an unparseable line (it parses the same way)."""
    try:
        types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValueError as error:
        return error
    return ValueError("unparseable JSON-RPC frame")  # pragma: no cover - the callers always damage the frame


def truncated_frame(message: types.JSONRPCMessage, *, keep: float) -> tuple[Exception, str]:
    """The parse error for ``message``'s frame cut to ``keep`` of its characters, and a detail line."""
    line = _frame(message)
    cut = int(len(line) * keep)
    return _parse_error(line[:cut]), f"frame cut after {cut} of {len(line)} characters"


def corrupted_frame(message: types.JSONRPCMessage, *, rng: np.random.Generator) -> tuple[Exception, str]:
    """The parse error for ``message``'s frame with a run of garbage bytes in it, and a detail line."""
    data = bytearray(_frame(message).encode())
    length = min(16, max(1, len(data) // 4))
    start = int(rng.integers(0, max(1, len(data) - length)))
    garbage = bytes(int(v) for v in rng.integers(0, 256, size=length))
    data[start : start + length] = b"\xff" + garbage[1:]  # 0xff never occurs in UTF-8: always unparseable
    return _parse_error(bytes(data)), f"{length} garbage bytes at offset {start}"
