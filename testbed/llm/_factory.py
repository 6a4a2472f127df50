"""The backend a scenario's LLM spec names."""

from __future__ import annotations

from typing import assert_never

from testbed.llm._embedded import EmbeddedBackend
from testbed.llm._openai import OpenAICompatibleBackend
from testbed.llm._spec import EmbeddedLLM, LLMSpec, OpenAICompatibleLLM
from testbed.llm._types import LLMBackend


def make_backend(spec: LLMSpec) -> LLMBackend:
    """The backend for ``spec``; nothing loads or connects until its first request.

    Raises:
        TestbedError: an OpenAI-compatible ``base_url`` that is not an http(s) URL.
    """
    if isinstance(spec, EmbeddedLLM):
        return EmbeddedBackend(spec)
    if isinstance(spec, OpenAICompatibleLLM):
        return OpenAICompatibleBackend(spec)
    assert_never(spec)
