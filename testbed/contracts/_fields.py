"""The required-fields rule: the value meets the consumer's own JSON schema for the argument it fills.

The argument's schema is read from the consumer's whole input schema (``$ref`` and ``anyOf`` intact), so
every keyword the consumer publishes binds: ``type``, ``required`` properties, ``minimum``/``maximum``,
``enum``, ``pattern``, lengths. A number JSON cannot carry (``1e309`` parsed to infinity, ``NaN``) is a
breach too. No adapter changes a value's type, so a breach has no remedy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import referencing.exceptions

from testbed.contracts._rules import EdgeValue, Finding, contract_rule

__all__: list[str] = []

_FIELDS = "required_fields"
_INDEX = re.compile(r"\[-?[0-9]+\]")
_MAX_DEPTH = 32
_PREVIEW = 60


@contract_rule(_FIELDS, keyword=None)
def check_required_fields(edge: EdgeValue) -> Finding | None:
    """The value sent validates against the consumer's schema for the argument, and holds only finite numbers."""
    document = edge.consumer_schema or {}
    schema = _property(document, _INDEX.sub("[*]", edge.argument))
    if schema is None:
        return Finding(
            _FIELDS, f"{edge.where}: the consumer's input schema has no property {edge.argument}", unevaluable=True
        )
    nonfinite = _nonfinite(edge.sent, "")
    if nonfinite is not None:
        return Finding(_FIELDS, f"{edge.where}{nonfinite} is not a finite number")
    definitions: dict[str, Any] = {key: document[key] for key in ("$defs", "definitions") if key in document}
    root = {**schema, **definitions}
    try:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(root).iter_errors(edge.sent))
    except (jsonschema.exceptions.SchemaError, referencing.exceptions.Unresolvable, re.error) as problem:
        return Finding(_FIELDS, f"{edge.where}: the consumer's schema cannot be applied: {problem}", unevaluable=True)
    if error is None:
        return None
    at = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
    return Finding(_FIELDS, f"{edge.where}{at}: {_message(error)}")


def _property(document: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """The schema at an argument path (``box``, ``options.boxes[*]``) of an input schema, ``$ref`` kept unresolved
    at the end; ``None`` when the schema names no such property."""
    node: Mapping[str, Any] | None = document
    for part in path.replace("[*]", ".[*]").split("."):
        if not part:
            continue
        node = _child(node, part, document) if node is not None else None
    return dict(node) if node is not None else None


def _child(node: Mapping[str, Any], part: str, document: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for option in _options(node, document, 0):
        child = option.get("items") if part == "[*]" else (option.get("properties") or {}).get(part)
        if isinstance(child, Mapping):
            return child
    return None


def _options(node: Mapping[str, Any], document: Mapping[str, Any], depth: int) -> list[Mapping[str, Any]]:
    """``node``, its ``$ref`` target and its ``anyOf``/``oneOf``/``allOf`` branches: where a property may be."""
    if depth > _MAX_DEPTH:
        return []
    found = [node]
    reference = node.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/"):
        target: Any = document
        for key in reference[2:].split("/"):
            target = target.get(key) if isinstance(target, Mapping) else None
        if isinstance(target, Mapping):
            found += _options(target, document, depth + 1)
    for keyword in ("anyOf", "oneOf", "allOf"):
        for branch in node.get(keyword) or ():
            if isinstance(branch, Mapping):
                found += _options(branch, document, depth + 1)
    return found


def _nonfinite(value: Any, at: str) -> str | None:
    """Where in ``value`` a non-finite float lies (``""``: the value itself), or ``None``."""
    if isinstance(value, float):
        return at if not math.isfinite(value) else None
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _nonfinite(item, f"{at}[{key}]" if isinstance(key, int) else f"{at}.{key}")
        if found is not None:
            return found
    return None


def _message(error: jsonschema.exceptions.ValidationError) -> str:
    """The validator's message on one line, a long value shortened so that what is wrong with it stays in view."""
    message, written = error.message, repr(error.instance)
    if message.startswith(written) and len(written) > _PREVIEW:
        message = written[: _PREVIEW - 3] + "..." + message[len(written) :]
    line = " ".join(message.split())
    return line if len(line) <= 2 * _PREVIEW else line[: 2 * _PREVIEW - 3] + "..."
