"""Agents that drive vision workflows over MCP servers.

Every agent answers step by step (:class:`Agent`); :func:`build_agent` makes
the one a scenario asks for. Note: the OpenAI Agents SDK is also imported as
``agents``; install the testbed in its own virtual environment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agents._interface import Agent, CallRecord, NodeResult, PlannedCall, RunView, SceneView, Step
from agents.scripted import ScriptedAgent
from testbed._errors import TestbedError

if TYPE_CHECKING:
    from testbed.scenario import Scenario

AgentFactory = Callable[["Scenario"], Agent]

AGENTS: dict[str, AgentFactory] = {
    "scripted": lambda scenario: ScriptedAgent(scenario.agent.workflow),
}
"""Agent kinds by the scenario's ``agent.kind``."""


def build_agent(scenario: Scenario) -> Agent:
    """Make the agent a scenario asks for.

    Raises:
        TestbedError: the kind is unknown.
    """
    factory = AGENTS.get(scenario.agent.kind)
    if factory is None:
        raise TestbedError(f"agent.kind: unknown agent {scenario.agent.kind!r}; known: {', '.join(AGENTS)}")
    return factory(scenario)


__all__ = [
    "AGENTS",
    "Agent",
    "CallRecord",
    "NodeResult",
    "PlannedCall",
    "RunView",
    "SceneView",
    "ScriptedAgent",
    "Step",
    "build_agent",
]
