"""The scripted agent: executes a scenario's workflow DAG exactly as written (the ground-truth agent).

Conversions happen only where the workflow declares an adapter (tracked
bridging); elsewhere values pass on unchanged, as in real pipelines, whether
or not the conventions on the two sides agree.
"""

from __future__ import annotations

from dataclasses import asdict

from agents._interface import PlannedCall, RunView, Step
from testbed.conventions import ImageSize
from testbed.workflow import (
    AdapterError,
    BindingContext,
    BindingError,
    Workflow,
    apply_adapters,
    bind_arguments,
    build_graph,
    graph_node,
    ready_nodes,
    resolve_for_each,
)


class ScriptedAgent:
    """Walks the DAG: at each step, every node whose producers have finished."""

    kind = "scripted"

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.graph = build_graph(workflow)

    def start(self, view: RunView) -> None:
        """Nothing to plan: the DAG is the plan."""

    async def step(self, view: RunView) -> Step:
        finished = set(view.results) | set(view.skipped)
        context = BindingContext(
            scene=asdict(view.scene),
            payloads={node: result.payload for node, result in view.results.items()},
            contents={node: result.content for node, result in view.results.items()},
        )
        size = ImageSize(width=view.scene.width, height=view.scene.height)
        calls: list[PlannedCall] = []
        skipped: list[tuple[str, str]] = []
        empty: list[str] = []
        for node_id in ready_nodes(self.graph, finished):
            node = graph_node(self.graph, node_id)
            failed = sorted(
                producer
                for producer in self.graph.predecessors(node_id)
                if producer in view.skipped or not view.results[producer].succeeded
            )
            if failed:
                skipped.append((node_id, f"input from failed node(s): {', '.join(failed)}"))
                continue
            adapters = tuple(f"{name}: {adapter}" for name, adapter in node.adapters.items())
            try:
                items = resolve_for_each(node, context)
                if items is None:
                    arguments = apply_adapters(node, bind_arguments(node, context), image_size=size)
                    calls.append(self._call(node_id, 0, arguments, adapters, fan_out=False))
                elif not items:
                    empty.append(node_id)
                else:
                    for index, item in enumerate(items):
                        bound = bind_arguments(node, context.with_item(item))
                        arguments = apply_adapters(node, bound, image_size=size)
                        calls.append(self._call(node_id, index, arguments, adapters, fan_out=True))
            except (BindingError, AdapterError) as error:
                skipped.append((node_id, str(error)))
        return Step(calls=tuple(calls), skipped=tuple(skipped), empty=tuple(empty))

    def _call(
        self, node_id: str, item: int, arguments: dict[str, object], adapters: tuple[str, ...], *, fan_out: bool
    ) -> PlannedCall:
        node = graph_node(self.graph, node_id)
        return PlannedCall(
            node=node_id,
            item=item,
            server=node.server,
            tool=node.tool,
            arguments=dict(arguments),
            adapters=adapters,
            deadline_s=node.deadline_s,
            fan_out=fan_out,
        )
