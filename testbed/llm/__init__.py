"""Language models for LLM-driven agents: the embedded llama.cpp default or an OpenAI-compatible endpoint.

Agents hold an :class:`LLMClient`: a :class:`RecordingLLM` around a backend in a
live run, which records every request as an :class:`~testbed.events.LLMEvent`,
or a :class:`ReplayLLM` that answers from those events with no model at all.
"""

from testbed.llm._embedded import EmbeddedBackend, locate_smollm2
from testbed.llm._factory import make_backend
from testbed.llm._openai import OpenAICompatibleBackend
from testbed.llm._record import RecordingLLM, ReplayLLM
from testbed.llm._spec import EmbeddedLLM, LLMSpec, OpenAICompatibleLLM
from testbed.llm._types import (
    ChatMessage,
    LLMBackend,
    LLMClient,
    LLMError,
    LLMFailure,
    LLMReply,
    LLMRequest,
)

__all__ = [
    "ChatMessage",
    "EmbeddedBackend",
    "EmbeddedLLM",
    "LLMBackend",
    "LLMClient",
    "LLMError",
    "LLMFailure",
    "LLMReply",
    "LLMRequest",
    "LLMSpec",
    "OpenAICompatibleBackend",
    "OpenAICompatibleLLM",
    "RecordingLLM",
    "ReplayLLM",
    "locate_smollm2",
    "make_backend",
]
