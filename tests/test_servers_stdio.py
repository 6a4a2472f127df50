"""The reference servers as separate processes: every one over stdio, and one over streamable HTTP.

The process boundary is what these tests check: ``python -m servers NAME``
starts, answers ``tools/list`` and a tool call with a clean JSON-RPC stream
(inference prints nothing on stdout), and the HTTP server stops cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import anyio
import numpy as np
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, ImageContent

from testbed.conventions import MaskEncoding, encode_masks
from testbed.imaging import encode_png_base64
from testbed.protocol import SemanticRole
from testbed.registry import registry
from testbed.scenes import SceneSpec, generate_scene
from testbed.transport import free_port, wait_until_listening

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # a server subprocess per test

REPO_ROOT = Path(__file__).resolve().parents[1]
START_AND_CALL_TIMEOUT = 120.0
"""Bound on starting a server process (it imports torch) and making its calls."""

SERVERS = {name: entry for name, entry in registry().servers.items() if not name.startswith("vuln-")}
"""The reference servers (a vuln-* server runs over stdio in tests/test_vulnerable_servers.py)."""
get_server = registry().server


@pytest.fixture(scope="module")
def image_b64() -> str:
    return encode_png_base64(generate_scene(SceneSpec(), 5).image)


def server_environment(sandbox: Path) -> dict[str, str]:
    """What a server process needs: our cache folder, CPU, weights overrides, and a sandbox."""
    passed = {key: value for key, value in os.environ.items() if key.startswith("TESTBED_")}
    return {**passed, "TESTBED_DEVICE": "cpu", "TESTBED_SANDBOX": str(sandbox), "PYTHONUNBUFFERED": "1"}


def first_call(name: str, image_b64: str) -> tuple[str, dict[str, Any]]:
    """A call that every server answers from a bare image (the first tool whose image goes by value)."""
    extra: dict[str, Any] = {"box": [8.0, 8.0, 32.0, 24.0]} if name in ("crop-xywh", "crop", "measure") else {}
    if name in ("crop-masked", "crop-mask"):
        square = np.zeros((1, 240, 320), dtype=bool)  # the default synthetic scene is 320x240
        square[0, 8:24, 8:32] = True
        extra = {"mask": cast("list[Any]", encode_masks(square, MaskEncoding.COCO_RLE))[0]}
    if name in ("case-paraview", "case-paraview-memo"):
        extra = {"camera": {"azimuth": 0, "elevation": 0}}
    for tool in get_server(name).truth.tools:
        argument = tool.inputs.get(SemanticRole.IMAGE)
        if argument is not None:
            return tool.name, {argument: image_b64, **extra}
    raise AssertionError(f"{name} has no tool taking an image by value")


def succeeded(result: CallToolResult) -> bool:
    if result.is_error:
        return False
    if isinstance(result.content[0], ImageContent):
        return True
    return not (isinstance(result.structured_content, dict) and "error" in result.structured_content)


@pytest.mark.parametrize("name", list(SERVERS))
async def test_every_server_runs_as_a_stdio_subprocess_and_answers_a_call(
    name: str, image_b64: str, tmp_path: Path
) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "servers", name, "--transport", "stdio"],
        env=server_environment(tmp_path / "sandbox"),
        cwd=REPO_ROOT,
    )
    tool, arguments = first_call(name, image_b64)
    with anyio.fail_after(START_AND_CALL_TIMEOUT):
        async with Client(params) as client:
            listed = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool(tool, arguments)
    assert listed == [t.name for t in SERVERS[name].truth.tools]
    assert succeeded(result), result.content


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_server_serves_streamable_http_on_a_free_port_and_stops_cleanly_on_a_signal(
    stop: signal.Signals, image_b64: str, tmp_path: Path
) -> None:
    port = free_port()
    environment = {**os.environ, **server_environment(tmp_path / "sandbox")}
    process = subprocess.Popen(
        [sys.executable, "-m", "servers", "detect-xyxy", "--transport", "http", "--port", str(port)],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with anyio.fail_after(START_AND_CALL_TIMEOUT):
            await wait_until_listening(port, process, name="detect-xyxy")
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                listed = [t.name for t in (await client.list_tools()).tools]
                result = await client.call_tool("detect", {"image": image_b64})
        assert listed == ["detect"]
        assert succeeded(result), result.content
        process.send_signal(stop)
        stdout, stderr = process.communicate(timeout=START_AND_CALL_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr.decode()
    assert stdout == b""
    assert f"serving detect-xyxy on http://127.0.0.1:{port}/mcp" in stderr.decode()
