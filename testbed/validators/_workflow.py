"""The workflow a run followed: the scenario's, or the one its agent planned at run time (from its plan events)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from testbed.events import CallEvent, CallOutcomeKind, PlanEvent, internalize
from testbed.validators._model import RunRecord
from testbed.workflow import Edge, Workflow, WorkflowError, build_graph, graph_edges, read_path


def run_workflow(record: RunRecord) -> Workflow | None:
    """The scenario's workflow; for agents that plan for themselves, the planned nodes that made calls.

    ``None`` when there is neither (or the planned nodes do not form a workflow).
    """
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
        return graph_edges(build_graph(workflow))
    except (WorkflowError, ValueError):
        return []


def node_calls(record: RunRecord) -> dict[tuple[str, int], tuple[int, CallEvent]]:
    """Each call by ``(node, item)`` (the last one when a node was retried)."""
    return {(call.node, call.item): (i, call) for i, call in record.calls()}


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
        value = read_path(internalize(self.producer.payload, record.blobs), self.edge.source_path)
        return value[item] if self.edge.reference.startswith("$item") else value


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
