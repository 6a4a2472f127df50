"""Checks that resolve a validated scenario's names against the registry, before any run.

Server names against the registered servers; ``alias.tool`` names (calls,
grants, the task, multi-agent workers, fault targets) against each server's
declared tools; arguments against the tool's ``inputSchema``; fault roles
against the tool's truth manifest; and each reference against the declared
``outputSchema`` of the node it reads (a ``for_each`` must iterate a list, a
field must exist), and each adapter against the argument it converts (a box
adapter on a box argument, a mask adapter on a mask argument).

A server the registry does not know (an external ``command`` or ``url``) is
checked only as far as its truth file, if it has one, tells; where a schema says
nothing (a loose ``{"type": "object"}``, no ``outputSchema``), nothing is refused.
Every problem is a :class:`FieldError` whose ``loc`` is the offending field.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import mcp.types as types

from testbed.faults import FaultTarget
from testbed.protocol import SemanticRole, ServerTruth, ToolTruth
from testbed.registry import ServerPlugin, registry
from testbed.scenario._model import FieldError, Scenario, ServerRef
from testbed.workflow import (
    ITEM_ROOT,
    SCENE_ROOT,
    BoxAdapter,
    ContentSegment,
    EachSegment,
    FieldSegment,
    IndexSegment,
    Location,
    MaskAdapter,
    Reference,
    Segment,
    Workflow,
    WorkflowNode,
)

__all__ = ["SCENE_SCHEMA", "check_against_registry", "check_bindings"]

SCENE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "image": {"type": "string"},
        "image_path": {"type": "string"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
    },
    "additionalProperties": False,
}
"""What ``$scene`` holds, as JSON Schema."""

_BOX_KEYWORDS: Final[tuple[str, ...]] = ("coordinate_system",)
_MASK_KEYWORDS: Final[tuple[str, ...]] = ("encoding", "resolution")


@dataclass(frozen=True)
class _Server:
    """What the scenario can know about one server alias before it runs."""

    alias: str
    label: str
    """How messages name it: ``'det' (detect-xyxy)``."""
    plugin: ServerPlugin | None
    truth: ServerTruth | None

    def tool_names(self) -> tuple[str, ...] | None:
        """Its tools' names, or ``None`` when unknown before it runs."""
        if self.plugin is not None:
            return tuple(tool.name for tool in self.plugin.tools)
        if self.truth is not None:
            return tuple(tool.name for tool in self.truth.tools)
        return None

    def declared(self, tool: str) -> types.Tool | None:
        return self.plugin.tool(tool) if self.plugin is not None else None

    def truth_of(self, tool: str) -> ToolTruth | None:
        if self.truth is None:
            return None
        return next((entry for entry in self.truth.tools if entry.name == tool), None)


def check_against_registry(scenario: Scenario) -> None:
    """Check server names, tool names, arguments and fault targets against the registry.

    Raises:
        FieldError: the first unknown name, with the field it is written in.
    """
    servers = _servers(scenario)
    for index, grant in enumerate(scenario.agent.grants or ()):
        _check_tool(servers, grant, ("agent", "grants", index))
    if scenario.task.tool is not None:
        _check_tool(servers, scenario.task.tool, ("task", "tool"))
    for index, worker in enumerate(getattr(scenario.agent, "workers", None) or ()):
        for position, call in enumerate(getattr(worker, "tools", ())):
            _check_tool(servers, call, ("agent", "workers", index, "tools", position))
    workflow = scenario.workflow
    for index, node in enumerate(workflow.nodes if workflow is not None else ()):
        loc: Location = ("agent", "workflow", "nodes", index)
        _check_tool(servers, node.call, (*loc, "call"))
        _check_arguments(servers[node.server], node, loc)
    for index, fault in enumerate(scenario.faults):
        _check_fault_target(servers[fault.target.server], fault.target, ("faults", index, "target"))


def check_bindings(scenario: Scenario) -> None:
    """Check that each reference of the fixed workflow fits what its producer declares it returns.

    Raises:
        FieldError: a ``for_each`` over something declared not to be a list, a path into a field the
            producer's ``outputSchema`` does not have, or an adapter on an argument of the wrong kind.
    """
    workflow = scenario.workflow
    if workflow is None:
        return
    servers = _servers(scenario)
    for index, node in enumerate(workflow.nodes):
        loc: Location = ("agent", "workflow", "nodes", index)
        for binding in node.bindings():
            reference = node.item_source(binding.reference)
            schemas = _source_schemas(workflow, servers, reference)
            if schemas is None:
                continue
            is_list = binding.loc == ("for_each",)
            where = f"node {node.id!r}, {'for_each' if is_list else f'argument {binding.argument!r}'}"
            producer = _producer(servers, workflow, reference)
            found = _follow(schemas, reference.path, f"{where}: {binding.reference}", producer, (*loc, *binding.loc))
            if found is not None and is_list and not _may_be(found, "array"):
                raise FieldError(
                    f"{where}: {binding.reference} is {_describe(found)} by {producer}, not a list; "
                    "for_each needs a list",
                    loc=(*loc, *binding.loc),
                )
        _check_adapters(servers[node.server], node, loc)


# --- servers and tools -------------------------------------------------------------------------------


def _servers(scenario: Scenario) -> dict[str, _Server]:
    """Resolve every alias; an unknown registry name is refused (listing the known ones)."""
    known = registry().servers
    found: dict[str, _Server] = {}
    for alias, ref in scenario.servers.items():
        name = ref.server
        truth = _truth_file(ref)
        if name is None:
            label = f"{alias!r} ({_external(ref)})"
            found[alias] = _Server(alias, label, None, truth)
            continue
        plugin = known.get(name)
        if plugin is None:
            raise FieldError(
                f"unknown server {name!r}{_suggest(name, known)}; known servers: {', '.join(sorted(known)) or 'none'}",
                loc=("servers", alias, "server"),
            )
        # A profiled server's tools are its profile's, not those the registry listed for its defaults.
        declared = None if ref.profile is not None else plugin
        found[alias] = _Server(alias, f"{alias!r} ({name})", declared, truth or plugin.truth)
    return found


def _truth_file(ref: ServerRef) -> ServerTruth | None:
    """An external server's truth manifest, where the scenario gives one."""
    truth = getattr(ref, "truth", None)
    return truth if isinstance(truth, ServerTruth) else None


def _external(ref: ServerRef) -> str:
    url = getattr(ref, "url", None)
    if url is not None:
        return f"url {url}"
    command = getattr(ref, "command", None)
    if isinstance(command, Sequence) and not isinstance(command, str):
        command = " ".join(str(part) for part in command)
    return f"command {command}" if command is not None else "external"


def _check_tool(servers: Mapping[str, _Server], call: str, loc: Location) -> None:
    alias, _, tool = call.partition(".")
    server = servers.get(alias)
    if server is None:
        return  # the model has refused unknown aliases already
    names = server.tool_names()
    if names is not None and tool not in names:
        listed = ", ".join(names) or "none"
        raise FieldError(
            f"server {server.label} has no tool {tool!r}{_suggest(tool, names)}; its tools: {listed}", loc=loc
        )


def _check_arguments(server: _Server, node: WorkflowNode, loc: Location) -> None:
    declared = server.declared(node.tool)
    if declared is None:
        return
    schema = declared.input_schema
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        open_ended = schema.get("additionalProperties", False) not in (False, None)
        if not open_ended:
            for name in node.args:
                if name not in properties:
                    known = ", ".join(properties) or "none"
                    raise FieldError(
                        f"node {node.id!r}: {node.call} takes no argument {name!r}{_suggest(name, properties)}"
                        f" (arguments: {known})",
                        loc=(*loc, "args", name),
                    )
    required = schema.get("required")
    if isinstance(required, list):
        missing = [str(name) for name in required if name not in node.args]
        if missing:
            raise FieldError(
                f"node {node.id!r}: {node.call} needs argument{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(repr, missing))}, which the node does not pass",
                loc=(*loc, "args"),
            )


def _check_fault_target(server: _Server, target: FaultTarget, loc: Location) -> None:
    tool = target.tool
    if tool is not None:
        _check_tool({server.alias: server}, f"{server.alias}.{tool}", (*loc, "tool"))
    role = target.role
    if role is None or server.truth is None:
        return
    tools = [entry for entry in server.truth.tools if tool is None or entry.name == tool]
    if not tools or any(role in entry.paths for entry in tools):
        return
    roles = ", ".join(sorted({str(each) for entry in tools for each in entry.paths})) or "none"
    subject = (
        f"tool {tool!r} of {server.label} returns no" if tool is not None else f"no tool of {server.label} returns a"
    )
    raise FieldError(
        f"{subject} {role.value!r} in its payload (roles its truth manifest places: {roles})", loc=(*loc, "role")
    )


# --- adapters ----------------------------------------------------------------------------------------


def _check_adapters(server: _Server, node: WorkflowNode, loc: Location) -> None:
    for argument, adapter in node.adapters.items():
        if isinstance(adapter, BoxAdapter):
            kind, role, keywords = "box", SemanticRole.BOUNDING_BOX, _BOX_KEYWORDS
        elif isinstance(adapter, MaskAdapter):
            kind, role, keywords = "mask", SemanticRole.MASK, _MASK_KEYWORDS
        else:
            continue
        fitting = _arguments_of_kind(server, node.tool, role, kind, keywords)
        if fitting is not None and argument not in fitting:
            listed = ", ".join(sorted(fitting)) or "none"
            raise FieldError(
                f"node {node.id!r}: a {kind} adapter on argument {argument!r}, which {node.call} does not read as a "
                f"{kind} ({kind} arguments: {listed})",
                loc=(*loc, "adapters", argument),
            )


def _arguments_of_kind(
    server: _Server, tool: str, role: SemanticRole, kind: str, keywords: Sequence[str]
) -> set[str] | None:
    """The tool's arguments that carry ``role``, or ``None`` when nothing says which do."""
    fitting: set[str] = set()
    known = False
    truth = server.truth_of(tool)
    if truth is not None:
        known = True
        if role in truth.inputs:
            fitting.add(truth.inputs[role])
    declared = server.declared(tool)
    properties = declared.input_schema.get("properties") if declared is not None else None
    if isinstance(properties, Mapping):
        for name, schema in properties.items():
            if not isinstance(schema, Mapping):
                continue
            if "semantic_role" in schema or "modality" in schema:
                known = True
            if (
                schema.get("semantic_role") == role.value
                or schema.get("modality") == kind
                or any(keyword in schema for keyword in keywords)
            ):
                fitting.add(str(name))
    return fitting if known else None


# --- references against output schemas ---------------------------------------------------------------


def _producer(servers: Mapping[str, _Server], workflow: Workflow, reference: Reference) -> str:
    if reference.root == SCENE_ROOT:
        return "the scene"
    node = workflow.node(reference.root)
    return f"{node.call}'s outputSchema ({servers[node.server].label}, node {node.id!r})"


def _source_schemas(workflow: Workflow, servers: Mapping[str, _Server], reference: Reference) -> list[_Schema] | None:
    """The schema of the value a reference's root names, or ``None`` where nothing is declared."""
    if reference.root == SCENE_ROOT:
        return [_Schema(SCENE_SCHEMA, SCENE_SCHEMA)]
    if reference.root == ITEM_ROOT or reference.uses_content:
        return None
    node = workflow.node(reference.root)
    declared = servers[node.server].declared(node.tool)
    output = declared.output_schema if declared is not None else None
    if not isinstance(output, Mapping):
        return None
    if node.for_each is not None:  # a for_each node's payload is the list of its per-item payloads
        return [_Schema({"type": "array", "items": dict(output)}, output)]
    return [_Schema(output, output)]


@dataclass(frozen=True)
class _Schema:
    """One JSON Schema, with the document its local ``$ref`` s resolve in."""

    schema: Mapping[str, Any]
    document: Mapping[str, Any]


def _follow(
    schemas: list[_Schema], path: Sequence[Segment], what: str, producer: str, loc: Location
) -> list[_Schema] | None:
    """Walk ``path`` through the possible schemas; ``None`` once the schemas stop saying.

    Raises:
        FieldError: at ``loc``, for a segment no possible schema admits.
    """
    current = schemas
    for segment in path:
        expanded = _alternatives(current)
        if expanded is None:
            return None
        following: list[_Schema] = []
        refusals: list[str] = []
        for option in expanded:
            step = _step(option, segment)
            if step is None:
                return None
            if isinstance(step, str):
                refusals.append(step)
            else:
                following.append(step)
        if not following:
            raise FieldError(f"{what}: at '{segment}': {refusals[0]} (per {producer})", loc=loc)
        current = following
    return _alternatives(current)


def _alternatives(schemas: Iterable[_Schema]) -> list[_Schema] | None:
    """Resolve ``$ref`` and flatten ``anyOf``/``oneOf`` (leaving out ``null``); ``None`` if any is unknown."""
    flat: list[_Schema] = []
    pending = list(schemas)
    seen = 0
    while pending:
        seen += 1
        if seen > 256:
            return None  # a schema that refers to itself in circles says nothing usable here
        option = pending.pop(0)
        schema = option.schema
        reference = schema.get("$ref")
        if isinstance(reference, str):
            target = _resolve_ref(option.document, reference)
            if target is None:
                return None
            pending.append(_Schema(target, option.document))
            continue
        branches = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(branches, list):
            useful = [b for b in branches if isinstance(b, Mapping) and b.get("type") != "null"]
            pending.extend(_Schema(branch, option.document) for branch in useful)
            continue
        if not _types(schema):
            return None
        flat.append(option)
    return flat


def _resolve_ref(document: Mapping[str, Any], reference: str) -> Mapping[str, Any] | None:
    if not reference.startswith("#/"):
        return None
    node: Any = document
    for part in reference[2:].split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, Mapping) else None


def _types(schema: Mapping[str, Any]) -> tuple[str, ...]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return (declared,)
    if isinstance(declared, list):
        return tuple(str(kind) for kind in declared)
    return ()


def _step(option: _Schema, segment: Segment) -> _Schema | str | None:
    """The schema one segment further, a reason it cannot go there, or ``None`` when it says nothing."""
    schema = option.schema
    kinds = _types(schema)
    if isinstance(segment, FieldSegment):
        if "object" not in kinds:
            return f"expected a mapping with field {segment.name!r}, but it is {_describe_types(kinds)}"
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return None
        if segment.name in properties and isinstance(properties[segment.name], Mapping):
            return _Schema(properties[segment.name], option.document)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            return _Schema(extra, option.document)
        if extra is True or not properties:
            return None
        return (
            f"no field {segment.name!r}{_suggest(segment.name, properties)} (fields: {', '.join(map(str, properties))})"
        )
    if isinstance(segment, IndexSegment | EachSegment):
        if "array" not in kinds:
            return f"expected a list, but it is {_describe_types(kinds)}"
        items = schema.get("items")
        return _Schema(items, option.document) if isinstance(items, Mapping) else None
    if isinstance(segment, ContentSegment):
        return None
    return None


def _may_be(schemas: Sequence[_Schema], kind: str) -> bool:
    return any(kind in _types(option.schema) for option in schemas)


def _describe(schemas: Sequence[_Schema]) -> str:
    kinds = sorted({kind for option in schemas for kind in _types(option.schema)})
    return f"declared {_describe_types(tuple(kinds))}"


def _describe_types(kinds: Collection[str]) -> str:
    names = {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "a boolean",
        "null": "null",
    }
    return " or ".join(names.get(kind, kind) for kind in kinds) or "untyped"


def _suggest(name: str, candidates: Iterable[Any]) -> str:
    close = difflib.get_close_matches(name, [str(candidate) for candidate in candidates], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
