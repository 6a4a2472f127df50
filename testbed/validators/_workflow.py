"""The workflow a run followed: the scenario's, or the one its agent planned at run time (from its plan events)."""

from __future__ import annotations

from typing import Any

from testbed.events import CallOutcomeKind, PlanEvent
from testbed.validators._model import RunRecord
from testbed.workflow import Workflow, WorkflowError


def run_workflow(record: RunRecord) -> Workflow | None:
    """The scenario's workflow; for agents that plan for themselves, the planned nodes that made calls.

    ``None`` when there is neither (or the planned nodes do not form a workflow).
    """
    agent = record.header.scenario.get("agent")
    raw = agent.get("workflow") if isinstance(agent, dict) else None
    if raw is None:
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
        raw = {"nodes": planned}
    try:
        return Workflow.model_validate(raw)
    except (WorkflowError, ValueError):
        return None
