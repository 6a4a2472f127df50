"""Declared-only truth: what a server's ``tools/list`` declares, read as if it were a truth manifest.

A server the testbed does not own (an external ``command`` or ``url``) comes
with no truth manifest unless the scenario gives one. Its schemas may still
carry the extension keywords (:mod:`testbed.protocol._vocabulary`); where they
do, validators that read a manifest can run on what the server *claims*
instead of what it actually does. :func:`declared_truth` builds that claim as
a :class:`ServerTruth`; where nothing is declared it returns ``None`` and those
validators skip the server.

Schemas are read as published: ``$ref`` into the document's own ``$defs`` (or
``definitions``) is followed, as are the branches of ``anyOf``/``oneOf`` (an
``Optional`` field), so a server built with pydantic models is read like one
with inlined schemas.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from testbed.conventions import BoxConvention, MaskEncoding, MaskResolution, ShapeOrder
from testbed.protocol._truth import SchemaStyle, ServerTruth, ToolTruth
from testbed.protocol._vocabulary import EXTENSION_KEYWORDS, MemoryScope, SemanticRole, declared_box_convention

__all__ = ["DECLARED_SUMMARY", "declared_truth", "schema_at"]

DECLARED_SUMMARY: Final = "declared only: derived from the extension keywords of its tools/list, not a truth manifest"
"""The ``summary`` of every derived manifest (how a reader tells it from a manifest someone wrote)."""

_MAX_DEPTH: Final = 32
"""How deep a schema is walked (``$ref`` hops included); deeper parts say nothing here."""

_MASK_ROLES: Final = frozenset({SemanticRole.MASK, SemanticRole.INSTANCES})
_CROP_ROLES: Final = frozenset({SemanticRole.CROP, SemanticRole.CROP_HANDLE})
_BOX_OUT_ROLES: Final = frozenset({SemanticRole.BOUNDING_BOX, SemanticRole.DETECTIONS})


@dataclass
class _Found:
    """What one tool's schemas declare."""

    inputs: dict[SemanticRole, str] = field(default_factory=dict)
    paths: dict[SemanticRole, str] = field(default_factory=dict)
    boxes: list[BoxConvention] = field(default_factory=list)
    encoding: MaskEncoding | None = None
    resolution: MaskResolution | None = None
    shape_order: ShapeOrder | None = None
    accepts: list[MemoryScope] = field(default_factory=list)
    returns: MemoryScope | None = None
    ttl_seconds: float | None = None
    declared: bool = False


def declared_truth(name: str, tools: Sequence[Mapping[str, Any]]) -> ServerTruth | None:
    """A manifest built from what ``tools`` (a ``tools/list`` result, as JSON) declare, or ``None``.

    Args:
        name: the manifest's name (the server's name in the record).
        tools: the listed tools, each with ``name``, ``inputSchema`` and optionally ``outputSchema``.

    Returns:
        ``None`` when no tool declares any extension keyword.
    """
    derived: list[ToolTruth] = []
    declared = False
    seen: set[str] = set()
    for tool in tools:
        tool_name = tool.get("name")
        if not isinstance(tool_name, str) or tool_name in seen:
            continue
        seen.add(tool_name)
        found = _read_tool(tool)
        declared = declared or found.declared
        derived.append(_tool_truth(tool_name, tool, found))
    if not declared:
        return None
    return ServerTruth(
        name=name,
        kind=_kind(derived),
        summary=DECLARED_SUMMARY,
        declares_conventions=True,
        tools=tuple(derived),
    )


def schema_at(document: Mapping[str, Any], path: str) -> dict[str, Any] | None:
    """The property of a schema at a payload path such as ``detections[*].bbox``, or ``None``.

    ``$ref`` into the document and ``anyOf``/``oneOf`` branches are followed; at the end the first
    branch that carries extension keywords is returned (else the first branch).
    """
    nodes: list[Mapping[str, Any]] = list(_alternatives(document, document, 0))
    for part in path.replace("[*]", ".[*]").split("."):
        if not part:
            continue
        children: list[Mapping[str, Any]] = []
        for node in nodes:
            child = node.get("items") if part == "[*]" else _properties(node, document).get(part)
            if isinstance(child, Mapping):
                children.extend(_alternatives(child, document, 0))
        nodes = children
    if not nodes:
        return None
    chosen = next((node for node in nodes if any(keyword in node for keyword in EXTENSION_KEYWORDS)), nodes[0])
    return dict(chosen)


def _read_tool(tool: Mapping[str, Any]) -> _Found:
    found = _Found()
    inputs = tool.get("inputSchema")
    if isinstance(inputs, Mapping):
        properties = _properties(inputs, inputs)
        for argument, schema in properties.items():
            for keywords in _alternatives(schema, inputs, 0):
                _take(found, keywords, argument, into="inputs")
    outputs = tool.get("outputSchema")
    if isinstance(outputs, Mapping):
        for path, keywords in _walk(outputs, outputs, "", 0):
            _take(found, keywords, path, into="paths")
    return found


def _take(found: _Found, schema: Mapping[str, Any], where: str, *, into: Literal["inputs", "paths"]) -> None:
    """Record the extension keywords of one property (an argument name, or a payload path)."""
    if not any(keyword in schema for keyword in EXTENSION_KEYWORDS):
        return
    found.declared = True
    role = _enum(SemanticRole, schema.get("semantic_role"))
    if role is not None and where:
        target = found.inputs if into == "inputs" else found.paths
        target.setdefault(role, where)
    box = declared_box_convention(dict(schema))
    if box is not None:
        found.boxes.append(box)
    found.encoding = found.encoding or _enum(MaskEncoding, schema.get("encoding"))
    found.resolution = found.resolution or _enum(MaskResolution, schema.get("resolution"))
    found.shape_order = found.shape_order or _enum(ShapeOrder, schema.get("shape_order"))
    scope = _enum(MemoryScope, schema.get("scope"))
    if scope is None:
        return
    if into == "inputs":
        if scope not in found.accepts:
            found.accepts.append(scope)
        return
    found.returns = found.returns or scope
    ttl = schema.get("ttl_seconds")
    if found.ttl_seconds is None and isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
        found.ttl_seconds = float(ttl)


def _tool_truth(name: str, tool: Mapping[str, Any], found: _Found) -> ToolTruth:
    outputs = tool.get("outputSchema")
    if not isinstance(outputs, Mapping):
        style = SchemaStyle.TEXT_JSON
    elif _properties(outputs, outputs):
        style = SchemaStyle.FULL
    else:
        style = SchemaStyle.LOOSE
    return ToolTruth(
        name=name,
        schema_style=style,
        box_convention=found.boxes[0] if found.boxes else None,
        shape_order=found.shape_order,
        mask_encoding=found.encoding,
        mask_resolution=found.resolution,
        accepts=tuple(found.accepts),
        returns=found.returns,
        ttl_seconds=found.ttl_seconds if found.returns is MemoryScope.TTL else None,
        inputs=found.inputs,
        paths=found.paths,
    )


def _kind(tools: Sequence[ToolTruth]) -> Literal["detection", "segmentation", "cropping"]:
    """What the server is for, as far as its declared roles tell."""
    if any(_MASK_ROLES & tool.paths.keys() for tool in tools):
        return "segmentation"
    crops = any(_CROP_ROLES & tool.paths.keys() for tool in tools)
    reads_boxes_only = any(
        SemanticRole.BOUNDING_BOX in tool.inputs and not _BOX_OUT_ROLES & tool.paths.keys() for tool in tools
    )
    if crops or reads_boxes_only:
        return "cropping"
    return "detection"


def _walk(schema: Mapping[str, Any], document: Mapping[str, Any], path: str, depth: int) -> Iterator[tuple[str, Any]]:
    """Every (payload path, schema) pair of an output schema: ``detections[*].bbox`` style paths."""
    if depth > _MAX_DEPTH:
        return
    for option in _alternatives(schema, document, depth):
        yield path, option
        for name, child in _properties(option, document).items():
            yield from _walk(child, document, f"{path}.{name}" if path else name, depth + 1)
        items = option.get("items")
        if isinstance(items, Mapping):
            yield from _walk(items, document, f"{path}[*]", depth + 1)


def _alternatives(schema: Mapping[str, Any], document: Mapping[str, Any], depth: int) -> Iterator[Mapping[str, Any]]:
    """The schema itself with its ``$ref`` followed (keywords beside the ``$ref`` kept), and each
    non-null branch of an ``anyOf``/``oneOf``."""
    if depth > _MAX_DEPTH:
        return
    reference = schema.get("$ref")
    if isinstance(reference, str):
        target = _resolve(reference, document)
        if target is None:
            return
        merged = {**target, **{key: value for key, value in schema.items() if key != "$ref"}}
        yield from _alternatives(merged, document, depth + 1)
        return
    yield schema
    for keyword in ("anyOf", "oneOf"):
        branches = schema.get(keyword)
        if isinstance(branches, list):
            for branch in branches:
                if isinstance(branch, Mapping) and branch.get("type") != "null":
                    # A branch inherits the keywords written beside anyOf (pydantic puts them there).
                    inherited = {key: value for key, value in schema.items() if key not in ("anyOf", "oneOf")}
                    yield from _alternatives({**inherited, **branch}, document, depth + 1)


def _properties(schema: Mapping[str, Any], document: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {str(name): child for name, child in properties.items() if isinstance(child, Mapping)}


def _resolve(reference: str, document: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A local JSON pointer such as ``#/$defs/Detection``; ``None`` for anything else."""
    if not reference.startswith("#/"):
        return None
    node: Any = document
    for part in reference[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Mapping) else None


def _enum(kind: Any, value: object) -> Any:
    """``kind(value)`` for a valid string value, else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        return kind(value)
    except ValueError:
        return None
