"""Static checks: what ``initialize`` and ``tools/list`` alone say about a server.

Instruction-like text is matched by :data:`INJECTION_PATTERNS`, a small,
documented set of the phrasings tool-poisoning write-ups show (text that
addresses the model rather than describing the tool), plus hidden Unicode
(zero-width and bidirectional controls, tag characters). It is a flag for a
person to read, not proof: confidence 0.6 for a phrase, 0.9 for hidden
characters, which have no business in a description.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from testbed.protocol import EXTENSION_KEYWORDS, SchemaStyle, declared_box_convention, schema_at

__all__ = [
    "INJECTION_PATTERNS",
    "ListedTool",
    "extension_fields",
    "injection_matches",
    "listed_style",
    "tool_list_sha256",
    "untyped_inputs",
]

INJECTION_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    "ignore previous": re.compile(
        r"\b(ignore|disregard|forget)\b.{0,20}\b(previous|prior|above|earlier|all)\b.{0,20}"
        r"\b(instructions?|messages?|rules?|prompts?)",
        re.I,
    ),
    "you must": re.compile(r"\byou (must|should always|have to|are required to|need to)\b", re.I),
    "call the tool": re.compile(
        r"\b(always|first|before|instead|must)\b.{0,30}\b(call|invoke|use|run)\b.{0,30}\btool\b", re.I
    ),
    "system:": re.compile(r"(^|\n|\s)(system|assistant)\s*:", re.I),
    "markup tag": re.compile(r"<\s*/?\s*(important|system|instructions?|secret)\s*>", re.I),
    "do not tell": re.compile(
        r"\b(do not|don't|never)\b.{0,20}\b(tell|mention|reveal|inform)\b.{0,20}\b(user|human)\b", re.I
    ),
    "read secrets": re.compile(r"(\.ssh|id_rsa|\.env\b|api[_ -]?key|password|credentials)", re.I),
}  # fmt: skip
"""Phrasings that address the model; each name is what the card reports."""

_HIDDEN: Final = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]")


@dataclass(frozen=True)
class ListedTool:
    """One tool of ``tools/list``, as JSON."""

    name: str
    description: str
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any] | None
    annotations: Mapping[str, Any]

    @classmethod
    def from_json(cls, tool: Mapping[str, Any]) -> ListedTool:
        inputs = tool.get("inputSchema")
        outputs = tool.get("outputSchema")
        annotations = tool.get("annotations")
        return cls(
            name=str(tool.get("name", "")),
            description=str(tool.get("description") or ""),
            input_schema=inputs if isinstance(inputs, Mapping) else {},
            output_schema=outputs if isinstance(outputs, Mapping) else None,
            annotations=annotations if isinstance(annotations, Mapping) else {},
        )


def tool_list_sha256(tools: list[ListedTool]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of each tool's name, description, inputSchema
    and outputSchema, tools sorted by name: a pin that changes when any of them does."""
    pinned = [
        {"name": t.name, "description": t.description, "inputSchema": t.input_schema, "outputSchema": t.output_schema}
        for t in sorted(tools, key=lambda t: t.name)
    ]
    text = json.dumps(pinned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def listed_style(tool: ListedTool) -> SchemaStyle:
    """The schema style its listing shows; without an ``outputSchema`` the result decides text JSON or content."""
    if tool.output_schema is None:
        return SchemaStyle.TEXT_JSON
    properties = tool.output_schema.get("properties")
    return SchemaStyle.FULL if isinstance(properties, Mapping) and properties else SchemaStyle.LOOSE


def extension_fields(tool: ListedTool) -> dict[str, list[str]]:
    """The extension keywords each property declares, by ``input.NAME`` or ``output.PATH``."""
    found: dict[str, list[str]] = {}
    for name in _input_properties(tool):
        node = schema_at(tool.input_schema, name)
        keywords = [key for key in EXTENSION_KEYWORDS if node is not None and key in node]
        if keywords:
            found[f"input.{name}"] = keywords
    if tool.output_schema is not None:
        for path in _output_paths(tool.output_schema, tool.output_schema, "", 0):
            node = schema_at(tool.output_schema, path)
            keywords = [key for key in EXTENSION_KEYWORDS if node is not None and key in node]
            if keywords:
                found[f"output.{path}"] = keywords
    return found


def declared_box_conventions(tool: ListedTool) -> list[str]:
    """Every box convention its output schema declares, as compact names."""
    if tool.output_schema is None:
        return []
    names: list[str] = []
    for path in _output_paths(tool.output_schema, tool.output_schema, "", 0):
        node = schema_at(tool.output_schema, path)
        convention = declared_box_convention(node) if node is not None else None
        if convention is not None and str(convention) not in names:
            names.append(str(convention))
    return names


def declared_keyword(tool: ListedTool, keyword: str) -> str | None:
    """The first value of an extension keyword anywhere in its output schema (``encoding``, ``scope``, ...)."""
    if tool.output_schema is None:
        return None
    for path in _output_paths(tool.output_schema, tool.output_schema, "", 0):
        node = schema_at(tool.output_schema, path)
        if node is not None and keyword in node:
            return str(node[keyword])
    return None


def untyped_inputs(tool: ListedTool) -> list[str]:
    """Input properties with no ``type`` (nor ``$ref``, ``enum``, ``const`` or typed ``anyOf``/``oneOf``)."""
    untyped: list[str] = []
    properties = tool.input_schema.get("properties")
    if not isinstance(properties, Mapping):
        return untyped
    for name, schema in properties.items():
        if not isinstance(schema, Mapping) or not _typed(schema):
            untyped.append(str(name))
    return untyped


def _typed(schema: Mapping[str, Any]) -> bool:
    if any(key in schema for key in ("type", "$ref", "enum", "const")):
        return True
    branches = [branch for key in ("anyOf", "oneOf", "allOf") for branch in schema.get(key) or []]
    return bool(branches) and all(isinstance(branch, Mapping) and _typed(branch) for branch in branches)


def injection_matches(text: str) -> list[tuple[str, str, float]]:
    """Each instruction-like pattern found in ``text``: its name, the matched excerpt and a confidence."""
    found: list[tuple[str, str, float]] = []
    hidden = _HIDDEN.findall(text)
    if hidden:
        codes = ", ".join(sorted({f"U+{ord(char):04X}" for char in hidden}))
        found.append(("hidden unicode", codes, 0.9))
    for name, pattern in INJECTION_PATTERNS.items():
        match = pattern.search(text)
        if match is not None:
            found.append((name, match.group(0).strip()[:80], 0.6))
    return found


def _input_properties(tool: ListedTool) -> list[str]:
    properties = tool.input_schema.get("properties")
    return [str(name) for name in properties] if isinstance(properties, Mapping) else []


_MAX_DEPTH: Final = 12


def _output_paths(schema: Mapping[str, Any], document: Mapping[str, Any], path: str, depth: int) -> Iterator[str]:
    """Payload paths (``detections[*].box``) of an output schema's properties, ``$ref``s followed by
    :func:`schema_at` (each path is re-read through it)."""
    if depth > _MAX_DEPTH:
        return
    node = schema_at(document, path) if path else schema
    if node is None:
        return
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        for name in properties:
            child = f"{path}.{name}" if path else str(name)
            yield child
            yield from _output_paths(schema, document, child, depth + 1)
    items = node.get("items")
    if isinstance(items, Mapping):
        yield from _output_paths(schema, document, f"{path}[*]", depth + 1)
