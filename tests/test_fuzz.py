"""The fuzzer and what it found: every registered server survives a small seeded run with no generic
internal error, no unhelpful error, no crash and no hang; the malformed images and arrays it sends get
errors naming the argument; and the classifier can fail (a broken tool counts as generic, a slow one
as a hang, a result breaking its schema as a crash)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
from typing import Any

import anyio
import numpy as np
import pytest
from click.testing import CliRunner
from mcp import Client, MCPError
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict

from servers._tools import CallInfo, ToolDef, build_mcp_server, structured_result
from testbed.cli import main
from testbed.fuzz import Outcome, ServerTally, classify_result, fuzz_built, fuzz_server, image_payloads, png_declaring
from testbed.imaging import encode_png
from testbed.registry import registry
from testbed.serve import body_too_large_message
from testbed.server_config import ServerConfig
from testbed.transport import free_port, wait_until_listening
from tests._helpers import UNTYPED_OUTPUT_SERVERS, call, connected

SMALL_RUN_CALLS = 200
"""Calls per server in the regular suite (the quality tier makes 10,000 by default)."""

SERVERS = [name for name in registry().servers if name not in UNTYPED_OUTPUT_SERVERS]


def failures_of(tally: ServerTally) -> list[str]:
    return [
        f"{failure.outcome.value}: {failure.tool}: {failure.message} [{failure.cause}] <- {failure.arguments}"
        for failure in tally.failures
    ]


# --- every server, a small seeded run ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVERS)
def test_every_registered_server_survives_a_small_seeded_fuzz_run(name: str) -> None:
    tally = fuzz_server(name, calls=SMALL_RUN_CALLS, seed=0)

    assert tally.calls == SMALL_RUN_CALLS
    assert tally.failed == 0, failures_of(tally)
    assert tally.counts[Outcome.CLASSIFIED] > 0  # the run did send malformed arguments


@pytest.mark.slow
@pytest.mark.parametrize("name", UNTYPED_OUTPUT_SERVERS)
def test_a_server_whose_results_break_their_schema_by_design_is_counted_as_crashing(name: str) -> None:
    tally = fuzz_server(name, calls=SMALL_RUN_CALLS, seed=0)

    assert tally.counts[Outcome.CRASH] > 0
    assert tally.counts[Outcome.GENERIC] == 0


def test_the_same_seed_sends_the_same_calls_and_another_seed_other_calls() -> None:
    first = fuzz_server("crop-xywh", calls=30, seed=3)
    again = fuzz_server("crop-xywh", calls=30, seed=3)
    other = fuzz_server("crop-xywh", calls=30, seed=4)

    assert first.calls_digest == again.calls_digest
    assert first.counts == again.counts
    assert other.calls_digest != first.calls_digest


# --- the malformed inputs it sends get errors naming the argument ----------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def small_png() -> bytes:
    return encode_png(np.full((20, 30, 3), 90, dtype=np.uint8))


def fuzz_config(tmp_path: Any) -> ServerConfig:
    return ServerConfig(device="cpu", sandbox=tmp_path, max_pixels=1_000_000)


async def error_of(name: str, tool: str, arguments: dict[str, Any], config: ServerConfig) -> str:
    async with connected(name, config) as client:
        result = await call(client, tool, arguments)
    verdict = classify_result(result, arguments)
    assert verdict.outcome is Outcome.CLASSIFIED, verdict
    return verdict.message


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("width", "height"),
    [(1_010, 1_010), (12_000, 9_000), (100_000, 100_000)],
    ids=["over-the-server-limit", "over-pillow-warning-limit", "over-pillow-error-limit"],
)
async def test_a_decompression_bomb_is_refused_with_its_declared_size_and_the_limit(
    width: int, height: int, tmp_path: Any
) -> None:
    bomb = png_declaring(width, height)
    assert len(bomb) < 100  # tiny on the wire

    message = await error_of("crop-xywh", "crop", {"image": b64(bomb), "box": [0, 0, 1, 1]}, fuzz_config(tmp_path))

    assert message == f"image: {width}x{height} exceeds the limit of 1000000 pixels"


@pytest.mark.anyio
@pytest.mark.parametrize("cut", [0.3, 0.8])
async def test_a_truncated_png_is_refused_as_corrupt_or_truncated_naming_the_argument(
    cut: float, tmp_path: Any
) -> None:
    data = small_png()
    truncated = data[: int(len(data) * cut)]

    message = await error_of("detect-yxyx", "locate_objects", {"image_b64": b64(truncated)}, fuzz_config(tmp_path))

    assert message.startswith("image_b64: not a readable image (truncated or corrupt")


@pytest.mark.anyio
async def test_a_png_whose_chunk_declares_gigabytes_is_refused_before_the_decoder_reads_it(tmp_path: Any) -> None:
    # The fuzzer's first 10,000-call run found this 69-byte PNG: OpenCV spent 11-35 s on it (a hang).
    one_pixel = image_payloads().valid[0]
    assert one_pixel[33:37] == b"\x00\x00\x00\x0c"  # the IDAT chunk's length
    bomb = one_pixel[:33] + b"\xff" + one_pixel[34:]

    message = await error_of("detect-xyxy", "detect", {"image": b64(bomb)}, fuzz_config(tmp_path))

    assert message == "image: not a readable image (truncated or corrupt image data: a PNG chunk runs past the end)"


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(3))
async def test_random_bytes_as_base64_are_refused_in_words_not_an_exception_class(seed: int, tmp_path: Any) -> None:
    noise = np.random.default_rng(seed).integers(0, 256, 200, dtype=np.uint8).tobytes()

    message = await error_of("detect-xyxy", "detect", {"image": b64(noise)}, fuzz_config(tmp_path))

    # Ultralytics (imported by the detector) makes Pillow raise ModuleNotFoundError on unknown data.
    assert message == "image: not a readable image (not PNG, JPEG or another known image format)"


@pytest.mark.anyio
async def test_a_zero_size_png_is_refused_naming_the_argument(tmp_path: Any) -> None:
    message = await error_of(
        "crop-xywh", "crop", {"image": b64(png_declaring(0, 7)), "box": [0, 0, 1, 1]}, fuzz_config(tmp_path)
    )

    assert message.startswith("image: not a readable image (")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        ([[1.0, 2.0, 3.0]], "boxes.0: a prompt is four numbers"),
        ([[0, 0, 5, 5], [1.0, 2.0]], "boxes.1: a prompt is four"),
    ],
    ids=["three-numbers", "ragged"],
)
async def test_a_wrong_shape_box_prompt_array_is_refused_naming_the_prompt(
    boxes: list[list[float]], expected: str, tmp_path: Any
) -> None:
    arguments = {"image": b64(small_png()), "boxes": boxes}

    message = await error_of("segment-rle", "segment", arguments, fuzz_config(tmp_path))

    assert message.startswith(expected)


@pytest.mark.anyio
async def test_an_unprintable_unknown_argument_is_quoted_so_the_error_still_names_it(tmp_path: Any) -> None:
    arguments = {"image": b64(small_png()), "box": [0, 0, 1, 1], " \x00": 1}

    message = await error_of("crop-xywh", "crop", arguments, fuzz_config(tmp_path))

    assert message == "' \\x00': unknown argument"


@pytest.mark.anyio
async def test_a_file_name_too_long_for_the_file_system_is_refused_naming_the_argument(tmp_path: Any) -> None:
    message = await error_of("detect-xywh-bl", "detect_file", {"path": "h" * 300}, fuzz_config(tmp_path))

    assert message.startswith("path: 'hhh")
    assert message.endswith("is not a usable path (File name too long)")


def test_the_payloads_include_real_images_and_a_real_oversized_one() -> None:
    payloads = image_payloads()

    assert len(payloads.valid) >= 5
    assert len(payloads.oversized) < 200_000  # over a million pixels, a few kB of PNG


# --- the classifier can fail ------------------------------------------------------------------


class NoArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = 0


def one_tool_server(handler: Any, output_schema: dict[str, Any] | None = None) -> MCPServer:
    tool = ToolDef(
        name="probe", description="A probe.", arguments=NoArguments, handler=handler, output_schema=output_schema
    )
    return build_mcp_server("probe", instructions="A probe.", tools=[tool])


def broken(arguments: NoArguments, call: CallInfo) -> CallToolResult:
    raise ValueError("cannot reshape array of size 3 into shape (4,)")


def slow(arguments: NoArguments, call: CallInfo) -> CallToolResult:
    time.sleep(1.0)
    return structured_result({"size": arguments.size})


def off_schema(arguments: NoArguments, call: CallInfo) -> CallToolResult:
    return structured_result({"size": "not a number"})


def test_a_tool_that_raises_value_error_counts_as_a_generic_internal_error_with_its_cause() -> None:
    tally = anyio.run(lambda: fuzz_built("broken", one_tool_server(broken), calls=20, seed=0))

    assert tally.counts[Outcome.GENERIC] > 0
    causes = {failure.cause for failure in tally.failures if failure.outcome is Outcome.GENERIC}
    assert "ValueError: cannot reshape array of size 3 into shape (4,)" in causes


def test_a_tool_slower_than_the_timeout_counts_as_a_hang_and_the_run_goes_on() -> None:
    tally = anyio.run(lambda: fuzz_built("slow", one_tool_server(slow), calls=3, seed=0, timeout_s=0.2))

    assert tally.calls == 3
    assert tally.counts[Outcome.HANG] + tally.counts[Outcome.CLASSIFIED] == 3
    assert tally.counts[Outcome.HANG] >= 1


def test_a_result_breaking_its_output_schema_counts_as_a_crash() -> None:
    schema = {"type": "object", "properties": {"size": {"type": "integer"}}, "required": ["size"]}
    tally = anyio.run(lambda: fuzz_built("off", one_tool_server(off_schema, schema), calls=20, seed=0))

    assert tally.counts[Outcome.CRASH] > 0


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ("image: not a readable image (ModuleNotFoundError)", Outcome.UNHELPFUL),
        ("something went wrong", Outcome.UNHELPFUL),
        ("internal error in the server; see its log", Outcome.GENERIC),
        ("image: 9x9 exceeds the limit of 10 pixels", Outcome.CLASSIFIED),
        ("box.2: must be finite", Outcome.CLASSIFIED),
        ("KeyError: unknown argument", Outcome.CLASSIFIED),  # an argument called like an exception class
        ("KeyError: bad image (KeyError)", Outcome.UNHELPFUL),
        ("box: must be a number, got 'ValueError'", Outcome.CLASSIFIED),  # the value sent, echoed back
    ],
)
def test_the_classifier_accepts_only_errors_naming_an_argument_and_the_problem_in_words(
    text: str, outcome: Outcome
) -> None:
    as_is_error = CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
    as_payload = structured_result({"error": text})

    assert classify_result(as_is_error, ["image", "box", "KeyError"]).outcome is outcome
    assert classify_result(as_payload, ["image", "box", "KeyError"]).outcome is outcome


def test_a_normal_result_is_ok() -> None:
    assert classify_result(structured_result({"detections": []}), ["image"]).outcome is Outcome.OK


# --- the command ------------------------------------------------------------------------------


def test_testbed_fuzz_prints_the_table_and_exits_zero_on_a_clean_server() -> None:
    result = CliRunner().invoke(main, ["fuzz", "crop-xywh", "--calls", "20", "--seed", "1"])

    assert result.exit_code == 0, result.output
    assert "crop-xywh" in result.output
    assert "│    20 │" in result.output  # the calls column
    assert "classified" in result.output


def test_testbed_fuzz_refuses_an_unknown_server_in_one_line() -> None:
    result = CliRunner().invoke(main, ["fuzz", "no-such-server", "--calls", "5"])

    assert result.exit_code != 0
    assert "no-such-server" in result.output
    assert "Traceback" not in result.output


# --- the HTTP request-body limit --------------------------------------------------------------

HTTP_TIMEOUT_S = 120.0
"""Bound on starting a server process (it imports torch) and making its calls."""


@pytest.mark.slow
@pytest.mark.anyio
async def test_over_http_a_body_over_max_body_is_refused_with_the_limit_and_the_way_around_it(tmp_path: Any) -> None:
    port = free_port()
    environment = {**os.environ, "TESTBED_DEVICE": "cpu", "TESTBED_SANDBOX": str(tmp_path)}
    command = ["serve", "crop-xywh", "--transport", "http", "--port", str(port), "--max-body", "200000"]
    log = tmp_path / "server.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "testbed", *command], env=environment, stderr=stderr)
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    large, small = b64(encode_png(noise)), b64(small_png())
    assert len(large) > 200_000 > len(small)
    try:
        with anyio.fail_after(HTTP_TIMEOUT_S):
            await wait_until_listening(port, process, name="crop-xywh", log=log)
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                with pytest.raises(MCPError) as refused:
                    await client.call_tool("crop", {"image": large, "box": [0, 0, 10, 10]})
                after = await client.call_tool("crop", {"image": small, "box": [0, 0, 10, 10]})
    finally:
        process.terminate()
        process.wait(timeout=HTTP_TIMEOUT_S)

    message = str(refused.value)
    assert re.fullmatch(r"request body of \d+ bytes is over this server's limit of 200000 bytes; .*", message)
    assert "--max-body" in message
    assert "a file path or a handle" in message
    assert not after.is_error  # the session survives the refusal


def test_the_refusal_names_the_size_when_known_and_the_limit_always() -> None:
    assert body_too_large_message(10, 25).startswith("request body of 25 bytes is over this server's limit of 10 bytes")
    assert body_too_large_message(10).startswith("request body is over this server's limit of 10 bytes")
