"""The tool catalog as a planning agent sees it: granted tools by ``alias.tool``, with schema helpers."""

from __future__ import annotations

from typing import Any

import mcp.types as types
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from testbed.agent import RunView


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
