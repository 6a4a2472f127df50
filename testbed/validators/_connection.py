"""Connection-typing validators: workflow edges with no schema on either end, and values the consumer's type rejects.

The workflow is the run's (the scenario's, or the nodes a planning agent chose,
see :func:`testbed.validators._workflow.run_workflow`); its typed edges come
from :func:`testbed.workflow.build_graph`. Schemas are the tools' listings
recorded in the header. ``conn.untracked_bridging`` lives in ``_bridging.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from jsonschema.exceptions import SchemaError

from testbed.events import CallOutcomeKind
from testbed.validators._model import RunRecord, ValidatorSpec, Violation
from testbed.validators._schema import compiled, listed_tool, proven_valid
from testbed.validators._workflow import edges_of, run_workflow
from testbed.workflow import FOR_EACH_ARG, Edge, Workflow

__all__ = ["VALIDATORS", "check_type_incompatible", "check_untyped_edge", "top_argument", "workflow_of"]

_TOP_ARGUMENT = re.compile(r"^[^.\[]+")


def workflow_of(record: RunRecord) -> Workflow | None:
    """The run's workflow: the scenario's, or the one its agent planned (see :func:`run_workflow`)."""
    return run_workflow(record)


def top_argument(target_arg: str) -> str:
    """The top-level argument name of an edge's target (``options.boxes[0]`` -> ``options``)."""
    match = _TOP_ARGUMENT.match(target_arg)
    return match.group(0) if match else target_arg


def _input_property(record: RunRecord, call: str, argument: str) -> dict[str, Any] | None:
    alias, _, tool = call.partition(".")
    listed = listed_tool(record, alias, tool)
    schema = listed.get("inputSchema") if listed is not None else None
    properties = schema.get("properties") if isinstance(schema, dict) else None
    found = properties.get(argument) if isinstance(properties, dict) else None
    return found if isinstance(found, dict) else None


def _node_calls(record: RunRecord, node: str) -> tuple[int, ...]:
    return tuple(position for position, call in record.call_events() if call.node == node)


def check_untyped_edge(record: RunRecord) -> Iterator[Violation]:
    """``conn.untyped_edge``: an edge with no schema at one end.

    The producer lists no outputSchema (or the value comes from content blocks),
    or the consumer's inputSchema has no property for the argument.

    One violation per edge and run, attributed to the consuming node; the evidence is its calls.
    """
    workflow = workflow_of(record)
    if workflow is None:
        return
    if workflow is not record.scenario.workflow:  # a workflow the run's agent planned: its own
        yield from _untyped_edges(record, workflow)
        return
    try:  # the scenario's workflow and the experiment's listings: found once for every run
        found = record.per_experiment(
            "conn.untyped_edges", lambda: tuple((v.node or "", v) for v in _untyped_edges(record, workflow))
        )
    except Exception:  # found again as the run finds it, up to where it raises
        yield from _untyped_edges(record, workflow)
        return
    for node, violation in found:  # each edge's consumer node (never None), and what was found of it
        yield replace(violation, run=record.started.run, evidence=_node_calls(record, node))


def _untyped_edges(record: RunRecord, workflow: Workflow) -> Iterator[Violation]:
    for edge in edges_of(workflow):
        producer = workflow.node(edge.source_node)
        consumer = workflow.node(edge.target_node)
        missing: list[str] = []
        listed = listed_tool(record, producer.server, producer.tool)
        if listed is None or not isinstance(listed.get("outputSchema"), dict):
            missing.append(f"producer {producer.call} lists no outputSchema")
        elif edge.source_path.startswith("@content"):
            missing.append(f"the value comes from {producer.call}'s content blocks, which no schema describes")
        argument = top_argument(edge.target_arg)
        if edge.target_arg != FOR_EACH_ARG and _input_property(record, consumer.call, argument) is None:
            missing.append(f"consumer {consumer.call} inputSchema has no property {argument!r}")
        if missing:
            yield Violation(
                id="conn.untyped_edge",
                run=record.started.run,
                server=consumer.server,
                node=consumer.id,
                item=None,
                detail=f"{_describe(edge)}: {'; '.join(missing)}",
                evidence=_node_calls(record, consumer.id),
            )


def check_type_incompatible(record: RunRecord) -> Iterator[Violation]:
    """``conn.type_incompatible``: a value sent along an edge has a JSON type the consumer's schema rejects.

    The value is the call's recorded argument (after declared adapters), checked
    against the property's ``type`` keywords at any depth. One violation per call and edge.
    """
    workflow = workflow_of(record)
    if workflow is None:
        return
    if workflow is record.scenario.workflow:  # the scenario's: its edges into each node found once
        edges_into = record.per_experiment("conn.edges_into", lambda: _edges_into(workflow))
    else:
        edges_into = _edges_into(workflow)
    properties: dict[tuple[str, str, str], dict[str, Any] | None] = {}
    for position, call in record.call_events():
        if call.outcome is CallOutcomeKind.SKIPPED or not call.tool:
            continue
        for edge, argument in edges_into.get(call.node, ()):
            key = (call.server, call.tool, argument)
            if key in properties:
                schema = properties[key]
            else:
                schema = properties[key] = _input_property(record, f"{call.server}.{call.tool}", argument)
            if schema is None or argument not in call.arguments:
                continue
            rejected = _type_errors(record.internalize(call.arguments[argument]), schema)
            if rejected:
                yield Violation.at_call(
                    "conn.type_incompatible",
                    record.started.run,
                    position,
                    call,
                    f"{_describe(edge)}: {'; '.join(rejected[:3])}",
                )


def _edges_into(workflow: Workflow) -> dict[str, tuple[tuple[Edge, str], ...]]:
    """Per node, the edges into it that bind an argument (not ``for_each``), in order, each with that argument's
    top-level name."""
    into: dict[str, list[tuple[Edge, str]]] = {}
    for edge in edges_of(workflow):
        if edge.target_arg != FOR_EACH_ARG:
            into.setdefault(edge.target_node, []).append((edge, top_argument(edge.target_arg)))
    return {node: tuple(edges) for node, edges in into.items()}


def _type_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    if proven_valid(value, schema):
        return []
    try:
        errors = list(compiled(schema).iter_errors(value))
    except SchemaError:
        return []
    found: list[str] = []
    for error in errors:
        for leaf in [error, *error.context] if error.context else [error]:
            if leaf.validator == "type":
                found.append(
                    f"{leaf.json_path}: {_json_type(leaf.instance)} value, schema wants {leaf.validator_value}"
                )
    return found


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else type(value).__name__


def _describe(edge: Edge) -> str:
    return f"edge {edge.reference} -> {edge.target_node}.{edge.target_arg}"


VALIDATORS: tuple[ValidatorSpec, ...] = (
    ValidatorSpec("conn.untyped_edge", ("conn.untyped_edge",), check_untyped_edge),
    ValidatorSpec("conn.type_incompatible", ("conn.type_incompatible",), check_type_incompatible),
)
