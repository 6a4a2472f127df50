"""The multi-agent team (multi-agent coordination): a planner delegates subtasks to concurrent workers.

The planner delegates each node of the scenario's workflow to the worker that
handles its tool and records the delegation. Workers act concurrently (all
ready nodes of all workers run in the same step) against shared servers, and
read each other's results, handles included, from a shared blackboard: the
run's results. Every call names the worker that made it, in the record and in
the request's ``_meta``, so validators can tell which agent touched which handle.
"""

from __future__ import annotations

from agents._planning import PlanLog
from agents._specs import MultiAgentSpec
from agents.scripted import ScriptedAgent
from testbed.agent import RunView, Step
from testbed.workflow import build_graph, ready_nodes

PLANNER = "planner"


class MultiAgent:
    """A planner and its workers; each worker runs the nodes delegated to it as they become ready."""

    kind = "multi"

    def __init__(self, spec: MultiAgentSpec) -> None:
        self.spec = spec
        self.graph = build_graph(spec.workflow)
        owner = {tool: worker.name for worker in spec.workers for tool in worker.tools}
        self.delegation = {node.id: owner[node.call] for node in spec.workflow.nodes}
        self.workers = {worker.name: ScriptedAgent(spec.workflow, name=worker.name) for worker in spec.workers}

    def start(self, view: RunView) -> None:
        planner = PlanLog(PLANNER, self.kind)
        planner.record(view, valid=True, plan={"delegation": dict(self.delegation)})

    async def step(self, view: RunView) -> Step:
        ready = ready_nodes(self.graph, set(view.results) | set(view.skipped))
        steps = [
            worker.step_nodes(view, [node for node in ready if self.delegation[node] == name])
            for name, worker in self.workers.items()
        ]
        return Step(
            calls=tuple(call for step in steps for call in step.calls),
            skipped=tuple(skip for step in steps for skip in step.skipped),
            empty=tuple(node for step in steps for node in step.empty),
        )
