"""Reading a tool result the way a client would: its payload, the boxes and masks in it, and its handles.

The payload is :func:`testbed.orchestrator.result_payload`'s: ``structuredContent``
when present, else the JSON of the first text block. Boxes
are found by shape (arrays of four finite numbers), grouped by payload path
(``detections[*].box``); masks by the shape of each :class:`MaskEncoding`
payload; nothing is read by guessing field names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, Final

import mcp.types as types

from testbed.orchestrator import result_payload
from testbed.protocol import SchemaStyle

__all__ = ["box_groups", "excerpt", "result_excerpt", "result_style", "string_leaves"]

_MAX_DEPTH: Final = 24


def result_style(result: types.CallToolResult, listed: SchemaStyle) -> SchemaStyle:
    """The style a successful result shows: the listing's when it has an ``outputSchema``, else text JSON
    when a text block holds JSON, else content (an image or prose carries the result)."""
    if listed in (SchemaStyle.FULL, SchemaStyle.LOOSE):
        return listed
    if result.structured_content is None and result_payload(result) is not None:
        return SchemaStyle.TEXT_JSON
    return SchemaStyle.CONTENT


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def box_groups(payload: Any) -> dict[str, list[list[float]]]:
    """Every array of four finite numbers in ``payload``, grouped by path with indices as ``[*]``."""
    groups: dict[str, list[list[float]]] = {}
    for path, value in _leaves_and_lists(payload, "", 0):
        if isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value):
            groups.setdefault(path, []).append([float(v) for v in value])
    return groups


def string_leaves(payload: Any) -> dict[str, str]:
    """Top-level and nested string values by path (first occurrence per path)."""
    found: dict[str, str] = {}
    for path, value in _leaves_and_lists(payload, "", 0):
        if isinstance(value, str) and path not in found:
            found[path] = value
    return found


def _leaves_and_lists(value: Any, path: str, depth: int) -> Iterator[tuple[str, Any]]:
    if depth > _MAX_DEPTH:
        return
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves_and_lists(child, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list) and not (len(value) == 4 and all(_is_number(v) for v in value)):
        for child in value:
            yield from _leaves_and_lists(child, f"{path}[*]", depth + 1)


def excerpt(value: Any, limit: int = 300) -> str:
    """A one-line excerpt of a JSON value or result (long strings such as base64 shortened in place)."""
    text = json.dumps(_shortened(value, 0), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shortened(value: Any, depth: int) -> Any:
    if depth > 6:
        return "..."
    if isinstance(value, str):
        return value if len(value) <= 60 else f"{value[:40]}...({len(value)} chars)"
    if isinstance(value, dict):
        return {key: _shortened(child, depth + 1) for key, child in list(value.items())[:12]}
    if isinstance(value, list):
        shown = [_shortened(child, depth + 1) for child in value[:8]]
        return [*shown, f"...({len(value)} items)"] if len(value) > 8 else shown
    return value


def result_excerpt(result: types.CallToolResult, limit: int = 300) -> str:
    """A one-line excerpt of a result: ``isError``, then its structured content or content blocks."""
    dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"meta"})
    return excerpt(dumped, limit)
