"""The models behind an agent (a language model, an embedding model), live and recorded or replayed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agents._embedding import MiniLMEmbedder, RecordingRetrieval, ReplayRetrieval, RetrievalClient
from agents._specs import LLMAgentSpec, RetrievalAgentSpec
from testbed.events import Event, LLMEvent, RetrievalEvent
from testbed.llm import LLMClient, RecordingLLM, ReplayLLM, make_backend


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


def live_llm(spec: LLMAgentSpec) -> AgentModels:
    """A recording client around the spec's language model (loaded on first use)."""
    return AgentModels(llm=RecordingLLM(make_backend(spec.llm)))


def replay_llm(spec: LLMAgentSpec, recorded: Iterable[Event]) -> AgentModels:
    """A language-model client that answers from a recording: no model is loaded."""
    return AgentModels(llm=ReplayLLM(e for e in recorded if isinstance(e, LLMEvent)))


def live_retrieval(spec: RetrievalAgentSpec) -> AgentModels:
    """A recording client around the embedding model (loaded on first use)."""
    return AgentModels(retrieval=RecordingRetrieval(MiniLMEmbedder()))


def replay_retrieval(spec: RetrievalAgentSpec, recorded: Iterable[Event]) -> AgentModels:
    """An embedding client that answers from a recording: no model is loaded."""
    return AgentModels(retrieval=ReplayRetrieval(e for e in recorded if isinstance(e, RetrievalEvent)))
