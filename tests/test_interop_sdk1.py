"""Interop beyond our SDK: the previous generation (``mcp`` 1.x) as client of our servers, and as a server we audit.

The 1.x SDK lives in its own virtual environment, made by the ``sdk1_python``
fixture with ``python3.11 -m venv`` and ``pip install`` from PyPI, cached under
``~/.cache/mcp-vision-testbed/sdk1-venv-<key>`` (the key names what is
installed), so only the first run pays for it. Outside CI a machine that
cannot make it (no python3.11, no network) skips these tests; under
``CI=true`` that fails them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from testbed.audit import probe_scenes
from testbed.audit._boxes import infer_box_convention
from testbed.audit._payload import box_groups
from testbed.cli import main
from testbed.imaging import encode_png
from testbed.scenes import Scene
from testbed.transport import free_port

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SDK1_REQUIREMENTS = ("mcp>=1.25,<2", "numpy", "pillow")
CLIENT_TIMEOUT_S = 180.0
"""Bound on one 1.x client exchange (our server loads its detector first)."""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the mcp 1.x environment is required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sdk1_python() -> Path:
    """The Python of a virtual environment holding ``mcp`` 1.x (made once, then cached by what it holds)."""
    key = hashlib.sha256(" ".join(SDK1_REQUIREMENTS).encode()).hexdigest()[:12]
    venv = Path.home() / ".cache" / "mcp-vision-testbed" / f"sdk1-venv-{key}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    interpreter = shutil.which("python3.11")
    if interpreter is None:
        _unavailable("python3.11 is not on PATH")
    assert interpreter is not None
    building = venv.with_name(f"{venv.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    try:
        subprocess.run([interpreter, "-m", "venv", str(building)], check=True, capture_output=True, timeout=300)
        pip = [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", *SDK1_REQUIREMENTS]
        installed = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as error:
        shutil.rmtree(building, ignore_errors=True)
        _unavailable(f"cannot make the venv: {error}")
    if installed.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        _unavailable(f"pip install {' '.join(SDK1_REQUIREMENTS)} failed: {installed.stderr.strip()[-300:]}")
    try:
        building.rename(venv)  # atomic: a concurrent session that won the race leaves its own in place
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
    # venvs are not relocatable; the one renamed into place still points at its own bin via sys.prefix
    return python


def _server_env() -> list[str]:
    """``env`` assignments a ``testbed serve`` process started by the 1.x client needs (its minimal environment
    would otherwise lose the test session's testbed home)."""
    keep = ("TESTBED_HOME", "HOME", "PATH", "PYTHONPATH")
    return ["env", *(f"{key}={os.environ[key]}" for key in keep if key in os.environ)]


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scene, Path]:
    scene = probe_scenes(seed=11, count=1)[0]
    path = tmp_path_factory.mktemp("sdk1") / "scene.png"
    path.write_bytes(encode_png(scene.image))
    return scene, path


def _exchange(python: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), str(FIXTURES / "sdk1_client.py"), *args], capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def _assert_detected(answer: dict[str, Any], scene: Scene) -> None:
    assert answer["tools"] == ["detect"]
    assert answer["is_error"] is False
    payload = answer["structured"] if answer["structured"] is not None else json.loads(answer["texts"][0])
    boxes = max(box_groups(payload).values(), key=len)
    inference = infer_box_convention([(boxes, scene)])
    assert inference.convention == "xyxy/pixel/xy/top_left"
    assert inference.explained >= len(scene.objects) - 1 >= 1


def test_the_sdk1_client_lists_and_calls_our_detector_over_stdio(
    sdk1_python: Path, scene_file: tuple[Scene, Path]
) -> None:
    scene, image = scene_file
    command = [*_server_env(), sys.executable, "-m", "testbed", "serve", "detect-xyxy", "--device", "cpu"]
    answer = _exchange(sdk1_python, "stdio", "detect", "image", str(image), "--", *command)
    assert answer["protocol_version"] == "2025-11-25"
    _assert_detected(answer, scene)


@pytest.fixture(scope="module")
def detector_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("http") / "server.log").open("wb")
    command = [sys.executable, "-m", "testbed", "serve", "detect-xyxy", "--transport", "http", "--port", str(port)]
    process = subprocess.Popen([*command, "--device", "cpu"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + CLIENT_TIMEOUT_S
        while b"serving detect-xyxy on" not in Path(log.name).read_bytes():
            assert process.poll() is None, Path(log.name).read_text()[-2000:]
            assert time.monotonic() < deadline, "testbed serve --transport http did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_the_sdk1_client_lists_and_calls_our_detector_over_streamable_http(
    sdk1_python: Path, scene_file: tuple[Scene, Path], detector_url: str
) -> None:
    scene, image = scene_file
    answer = _exchange(sdk1_python, "http", "detect", "image", str(image), detector_url)
    assert answer["protocol_version"] == "2025-11-25"
    _assert_detected(answer, scene)


def test_the_audit_identifies_the_box_convention_of_a_foreign_sdk1_fastmcp_server(
    sdk1_python: Path, tmp_path: Path
) -> None:
    server = str(FIXTURES / "foreign_server_sdk1.py")
    args = ["audit", "--format", "json", "--out", str(tmp_path), "--command", str(sdk1_python), server]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["complete"] is True, card["errors"]
    assert card["server_info"]["name"] == "foreign-shapes"
    (tool,) = card["tools"]
    assert tool["name"] == "find_shapes"
    assert tool["image_argument"] == "image_base64"
    assert tool["box_convention"] == "cxcywh/normalized/xy/top_left"
    assert tool["box_convention_confidence"] >= 0.9
    assert tool["declared_box_convention"] is None
    assert {"coords.undeclared"} <= {finding["id"] for finding in card["findings"]}
    # 1.x speaks only the initialize handshake; the negotiation fell back to it.
    assert card["negotiation"]["negotiated"] == "2025-11-25"
    assert card["negotiation"]["revisions"]["legacy"] == "ok 2025-11-25"
    assert not card["negotiation"]["revisions"]["2026-07-28"].startswith("ok")
