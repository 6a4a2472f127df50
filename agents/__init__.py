"""Agents that drive vision workflows over MCP servers, one per orchestration mode.

Every agent answers step by step (:class:`testbed.agent.Agent`). Each kind is
registered with the testbed's registry as a plug-in, exactly as an outside
distribution would register its own (entry point ``agents`` in the group
``mcp_vision_testbed``): scripted (static composition), retrieval
(retrieval-augmented selection), llm (dynamic orchestration) and multi
(multi-agent coordination). Note: the OpenAI Agents SDK is also imported as
``agents``; install the testbed in its own virtual environment.
"""

from __future__ import annotations

from typing import Any

from agents._models import AgentModels, live_llm, live_retrieval, replay_llm, replay_retrieval
from agents._specs import LLMAgentSpec, MultiAgentSpec, RetrievalAgentSpec, ScriptedAgentSpec, Worker
from agents.llm import LLMAgent
from agents.multi import MultiAgent
from agents.retrieval import RetrievalAgent
from agents.scripted import ScriptedAgent
from testbed._errors import TestbedError
from testbed.registry import agent


@agent("scripted", spec=ScriptedAgentSpec)
def build_scripted(spec: ScriptedAgentSpec, models: Any, *, seed: int) -> ScriptedAgent:
    return ScriptedAgent(spec.workflow)


@agent("multi", spec=MultiAgentSpec)
def build_multi(spec: MultiAgentSpec, models: Any, *, seed: int) -> MultiAgent:
    return MultiAgent(spec)


@agent("llm", spec=LLMAgentSpec, live_models=live_llm, replay_models=replay_llm)
def build_llm(spec: LLMAgentSpec, models: AgentModels, *, seed: int) -> LLMAgent:
    if getattr(models, "llm", None) is None:
        raise TestbedError("agent.llm: the llm agent needs a language model client")
    assert models.llm is not None
    return LLMAgent(spec, models.llm, seed=seed)


@agent("retrieval", spec=RetrievalAgentSpec, live_models=live_retrieval, replay_models=replay_retrieval)
def build_retrieval(spec: RetrievalAgentSpec, models: AgentModels, *, seed: int) -> RetrievalAgent:
    if getattr(models, "retrieval", None) is None:
        raise TestbedError("agent.steps: the retrieval agent needs an embedding client")
    assert models.retrieval is not None
    return RetrievalAgent(spec, models.retrieval)


__all__ = [
    "AgentModels",
    "LLMAgent",
    "LLMAgentSpec",
    "MultiAgent",
    "MultiAgentSpec",
    "RetrievalAgent",
    "RetrievalAgentSpec",
    "ScriptedAgent",
    "ScriptedAgentSpec",
    "Worker",
]
