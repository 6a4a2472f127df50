"""The tool catalog as a planning agent sees it: granted tools by ``alias.tool``, with schema helpers."""

from __future__ import annotations

from typing import Any

import mcp.types as types
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from testbed.agent import RunView
from testbed.protocol import declared_box_convention, extension_keywords

_MAX_DEPTH = 8
_UNSHOWN = ("modality", "provenance")
"""Keywords a planner gains nothing from: the role says the same, and provenance is bookkeeping."""


def granted_tools(view: RunView, grants: tuple[str, ...] | None) -> dict[str, types.Tool]:
    """Listed tools by ``alias.tool`` in catalog order, limited to ``grants`` when the scenario gives them."""
    tools = {f"{alias}.{tool.name}": tool for alias, listed in view.catalog.items() for tool in listed}
    if grants is None:
        return tools
    return {name: tool for name, tool in tools.items() if name in grants}


def input_properties(tool: types.Tool) -> dict[str, dict[str, Any]]:
    """The tool's input properties by name (``$ref``s into ``$defs`` resolved one level)."""
    schema = tool.input_schema or {}
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {name: resolve_ref(prop, schema) for name, prop in properties.items() if isinstance(prop, dict)}


def required_inputs(tool: types.Tool) -> list[str]:
    """The required input names, else every input (a tool that takes "one of" several requires none)."""
    required = (tool.input_schema or {}).get("required")
    if isinstance(required, list) and required:
        return [name for name in required if isinstance(name, str)]
    return list(input_properties(tool))


def resolve_ref(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``node`` itself, or the ``$defs`` entry its local ``$ref`` names."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = (root.get("$defs") or {}).get(ref.removeprefix("#/$defs/"))
        if isinstance(target, dict):
            return target
    return node


def output_property(tool: types.Tool, path: list[str]) -> dict[str, Any] | None:
    """The output-schema property at ``path`` (field names; ``[*]`` steps into list items), if declared."""
    root = tool.output_schema
    node: Any = root
    for part in path:
        if not isinstance(node, dict) or root is None:
            return None
        node = resolve_ref(node, root)
        if part == "[*]":
            node = node.get("items")
        else:
            properties = node.get("properties")
            node = properties.get(part) if isinstance(properties, dict) else None
    return resolve_ref(node, root) if isinstance(node, dict) and root is not None else None


def argument_problems(tool: types.Tool, arguments: dict[str, Any]) -> list[str]:
    """Where ``arguments`` break the tool's input schema (empty when they match)."""
    try:
        validator = Draft202012Validator(tool.input_schema or {})
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    except SchemaError as broken:
        return [f"{tool.name}: unusable input schema ({broken.message})"]
    problems = []
    for found in errors[:3]:
        where = ".".join(str(p) for p in found.absolute_path) or "arguments"
        message = found.message if len(found.message) <= 120 else found.message[:117] + "..."
        problems.append(f"{tool.name}: {where}: {message}")
    return problems


def declared_conventions(tool: types.Tool) -> dict[str, dict[str, Any]]:
    """The extension keywords ``tool`` declares, by where: ``arguments.NAME`` and ``returns.PATH`` (``[*]`` for items).

    Empty when the server declares none: a planner that reads this sees exactly what it saw before.
    """
    found: dict[str, dict[str, Any]] = {}
    for name, prop in input_properties(tool).items():
        if keywords := extension_keywords(prop):
            found[f"arguments.{name}"] = keywords
    if tool.output_schema:
        _walk_output(tool.output_schema, tool.output_schema, "returns", found, depth=0)
    return found


def _walk_output(node: dict[str, Any], root: dict[str, Any], where: str, found: dict[str, Any], *, depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    node = resolve_ref(node, root)
    if depth and (keywords := extension_keywords(node)):
        found[where] = keywords
    properties = node.get("properties")
    if isinstance(properties, dict):
        for name, child in properties.items():
            if isinstance(child, dict):
                _walk_output(child, root, f"{where}.{name}", found, depth=depth + 1)
    items = node.get("items")
    if isinstance(items, dict):
        _walk_output(items, root, f"{where}[*]", found, depth=depth + 1)


CONVENTION_KEYWORDS = ("coordinate_system", "shape_order", "encoding", "resolution", "ttl_seconds", "pixel_spacing")
"""The keywords that say how a value is written (not what it is): what a planner must match between tools."""


def declared_only(declared: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``declared`` limited to ``keys``, dropping the places that declare none of them."""
    limited = {where: {k: v for k, v in keywords.items() if k in keys} for where, keywords in declared.items()}
    return {where: keywords for where, keywords in limited.items() if keywords}


def describe_declared(keywords: dict[str, Any]) -> str:
    """Declared keywords as short text: ``semantic_role=bounding_box, coordinate_system=xyxy/pixel/xy/top_left``."""
    parts = []
    for key, value in keywords.items():
        if key in _UNSHOWN:
            continue
        convention = declared_box_convention(keywords) if key == "coordinate_system" else None
        shown = str(convention) if convention is not None else value
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


def declared_box_conventions(tools: dict[str, types.Tool], *, side: str) -> dict[str, str]:
    """Box conventions the tools declare on one ``side`` (``arguments`` or ``returns``), by ``alias.tool:where``."""
    conventions: dict[str, str] = {}
    for name, tool in tools.items():
        for where, keywords in declared_conventions(tool).items():
            convention = declared_box_convention(keywords)
            if convention is not None and where.startswith(f"{side}."):
                conventions[f"{name}:{where.removeprefix(side + '.')}"] = str(convention)
    return conventions
