"""A backend for any endpoint that speaks OpenAI's chat-completions API (OpenAI, vLLM, Ollama, llama.cpp's server)."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from testbed._errors import TestbedError
from testbed.llm._spec import OpenAICompatibleLLM
from testbed.llm._types import LLMError, LLMFailure, LLMReply, LLMRequest

_EXCERPT_CHARS = 200


class OpenAICompatibleBackend:
    """POSTs each request to ``{base_url}/chat/completions`` and classifies what goes wrong.

    The API key is read from the environment variable the spec names, at
    request time, so it is never part of a scenario or a log.
    """

    name = "openai"

    def __init__(self, spec: OpenAICompatibleLLM, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """
        Args:
            spec: The endpoint, model and reply format.
            transport: Replaces the network (tests pass ``httpx.MockTransport``).

        Raises:
            TestbedError: ``base_url`` is not an http(s) URL.
        """
        try:
            url = httpx.URL(spec.base_url)
        except httpx.InvalidURL as error:
            raise TestbedError(f"LLM base_url {spec.base_url!r} is not a URL: {error}") from error
        if url.scheme not in ("http", "https") or not url.host:
            raise TestbedError(f"LLM base_url {spec.base_url!r} must be an http:// or https:// URL")
        self._spec = spec
        self._transport = transport
        self.model = spec.model
        self.url = f"{spec.base_url.rstrip('/')}/chat/completions"

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        if self._spec.response_format == "json_schema":
            response_format: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": request.schema, "strict": True},
            }
        else:
            response_format = {"type": "json_object", "schema": request.schema}
        return {
            "model": self._spec.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "response_format": response_format,
        }

    async def complete(self, request: LLMRequest) -> LLMReply:
        """Answer ``request`` through the endpoint.

        Raises:
            LLMError: UNREACHABLE (connection refused, DNS), AUTH (401/403 or the
                key's variable unset), TIMEOUT, or HTTP_ERROR (any other status,
                a dropped connection, or a body that is not a chat completion).
        """
        headers = self._headers()
        body = self.request_body(request)
        start = time.perf_counter()
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=self._spec.timeout_s) as client:
                response = await client.post(self.url, json=body, headers=headers)
        except httpx.TimeoutException as error:
            raise LLMError(
                LLMFailure.TIMEOUT, f"{self.url} did not answer within {self._spec.timeout_s:g} s"
            ) from error
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as error:
            raise LLMError(LLMFailure.UNREACHABLE, f"{self.url}: {_describe(error)}") from error
        except httpx.HTTPError as error:
            raise LLMError(LLMFailure.HTTP_ERROR, f"{self.url}: {_describe(error)}") from error
        duration = time.perf_counter() - start
        return self._reply(response, duration)

    def _headers(self) -> dict[str, str]:
        name = self._spec.api_key_env
        if name is None:
            return {}
        key = os.environ.get(name)
        if not key:
            raise LLMError(LLMFailure.AUTH, f"environment variable {name} is not set")
        return {"Authorization": f"Bearer {key}"}

    def _reply(self, response: httpx.Response, duration: float) -> LLMReply:
        status = response.status_code
        if status in (401, 403):
            raise LLMError(LLMFailure.AUTH, f"{self.url} refused the credentials: HTTP {status} {_excerpt(response)}")
        if not response.is_success:
            raise LLMError(LLMFailure.HTTP_ERROR, f"{self.url}: HTTP {status} {_excerpt(response)}")
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, LookupError, TypeError) as error:
            raise LLMError(
                LLMFailure.HTTP_ERROR, f"{self.url}: HTTP {status} is not a chat completion: {_excerpt(response)}"
            ) from error
        if not isinstance(text, str):
            raise LLMError(
                LLMFailure.HTTP_ERROR, f"{self.url}: HTTP {status} chat completion has no text: {_excerpt(response)}"
            )
        usage = payload.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        model = payload.get("model")
        finish = choice.get("finish_reason")
        return LLMReply(
            text=text,
            model=model if isinstance(model, str) and model else self.model,
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            finish_reason=finish if isinstance(finish, str) else None,
            duration_s=duration,
        )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _excerpt(response: httpx.Response) -> str:
    text = " ".join(response.text.split())
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "…"
    return repr(text)


def _describe(error: BaseException) -> str:
    line = " ".join(str(error).split())
    return line or type(error).__name__
