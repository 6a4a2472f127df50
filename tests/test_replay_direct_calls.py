"""Direct replay answers tool calls without the SDK's request machinery, and the agent sees what it saw through it."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from mcp.client.session import ClientSession
from mcp_types.methods import validate_server_result

import testbed.orchestrator._direct_replay as direct_module
import testbed.orchestrator._run as run_module
from testbed.events import BLOBS_DIR, EVENTS_FILE, BlobStore, Event, ReplayBlobs
from testbed.orchestrator import replay_experiment
from testbed.orchestrator._agents import replay_models
from testbed.orchestrator._call import CallOutcome, call_tool
from testbed.orchestrator._direct_replay import UnreplayableError, replay_directly
from testbed.orchestrator._experiment import task_checker
from testbed.orchestrator._replay import first_divergence, load_recorded
from testbed.transport import current_call

Seen = dict[tuple[int, str, int], tuple[str, Any, str | None]]
"""What each call gave the agent, by (run, node, item): its outcome, its result as dumped, its error."""


def _replay(directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Event], list[Event], Seen, list[str]]:
    """The recorded events, the direct replay's, what each call gave the agent, and the methods sent through
    the sessions (the calls not answered directly)."""
    seen: Seen = {}
    sent: list[str] = []
    send_request = ClientSession.send_request

    async def watched_call(connection: Any, tool: str, arguments: dict[str, Any], **kwargs: Any) -> CallOutcome:
        outcome = await call_tool(connection, tool, arguments, **kwargs)
        site = current_call.get()
        assert site is not None
        dumped = outcome.result.model_dump(by_alias=True, mode="json") if outcome.result is not None else None
        seen[(site.run, site.node, site.item)] = (outcome.kind.value, dumped, outcome.error)
        return outcome

    async def watched_send(self: ClientSession, request: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(request.method)
        return await send_request(self, request, *args, **kwargs)

    _, recorded, scenario = load_recorded(directory)
    blobs = ReplayBlobs(BlobStore(directory / BLOBS_DIR))
    with monkeypatch.context() as patch, tempfile.TemporaryDirectory() as sandbox:
        patch.setattr(run_module, "call_tool", watched_call)
        patch.setattr(ClientSession, "send_request", watched_send)
        replayed = anyio.run(
            lambda: replay_directly(
                recorded, scenario, blobs, sandbox=Path(sandbox), models=replay_models(scenario, recorded),
                check_task=task_checker(scenario),
            )
        )  # fmt: skip
    return recorded, replayed, seen, sent


def _through_sessions(patch: pytest.MonkeyPatch) -> None:
    """Make the direct replay send every call through its sessions, as it did before calls were answered directly."""
    patch.setattr(direct_module._DirectClient, "answering", lambda self, tool, arguments, meta: None)


def test_a_call_answered_directly_gives_the_agent_what_the_session_gives(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=3)
    recorded, direct, seen, sent = _replay(tmp_path, monkeypatch)
    assert first_divergence(recorded, direct)[1] is None
    with monkeypatch.context() as patch:
        _through_sessions(patch)
        _, through, seen_through, sent_through = _replay(tmp_path, monkeypatch)
    assert first_divergence(recorded, through)[1] is None
    assert seen == seen_through
    assert any(outcome == "ok" for outcome, _, _ in seen.values())
    calls = len(seen)
    assert sent_through.count("tools/call") == calls
    # Only each server's first call goes through its session, which shows what it adds to a request's _meta.
    assert sent.count("tools/call") == 3 < calls


def test_a_request_that_differs_is_refused_when_answered_directly(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    # Run 1's detect call comes after run 0's went through the session: it is answered directly, and its request
    # (here its logical clock in _meta) must still be the recorded one.
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=2)
    events_file = tmp_path / EVENTS_FILE
    lines = events_file.read_text(encoding="utf-8").splitlines()
    (index,) = [
        index
        for index, line in enumerate(lines)
        if (document := json.loads(line)).get("event") == "message" and document["run"] == 1
        and document["node"] == "detect" and document["direction"] == "c->s"
    ]  # fmt: skip
    document = json.loads(lines[index])
    document["message"]["params"]["_meta"]["io.github.mcp-vision-testbed/clock"] = 1.0
    lines[index] = json.dumps(document)
    events_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _, recorded, scenario = load_recorded(tmp_path)
    with tempfile.TemporaryDirectory() as sandbox, pytest.raises(Exception) as raised:  # noqa: PT011 - raised from
        anyio.run(  # inside the sessions' task groups
            lambda: replay_directly(
                recorded, scenario, ReplayBlobs(BlobStore(tmp_path / BLOBS_DIR)), sandbox=Path(sandbox),
                models=replay_models(scenario, recorded), check_task=task_checker(scenario),
            )
        )  # fmt: skip
    assert "run 1 detect#0 (det): the request differs from the recorded one" in _messages(raised.value)
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert not report.direct
    assert report.divergence is not None
    assert report.divergence.run == 1
    assert report.divergence.where == "message detect#0"
    assert report.divergence.field == "message.params._meta.io.github.mcp-vision-testbed/clock"


def _messages(error: BaseException) -> list[str]:
    if isinstance(error, BaseExceptionGroup):
        return [message for inner in error.exceptions for message in _messages(inner)]
    return [str(error)] if isinstance(error, UnreplayableError) else []


def test_an_answer_is_checked_against_the_schema_unless_this_sdk_took_it_when_recording(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=2)
    checked: list[dict[str, Any]] = []

    def watched(method: str, version: str, data: Any) -> None:
        checked.append(data)
        validate_server_result(method, version, data)

    monkeypatch.setattr(direct_module, "validate_server_result", watched)
    recorded, direct, seen, sent = _replay(tmp_path, monkeypatch)
    assert first_divergence(recorded, direct)[1] is None
    assert checked == []  # recorded by this SDK, and each answered call ended ok

    events_file = tmp_path / EVENTS_FILE
    lines = events_file.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    header["versions"]["mcp"] = "0.0.1"  # another SDK took these answers: this one checks them again
    lines[0] = json.dumps(header)
    events_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    recorded, direct, seen_again, sent = _replay(tmp_path, monkeypatch)
    assert first_divergence(recorded, direct)[1] is None
    assert seen_again == seen
    assert len(checked) == len(seen) - sent.count("tools/call")  # every call answered directly


@pytest.mark.parametrize(
    ("arguments", "plain"),
    [
        ({"image": "abc", "box": [1.0, 2, True, None], "nested": {"k": ["x", {"y": 1.5}]}}, True),
        ({}, True),
        ({"box": (1.0, 2.0)}, False),  # the session sends a list
        ({"box": [1.0, math.nan]}, False),  # the session sends null
        ({"box": [math.inf]}, False),
        ({"box": [math.inf, -math.inf]}, False),
        ({"box": [1e308, 1e308]}, False),  # finite, but their sum is not: sent through the session, as it may be
        ({"score": np.float64(0.5)}, False),
        ({1: "a"}, False),
        ({"nested": {"k": {2: "a"}}}, False),
    ],
)
def test_only_arguments_the_session_would_send_unchanged_are_answered_directly(arguments: Any, plain: bool) -> None:
    assert direct_module._plain_arguments(arguments) is plain


@pytest.mark.parametrize(
    ("meta", "plain"),
    [
        ({"io.github.mcp-vision-testbed/scope": "run-0", "io.github.mcp-vision-testbed/clock": 0.0}, True),
        ({"io.github.mcp-vision-testbed/clock": math.nan}, False),
        ({"io.github.mcp-vision-testbed/agent": None}, False),  # the session leaves a None out of _meta
        ({"progressToken": 1}, False),
    ],
)
def test_only_the_orchestrators_own_meta_is_answered_directly(meta: dict[str, Any], plain: bool) -> None:
    assert direct_module._plain_meta(meta) is plain
