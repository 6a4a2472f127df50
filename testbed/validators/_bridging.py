"""``conn.untracked_bridging``: a value converted on its way between two calls, with no declared adapter.

For each node-to-node edge of the run's workflow (the scenario's, or the one
its agent planned), the value the consumer was sent is compared with the
value the edge's reference resolves to in the producer's recorded result. A
difference on an argument no adapter is declared for means the agent rewrote
the value itself: a bridging script no one can audit. (Faults alter what the
client receives, before the agent binds it, so they cannot cause this.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from testbed.events import CallOutcomeKind
from testbed.validators._model import RunRecord, ValidatorSpec, Violation
from testbed.validators._workflow import run_edges, run_workflow
from testbed.workflow import FOR_EACH_ARG, BindingError

_READ_ERRORS = (BindingError, ValueError, TypeError, KeyError, IndexError)


def check_untracked_bridging(record: RunRecord) -> Iterator[Violation]:
    """``conn.untracked_bridging``: a sent argument that differs from what its reference resolves to."""
    workflow = run_workflow(record)
    if workflow is None:
        return
    nodes = {node.id: node for node in workflow.nodes}
    edges = run_edges(record)
    for at, call in record.call_events():
        node = nodes.get(call.node)
        if node is None or call.outcome is CallOutcomeKind.SKIPPED:
            continue
        for feed in edges.feeds(call):
            edge = feed.edge
            if (
                edge.target_arg == FOR_EACH_ARG
                or edge.target_arg not in call.arguments
                or edge.target_arg in node.adapters
                or any(adapter.startswith(f"{edge.target_arg}: ") for adapter in call.adapters)  # tracked on the call
            ):
                continue
            try:
                expected = feed.source_value(record, call.item)
            except _READ_ERRORS:
                continue
            sent = record.internalize(call.arguments[edge.target_arg])
            if sent != expected:
                yield Violation(
                    id="conn.untracked_bridging",
                    run=record.started.run,
                    server=call.server,
                    node=call.node,
                    item=call.item,
                    detail=(
                        f"argument {edge.target_arg!r} was sent as {_short(sent)}, but {edge.reference} is "
                        f"{_short(expected)} in {edge.source_node!r}'s result, and no adapter declares a conversion"
                    ),
                    evidence=(feed.producer_at, at),
                )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


VALIDATORS = (ValidatorSpec("conn.untracked_bridging", ("conn.untracked_bridging",), check_untracked_bridging),)
