"""The workflow a run followed: the scenario's, or the one its agent planned at run time (from its plan events)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from testbed.events import CallEvent, CallOutcomeKind, PlanEvent
from testbed.validators._model import RunRecord
from testbed.workflow import (
    Edge,
    PayloadPath,
    Workflow,
    WorkflowError,
    build_graph,
    graph_edges,
    parse_payload_path,
    read_path,
)


def run_workflow(record: RunRecord) -> Workflow | None:
    """The scenario's workflow; for agents that plan for themselves, the planned nodes that made calls.

    ``None`` when there is neither (or the planned nodes do not form a workflow). Once per run.
    """
    return record.memo("workflow.run_workflow", lambda: _run_workflow(record))


def _run_workflow(record: RunRecord) -> Workflow | None:
    workflow = record.scenario.workflow
    if workflow is None:
        called = {call.node for _, call in record.calls() if call.outcome is not CallOutcomeKind.SKIPPED}
        planned: list[dict[str, Any]] = [
            event.plan["node"]
            for event in record.events
            if isinstance(event, PlanEvent)
            and isinstance(event.plan.get("node"), dict)
            and event.plan["node"].get("id") in called
        ]
        if not planned:
            return None
        try:
            return Workflow.model_validate({"nodes": planned})
        except (WorkflowError, ValueError):
            return None
    return workflow


def workflow_edges(record: RunRecord) -> list[Edge]:
    """The node-to-node edges of the run's workflow (empty when it has none)."""
    workflow = run_workflow(record)
    if workflow is None:
        return []
    try:
        return edges_of(workflow)
    except (WorkflowError, ValueError):
        return []


_edges: dict[int, tuple[Workflow, tuple[Edge, ...]]] = {}
"""Each workflow's edges by its identity (every run of an experiment shares the scenario's workflow object)."""


def edges_of(workflow: Workflow) -> list[Edge]:
    """``graph_edges(build_graph(workflow))``, built once per workflow object (raising as they do)."""
    cached = _edges.get(id(workflow))
    if cached is not None and cached[0] is workflow:
        return list(cached[1])
    edges = tuple(graph_edges(build_graph(workflow)))
    if len(_edges) >= 256:
        _edges.clear()
    _edges[id(workflow)] = (workflow, edges)
    return list(edges)


def node_calls(record: RunRecord) -> dict[tuple[str, int], tuple[int, CallEvent]]:
    """Each call by ``(node, item)`` (the last one when a node was retried). Shared: read-only."""
    return record.memo("workflow.node_calls", lambda: {(call.node, call.item): (i, call) for i, call in record.calls()})


@dataclass(frozen=True)
class Feed:
    """One workflow edge into a call, with the producer's call (item 0) that succeeded."""

    edge: Edge
    producer_at: int
    producer: CallEvent

    def source_value(self, record: RunRecord, item: int) -> Any:
        """The value the edge's reference resolves to in the producer's result (``$item`` picks ``item``).

        Raises:
            BindingError, ValueError, TypeError, KeyError, IndexError: the result does not hold it.
        """
        key = ("workflow.source_value", id(self.producer), self.edge.source_path)
        value = record.memo(key, lambda: read_at(record.internalize(self.producer.payload), self.edge.source_path))
        return value[item] if self.edge.reference.startswith("$item") else value


@functools.lru_cache(maxsize=1024)
def _payload_path(text: str) -> PayloadPath:
    return parse_payload_path(text)


def read_at(payload: Any, path: str) -> Any:
    """``read_path(payload, path)``, with the path text parsed once per process (it raises as ``read_path`` does)."""
    return read_path(payload, _payload_path(path))


class RunEdges:
    """The run's workflow edges and calls, to find what fed each call."""

    def __init__(self, record: RunRecord) -> None:
        self.edges = workflow_edges(record)
        self.calls = node_calls(record)

    def feeds(self, call: CallEvent, argument: str | None = None) -> Iterator[Feed]:
        """Edges into ``call`` (into ``argument`` when given) whose producer succeeded."""
        for edge in self.edges:
            if edge.target_node != call.node or (argument is not None and edge.target_arg != argument):
                continue
            produced = self.calls.get((edge.source_node, 0))
            if produced is not None and produced[1].outcome is CallOutcomeKind.OK:
                yield Feed(edge, produced[0], produced[1])
