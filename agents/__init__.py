"""Agents that drive vision workflows over MCP servers, one per orchestration mode.

Every agent answers step by step (:class:`Agent`); :func:`build_agent` makes
the one a scenario asks for: scripted (static composition), retrieval
(retrieval-augmented selection), llm (dynamic orchestration) or multi
(multi-agent coordination). Note: the OpenAI Agents SDK is also imported as
``agents``; install the testbed in its own virtual environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents._interface import Agent, CallRecord, NodeResult, PlannedCall, RunView, SceneView, Step
from agents._models import AgentModels, live_models, replay_models
from agents.scripted import ScriptedAgent
from testbed._errors import TestbedError

if TYPE_CHECKING:
    from testbed.scenario import Scenario

AGENT_KINDS = ("scripted", "retrieval", "llm", "multi")
"""The orchestration modes, as ``agent.kind`` names them."""


def build_agent(scenario: Scenario, models: AgentModels | None = None) -> Agent:
    """Make the agent a scenario asks for, holding ``models`` (live ones by default).

    Raises:
        TestbedError: the kind is unknown, or a model the agent needs is missing from ``models``.
    """
    from agents.llm import LLMAgent
    from agents.multi import MultiAgent
    from agents.retrieval import RetrievalAgent
    from testbed.scenario import LLMAgent as LLMAgentSpec
    from testbed.scenario import MultiAgent as MultiAgentSpec
    from testbed.scenario import RetrievalAgent as RetrievalAgentSpec
    from testbed.scenario import ScriptedAgent as ScriptedAgentSpec

    spec = scenario.agent
    if isinstance(spec, ScriptedAgentSpec):
        return ScriptedAgent(spec.workflow)
    if isinstance(spec, MultiAgentSpec):
        return MultiAgent(spec)
    models = models if models is not None else live_models(scenario)
    if isinstance(spec, LLMAgentSpec):
        if models.llm is None:
            raise TestbedError("agent.llm: the llm agent needs a language model client")
        return LLMAgent(spec, models.llm, seed=scenario.seed)
    if isinstance(spec, RetrievalAgentSpec):
        if models.retrieval is None:
            raise TestbedError("agent.steps: the retrieval agent needs an embedding client")
        return RetrievalAgent(spec, models.retrieval)
    raise TestbedError(f"agent.kind: unknown agent {spec.kind!r}; known: {', '.join(AGENT_KINDS)}")


__all__ = [
    "AGENT_KINDS",
    "Agent",
    "AgentModels",
    "CallRecord",
    "NodeResult",
    "PlannedCall",
    "RunView",
    "SceneView",
    "ScriptedAgent",
    "Step",
    "build_agent",
    "live_models",
    "replay_models",
]
