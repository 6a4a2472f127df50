"""The scripted agent: executes a scenario's workflow DAG exactly as written (the ground-truth agent).

Conversions happen only where the workflow declares an adapter (tracked
bridging); elsewhere values pass on unchanged, as in real pipelines, whether
or not the conventions on the two sides agree.
"""

from __future__ import annotations

from agents._planning import failed_producers, plan_node
from testbed.agent import PlannedCall, RunView, Step
from testbed.workflow import Workflow, build_graph, graph_node, ready_nodes


class ScriptedAgent:
    """Walks the DAG: at each step, every node whose producers have finished."""

    kind = "scripted"

    def __init__(self, workflow: Workflow, *, name: str = "") -> None:
        self.workflow = workflow
        self.graph = build_graph(workflow)
        self.name = name

    def start(self, view: RunView) -> None:
        """Nothing to plan: the DAG is the plan."""

    async def step(self, view: RunView) -> Step:
        return self.step_nodes(view, ready_nodes(self.graph, set(view.results) | set(view.skipped)))

    def step_nodes(self, view: RunView, node_ids: list[str]) -> Step:
        """The step that runs ``node_ids`` (ready nodes of this agent's DAG), as this agent."""
        calls: list[PlannedCall] = []
        skipped: list[tuple[str, str]] = []
        empty: list[str] = []
        for node_id in node_ids:
            failed = failed_producers(list(self.graph.predecessors(node_id)), view)
            if failed:
                skipped.append((node_id, f"input from failed node(s): {', '.join(failed)}"))
                continue
            plan = plan_node(graph_node(self.graph, node_id), view, agent=self.name)
            if plan.skipped is not None:
                skipped.append((node_id, plan.skipped))
            elif plan.empty:
                empty.append(node_id)
            calls.extend(plan.calls)
        return Step(calls=tuple(calls), skipped=tuple(skipped), empty=tuple(empty))
