"""What several test modules use by name, and a fixture cannot hand them: types and plain helper functions.

Fixtures live in ``tests/conftest.py``; a test module imports neither that file
nor another test module (``tests/test_layout.py`` checks). What is here is what
tests construct, annotate with, or call inside their bodies and their own
helpers: the network guard's record, a shared command's outcome, a scripted language model, and the
in-process MCP client helpers of the server tests.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
from mcp import Client
from mcp_types import CallToolResult, ImageContent, RequestParamsMeta, TextContent

from testbed.events import Event, read_events
from testbed.imaging import decode_base64_image
from testbed.llm import LLMError, LLMFailure, LLMReply, LLMRequest
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.protocol import CLOCK_META_KEY, SCOPE_META_KEY, ErrorStyle, ToolTruth
from testbed.registry import registry
from testbed.validators import validate_experiment

if TYPE_CHECKING:
    import numpy as np

    from agents import AgentModels
    from testbed.scenario import Scenario
    from testbed.scenes import Scene
    from testbed.server_config import ServerConfig


@dataclass(frozen=True)
class CasesCommand:
    """What ``testbed reproduce cases --quick --seed 3 --calibration-runs 2 --out OUT`` printed and wrote."""

    out: Path
    exit_code: int
    output: str


class NetworkAttempts:
    """Non-loopback network use seen while the ``network_guard`` fixture was active."""

    def __init__(self) -> None:
        self.attempts: list[str] = []


class ScriptedLLM:
    """A language model that answers by rule: detect first, then crop each detection, then finish."""

    name = "fake"
    model = "scripted-rules"

    def __init__(self, replies: list[str] | None = None, failure: LLMFailure | None = None) -> None:
        self.replies = replies
        self.failure = failure
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> LLMReply:
        self.requests.append(request)
        if self.failure is not None:
            raise LLMError(self.failure, "connection refused by 127.0.0.1:9")
        if self.replies is not None:
            return LLMReply(text=self.replies[(len(self.requests) - 1) % len(self.replies)], model=self.model)
        prompt = request.messages[-1].content
        if "- nothing yet" in prompt:
            reply = {"tool": "det.detect", "for_each": None, "arguments": {"image": "$scene.image"}}
        elif "crop.crop" in prompt.split("Done so far:")[1].split("Values you can pass")[0]:
            reply = {"tool": "finish"}
        else:
            reply = {
                "tool": "crop.crop",
                "for_each": "$detect.detections",
                "arguments": {"image": "$scene.image", "box": "$item.bbox"},
            }
        return LLMReply(text=json.dumps(reply), model=self.model, completion_tokens=20)


# --- in-process MCP clients of the reference servers ------------------------------------------

CALL_TIMEOUT = 60.0
"""Bound on any single test's MCP exchange (the first call may load a model)."""


@asynccontextmanager
async def connected(name: str, config: ServerConfig) -> AsyncIterator[Client]:
    """An in-process client of a freshly built server."""
    async with Client(registry().server(name).build(config)) as client:
        yield client


def meta(*, scope: str | None = None, clock: float | None = None) -> RequestParamsMeta:
    """The request ``_meta`` a run would send."""
    values: dict[str, Any] = {}
    if scope is not None:
        values[SCOPE_META_KEY] = scope
    if clock is not None:
        values[CLOCK_META_KEY] = clock
    return cast("RequestParamsMeta", values)


async def call(client: Client, tool: str, arguments: dict[str, Any], **meta_fields: Any) -> CallToolResult:
    with anyio.fail_after(CALL_TIMEOUT):
        return await client.call_tool(tool, arguments, meta=meta(**meta_fields) or None)


def payload_of(result: CallToolResult) -> Any:
    """``structuredContent`` when present, else the JSON of the first text block (the truth manifests' rule)."""
    if result.structured_content is not None:
        return result.structured_content
    first = result.content[0]
    assert isinstance(first, TextContent)
    return json.loads(first.text)


def ok_payload(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    payload = payload_of(result)
    assert not (isinstance(payload, dict) and "error" in payload), payload
    return payload


def error_message(result: CallToolResult, tool: ToolTruth) -> str:
    """The error a call reported in its tool's error style; fails if the call succeeded."""
    if tool.error_style is ErrorStyle.PAYLOAD:
        assert not result.is_error
        payload = payload_of(result)
        assert isinstance(payload, dict)
        assert set(payload) == {"error"}, payload
        message = payload["error"]
    else:
        assert result.is_error, result.content
        first = result.content[0]
        assert isinstance(first, TextContent)
        message = first.text
    assert isinstance(message, str)
    assert "\n" not in message
    return message


def select(payload: Any, path: str) -> Any:
    """Evaluate a truth path such as ``detections[*].bbox``."""

    def walk(node: Any, parts: list[str]) -> Any:
        if not parts:
            return node
        head, *rest = parts
        if head.endswith("[*]"):
            return [walk(item, rest) for item in node[head.removesuffix("[*]")]]
        return walk(node[head], rest)

    return walk(payload, path.split("."))


def schema_at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The schema of the property a truth path names."""
    node = schema
    for part in path.split("."):
        node = node["properties"][part.removesuffix("[*]")]
        if part.endswith("[*]"):
            node = node["items"]
    return node


def expected_crop(scene: Scene, box: tuple[float, float, float, float]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return scene.image[math.floor(y1) : math.ceil(y2), math.floor(x1) : math.ceil(x2)]


def image_of(result: CallToolResult) -> np.ndarray:
    assert not result.is_error, result.content
    block = result.content[0]
    assert isinstance(block, ImageContent)
    assert block.mime_type == "image/png"
    return decode_base64_image(block.data, what="result")


def truth_tool(server: str, tool: str) -> ToolTruth:
    return registry().server(server).truth.tool(tool)


UNTYPED_OUTPUT_SERVERS: tuple[str, ...] = ("case-alita",)
"""Servers whose results break their own output schema by design (the ALITA case study's generated tools
send numbers as strings): the fuzzer rightly counts those as crashes, so its every-server runs skip them and
``tests/test_fuzz.py`` checks that it does flag them."""


def record_experiment(scenario: Scenario, out: Path, models: AgentModels | None = None) -> list[Event]:
    """Run ``scenario`` into ``out`` on the CPU and read its events back."""
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu", models=models))
    return read_events(out).events


def violation_counts(out: Path) -> Counter[str]:
    """How often each violation ID occurs in the experiment recorded in ``out``."""
    return Counter(violation.id for violation in validate_experiment(out).violations)


def assert_replays_exactly(out: Path) -> None:
    """Replaying ``out`` diverges nowhere and finds as many violations as the recording."""
    recorded = violation_counts(out)
    report = anyio.run(lambda: replay_experiment(out))
    assert report.divergence is None, str(report.divergence)
    assert report.violations == sum(recorded.values())


_E = TypeVar("_E")


def events_of(events: list[Event], kind: type[_E]) -> list[_E]:
    """The events of one kind, in order."""
    return [event for event in events if isinstance(event, kind)]
