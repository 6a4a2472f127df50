"""The models behind an agent (a language model, an embedding model), live and recorded or replayed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agents._embedding import MiniLMEmbedder, RecordingRetrieval, ReplayRetrieval, RetrievalClient
from testbed.events import Event, LLMEvent, RetrievalEvent
from testbed.llm import LLMClient, RecordingLLM, ReplayLLM, make_backend
from testbed.scenario import LLMAgent, RetrievalAgent, Scenario


@dataclass
class AgentModels:
    """The clients an agent holds; what they record in a run is handed to the run's record."""

    llm: LLMClient | None = None
    retrieval: RetrievalClient | None = None

    def take_run(self, run: int) -> list[Event]:
        events: list[Event] = []
        if self.llm is not None:
            events.extend(self.llm.take_run(run))
        if self.retrieval is not None:
            events.extend(self.retrieval.take_run(run))
        return events


def live_models(scenario: Scenario) -> AgentModels:
    """Recording clients around the models the scenario's agent needs (loaded on first use)."""
    agent = scenario.agent
    if isinstance(agent, LLMAgent):
        return AgentModels(llm=RecordingLLM(make_backend(agent.llm)))
    if isinstance(agent, RetrievalAgent):
        return AgentModels(retrieval=RecordingRetrieval(MiniLMEmbedder()))
    return AgentModels()


def replay_models(scenario: Scenario, recorded: Iterable[Event]) -> AgentModels:
    """Clients that answer from a recording: no model is loaded."""
    events = list(recorded)
    agent = scenario.agent
    if isinstance(agent, LLMAgent):
        return AgentModels(llm=ReplayLLM(e for e in events if isinstance(e, LLMEvent)))
    if isinstance(agent, RetrievalAgent):
        return AgentModels(retrieval=ReplayRetrieval(e for e in events if isinstance(e, RetrievalEvent)))
    return AgentModels()
