"""A client that is not our Python SDK drives reference servers: the MCP Inspector CLI (Node).

``./dev test`` installs it into tests/inspector with ``npm ci``. Outside CI a
machine without Node skips these tests; in CI (``CI=true``) a missing
Inspector fails them, so they can never pass silently there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from testbed.imaging import encode_png_base64
from testbed.scenes import SceneSpec, generate_scene
from testbed.transport import free_port, wait_until_listening

pytestmark = pytest.mark.slow  # Node.js subprocesses driving server subprocesses

INSPECTOR = Path(__file__).parent / "inspector" / "node_modules" / ".bin" / "mcp-inspector"


@pytest.fixture(scope="module")
def inspector() -> Path:
    if not INSPECTOR.exists() or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail(f"{INSPECTOR} is missing in CI: ./dev test installs it with npm ci")
        pytest.skip("the MCP Inspector CLI is not installed (./dev test installs it)")
    return INSPECTOR


def _inspect(inspector: Path, target: list[str], *method: str) -> dict[str, object]:
    completed = subprocess.run(
        [str(inspector), "--cli", *target, *method],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    document: dict[str, object] = json.loads(completed.stdout)
    return document


def _small_image() -> str:
    return encode_png_base64(generate_scene(SceneSpec(width=96, height=72, min_size=24, max_size=40), 3).image)


def test_inspector_lists_and_calls_a_server_over_stdio(inspector: Path, tmp_path: Path) -> None:
    target = [sys.executable, "-m", "servers", "detect-xyxy", "--transport", "stdio", "--sandbox", str(tmp_path)]
    listed = _inspect(inspector, target, "--method", "tools/list")
    tools = {tool["name"]: tool for tool in listed["tools"]}  # type: ignore[attr-defined]
    box = tools["detect"]["outputSchema"]["properties"]["detections"]["items"]["properties"]["bbox"]
    assert box["coordinate_system"] == {"format": "xyxy", "units": "pixel", "axis_order": "xy", "origin": "top_left"}
    called = _inspect(
        inspector, target, "--method", "tools/call", "--tool-name", "detect", "--tool-arg", f"image={_small_image()}"
    )
    assert called.get("isError") is not True
    structured = called["structuredContent"]
    assert structured["image_size"] == {"width": 96, "height": 72}  # type: ignore[index]
    assert isinstance(structured["detections"], list)  # type: ignore[index]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "servers", "crop-handle", "--transport", "http", "--port", str(port)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        anyio.run(lambda: wait_until_listening(port, process, name="crop-handle"))
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_inspector_lists_and_calls_a_server_over_http(inspector: Path, http_server: str) -> None:
    listed = _inspect(inspector, [http_server], "--method", "tools/list")
    names = {tool["name"] for tool in listed["tools"]}  # type: ignore[attr-defined]
    assert {"put_image", "crop_image", "get_image"} <= names
    called = _inspect(
        inspector,
        [http_server],
        "--method",
        "tools/call",
        "--tool-name",
        "put_image",
        "--tool-arg",
        f"image_b64={_small_image()}",
    )
    assert called.get("isError") is not True
    text = called["content"][0]["text"]  # type: ignore[index]
    assert json.loads(text)["handle"]
