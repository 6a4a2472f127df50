"""What agents ask of a language model, and what comes back: backend-neutral request, reply and failure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from testbed._errors import TestbedError
from testbed.events import LLMEvent


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion whose reply must be JSON following ``schema``."""

    messages: tuple[ChatMessage, ...]
    schema: dict[str, Any]
    """JSON Schema of the reply; backends constrain decoding with it (arrays and strings bounded)."""
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0

    def as_record(self) -> dict[str, Any]:
        """The request as recorded in an :class:`~testbed.events.LLMEvent`."""
        return {
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "schema": self.schema,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class LLMReply:
    text: str
    """The raw reply (JSON text when the backend honoured the schema; agents validate it)."""
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    duration_s: float = 0.0


class LLMFailure(StrEnum):
    """Why a request got no reply."""

    UNREACHABLE = "unreachable"
    """Connection refused, DNS failure: nothing answered at the endpoint."""
    AUTH = "auth"
    """The endpoint refused the credentials (HTTP 401/403)."""
    HTTP_ERROR = "http_error"
    """Any other non-success HTTP status, or a response that is not a chat completion."""
    TIMEOUT = "timeout"
    BACKEND_ERROR = "backend_error"
    """The model itself failed (load error, context overflow)."""


class LLMError(TestbedError):
    """A request that got no reply; ``failure`` classifies it for the run's record."""

    def __init__(self, failure: LLMFailure, message: str) -> None:
        super().__init__(f"{failure.value}: {message}")
        self.failure = failure
        self.detail = message


class LLMBackend(Protocol):
    """A language model that answers chat requests (embedded llama.cpp, or an OpenAI-compatible endpoint)."""

    name: str
    """embedded or openai."""
    model: str

    async def complete(self, request: LLMRequest) -> LLMReply:
        """Answer ``request``.

        Raises:
            LLMError: no reply (classified).
        """
        ...


class LLMClient(Protocol):
    """What agents hold: a backend behind a recorder (live) or the recording itself (replay)."""

    async def complete(self, request: LLMRequest, *, run: int, agent: str) -> LLMReply:
        """Answer ``request`` for ``agent`` in ``run``, recording it.

        Raises:
            LLMError: no reply (classified, and recorded as such).
        """
        ...

    def take_run(self, run: int) -> list[LLMEvent]:
        """The run's recorded requests, in deterministic order (agent, seq), removed from the client."""
        ...
