"""The workflow a run followed: the scenario's, or the one its agent planned at run time (from its plan events)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from testbed.events import CallEvent, CallOutcomeKind, PlanEvent
from testbed.validators._model import RunRecord
from testbed.workflow import (
    EachSegment,
    Edge,
    FieldSegment,
    IndexSegment,
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
    found = record._memo.get("workflow.run_workflow", _UNREAD)
    if found is _UNREAD:
        found = record.memo("workflow.run_workflow", lambda: _run_workflow(record))
    return found  # type: ignore[no-any-return]


def _run_workflow(record: RunRecord) -> Workflow | None:
    workflow = record.scenario.workflow
    if workflow is None:
        called = {call.node for _, call in record.call_events() if call.outcome is not CallOutcomeKind.SKIPPED}
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
    return record.memo(
        "workflow.node_calls", lambda: {(call.node, call.item): (i, call) for i, call in record.call_events()}
    )


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
        value = self.whole_value(record)
        return value[item] if self.picks_item else value

    @property
    def picks_item(self) -> bool:
        """Whether the edge's reference is ``$item``'s: :meth:`source_value` picks the consumer's item."""
        return self.edge.reference.startswith("$item")

    def whole_value(self, record: RunRecord) -> Any:
        """The value the edge's source path reads in the producer's result, before any ``$item`` pick; once per
        run, producer and path (shared: read-only).

        Raises:
            BindingError, ValueError, TypeError, KeyError, IndexError: the result does not hold it.
        """
        return payload_value(record, self.producer, self.edge.source_path)


def payload_value(record: RunRecord, call: CallEvent, path: str) -> Any:
    """``read_at(record.internalize(call.payload), path)``, once per run, call and path (shared: read-only).

    Raises:
        BindingError, ValueError, TypeError, KeyError, IndexError: as ``read_at`` raises, every time.
    """
    key = ("workflow.source_value", id(call), path)
    found = record._memo.get(key, _UNREAD)
    if found is _UNREAD:
        found = record.memo(key, lambda: read_at(record.internalize(call.payload), path))
    return found


@functools.lru_cache(maxsize=1024)
def _payload_path(text: str) -> PayloadPath:
    return parse_payload_path(text)


def read_at(payload: Any, path: str) -> Any:
    """``read_path(payload, path)``, with the path text parsed once per process (it raises as ``read_path`` does).

    A path of plain segments is walked here, over plain dicts and lists, without the resolver's context and
    reference objects; wherever that walk would not succeed (a segment that does not fit, a mapping or sequence
    of another type) ``read_path`` reads the path instead and answers or raises as ever.
    """
    steps = _steps(path)
    if steps is not None:
        found = _walk(payload, steps, 0)
        if found is not _UNREAD:
            return found
    return read_path(payload, _payload_path(path))


_UNREAD: Any = object()
"""What :func:`_walk` answers where it leaves the path to ``read_path``."""

_FIELD, _INDEX, _EACH = 0, 1, 2


@functools.lru_cache(maxsize=1024)
def _steps(text: str) -> tuple[tuple[int, Any], ...] | None:
    """The path's segments as ``(kind, name or index)`` pairs; ``None`` where one is of another kind."""
    steps: list[tuple[int, Any]] = []
    for segment in _payload_path(text):  # raises on a malformed path, as read_path does
        if isinstance(segment, FieldSegment):
            steps.append((_FIELD, segment.name))
        elif isinstance(segment, IndexSegment):
            steps.append((_INDEX, segment.index))
        elif isinstance(segment, EachSegment):
            steps.append((_EACH, None))
        else:
            return None
    return tuple(steps)


def _walk(value: Any, steps: tuple[tuple[int, Any], ...], start: int) -> Any:
    """The resolver's walk (``testbed.workflow._reference._walk``) where it succeeds on dicts and lists, the same
    objects it returns; :data:`_UNREAD` anywhere else."""
    for position in range(start, len(steps)):
        kind, key = steps[position]
        if kind == _FIELD:
            if type(value) is not dict or key not in value:
                return _UNREAD
            value = value[key]
        elif kind == _INDEX:
            if type(value) is not list or not -len(value) <= key < len(value):
                return _UNREAD
            value = value[key]
        else:
            if type(value) is not list:
                return _UNREAD
            found = []
            for element in value:
                item = _walk(element, steps, position + 1)
                if item is _UNREAD:
                    return _UNREAD
                found.append(item)
            return found
    return value


class RunEdges:
    """The run's workflow edges and calls, to find what fed each call."""

    def __init__(self, record: RunRecord) -> None:
        self.edges = workflow_edges(record)
        self.calls = node_calls(record)
        self._into: dict[str, list[tuple[Edge, Feed | None]]] | None = None
        self._feeds: dict[tuple[str, str | None], tuple[Feed, ...]] = {}

    def feeds(self, call: CallEvent, argument: str | None = None) -> Iterator[Feed]:
        """Edges into ``call`` (into ``argument`` when given) whose producer succeeded."""
        return iter(self.feeds_into(call.node, argument))

    def feeds_into(self, node: str, argument: str | None = None) -> tuple[Feed, ...]:
        """:meth:`feeds` of a call of ``node``, once per node and argument (read-only)."""
        found = self._feeds.get((node, argument))
        if found is None:
            into = self._into
            if into is None:
                into = self._into = self._by_target()
            found = self._feeds[(node, argument)] = tuple(
                feed
                for edge, feed in into.get(node, ())
                if feed is not None and (argument is None or edge.target_arg == argument)
            )
        return found

    def _by_target(self) -> dict[str, list[tuple[Edge, Feed | None]]]:
        """Each node's edges in, in order, with their feed (``None``: the producer did not succeed)."""
        into: dict[str, list[tuple[Edge, Feed | None]]] = {}
        for edge in self.edges:
            produced = self.calls.get((edge.source_node, 0))
            ok = produced is not None and produced[1].outcome is CallOutcomeKind.OK
            feed = Feed(edge, produced[0], produced[1]) if produced is not None and ok else None
            into.setdefault(edge.target_node, []).append((edge, feed))
        return into


def run_edges(record: RunRecord) -> RunEdges:
    """:class:`RunEdges` of the run, once per run (shared: read-only)."""
    return record.memo("workflow.run_edges", lambda: RunEdges(record))
