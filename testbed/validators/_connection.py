"""Connection-typing validators: workflow edges with no schema on either end, and values the consumer's type rejects.

The workflow is the run's (the scenario's, or the nodes a planning agent chose,
see :func:`testbed.validators._workflow.run_workflow`); its typed edges come
from :func:`testbed.workflow.build_graph`. Schemas are the tools' listings
recorded in the header. ``conn.untracked_bridging`` lives in ``_bridging.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
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
    return tuple(position for position, call in record.calls() if call.node == node)


def check_untyped_edge(record: RunRecord) -> Iterator[Violation]:
    """``conn.untyped_edge``: an edge with no schema at one end.

    The producer lists no outputSchema (or the value comes from content blocks),
    or the consumer's inputSchema has no property for the argument.

    One violation per edge and run, attributed to the consuming node; the evidence is its calls.
    """
    workflow = workflow_of(record)
    if workflow is None:
        return
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
    edges_into: dict[str, list[Edge]] = {}
    for edge in edges_of(workflow):
        if edge.target_arg != FOR_EACH_ARG:
            edges_into.setdefault(edge.target_node, []).append(edge)
    for position, call in record.calls():
        if call.outcome is CallOutcomeKind.SKIPPED or not call.tool:
            continue
        for edge in edges_into.get(call.node, []):
            argument = top_argument(edge.target_arg)
            schema = _input_property(record, f"{call.server}.{call.tool}", argument)
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
