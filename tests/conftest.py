"""Shared fixtures, and the markers every test gets from where it lives.

The testbed's cache folder is a fresh temporary one for each test session.
Experiments recorded from ``scenarios/v1`` are recorded once per session and
shared by every module that asks for the same one (``recorded_v1``); a test
that changes an experiment directory asks for its own copy
(``recorded_v1_copy``). Reproduce tests that report the validators' calibration
without testing it share one tiny calibration (``tiny_calibration``), and the
quick ``reproduce cases`` command runs once (``reproduced_cases_quick``). Types
and plain helper functions that tests use by name live in ``tests/_helpers.py``:
no test module imports this file or another test module (``tests/test_layout.py``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from testbed.reproduce import Calibration
    from testbed.scenario import Scenario
    from testbed.scenes import Scene
    from testbed.server_config import ServerConfig
    from testbed.validators import RunRecord
    from tests._helpers import CasesCommand, NetworkAttempts

# Before anything imports Ultralytics: its configuration folder must be ours, never ~/.config.
# So testbed (and tests._helpers, which imports it) is imported inside the fixtures, never at the top.
os.environ.setdefault("TESTBED_HOME", tempfile.mkdtemp(prefix="testbed-home-"))

TESTS = Path(__file__).resolve().parent
V1 = TESTS.parent / "scenarios" / "v1"
QUALITY = TESTS / "quality"

RECORDING_TIMEOUT_S = 900.0
"""Bound on recording one experiment in a fixture (a hung server fails the test instead of the session)."""


# --- markers ---------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/quality is the quality tier (before ``-m`` deselects anything)."""
    for item in items:
        if QUALITY in item.path.parents:
            item.add_marker(pytest.mark.quality)


# --- environment -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def testbed_home() -> Path:
    return Path(os.environ["TESTBED_HOME"])


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """anyio tests run on asyncio only."""
    return "asyncio"


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def network_guard(monkeypatch: pytest.MonkeyPatch) -> NetworkAttempts:
    """Record, and refuse, every attempt to reach a non-loopback address (connect, sendto, DNS).

    Attempts are recorded as well as refused because libraries often swallow
    the error; the test asserts ``guard.attempts == []`` afterwards.
    """
    from tests._helpers import NetworkAttempts

    seen = NetworkAttempts()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_local(address):
            seen.attempts.append(f"connect {address}")
            raise OSError("network access is forbidden in this test")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_local(address):
            seen.attempts.append(f"connect_ex {address}")
            return 111
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: bytes, *args: Any) -> int:
        address = args[-1]
        if not _is_local(address):
            seen.attempts.append(f"sendto {address}")
            raise OSError("network access is forbidden in this test")
        return real_sendto(self, data, *args)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost") and not _is_local((host, 0)):
            seen.attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror("name resolution is forbidden in this test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


# --- the reference servers in process --------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> ServerConfig:
    """Server configuration: CPU inference; weights from TESTBED_*_WEIGHTS when set, else the shipped ones."""
    from testbed.server_config import ServerConfig

    return ServerConfig.from_env(device="cpu")


@pytest.fixture(scope="module")
def scene() -> Scene:
    """A synthetic scene with three or four objects (seed 11), the one the server tests send."""
    from testbed.scenes import SceneSpec, generate_scene

    return generate_scene(SceneSpec(min_objects=3, max_objects=4), 11)


@pytest.fixture(scope="module")
def image_b64(scene: Scene) -> str:
    """``scene``'s image as base64 PNG."""
    from testbed.imaging import encode_png_base64

    return encode_png_base64(scene.image)


# --- recorded experiments --------------------------------------------------------------------


class RecordScenario(Protocol):
    def __call__(self, scenario: Scenario) -> Path: ...


class RecordV1(Protocol):
    def __call__(self, name: str, runs: int, *, transport: str | None = None, **overrides: Any) -> Path: ...


class CopyV1(Protocol):
    def __call__(self, name: str, out: Path, runs: int, *, transport: str | None = None, **overrides: Any) -> Path: ...


class RecordRuns(Protocol):
    def __call__(self, scenario: Scenario) -> list[RunRecord]: ...


def _digest(directory: Path) -> str:
    from testbed.events import EVENTS_FILE

    return hashlib.sha256((directory / EVENTS_FILE).read_bytes()).hexdigest()


def _v1_scenario(name: str, runs: int, *, transport: str | None = None, **overrides: Any) -> Scenario:
    """``scenarios/v1/<name>.yaml`` with ``runs`` runs, every server on ``transport`` (if given), and ``overrides``."""
    from testbed.scenario import load_scenario

    scenario = load_scenario(V1 / f"{name}.yaml")
    if transport is not None:
        servers = {alias: ref.model_copy(update={"transport": transport}) for alias, ref in scenario.servers.items()}
        scenario = scenario.model_copy(update={"servers": servers})
    return scenario.model_copy(update={"runs": runs, **overrides})


@pytest.fixture(scope="session")
def recorded_scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordScenario]:
    """Record a resolved scenario (in process, CPU) at most once per session; returns its experiment directory.

    Recordings are keyed by the scenario's JSON, so the same scenario asked for by
    several modules is recorded once. The directory is shared: read it, never
    change it (``recorded_v1_copy`` gives a private copy). A shared recording
    whose events changed is an error the next time it is asked for, and at the
    end of the session.
    """
    import anyio

    from testbed.orchestrator import run_experiment

    done: dict[str, tuple[Path, str]] = {}

    def changed(out: Path) -> str:
        return f"{out}: a test changed this shared recorded experiment; use recorded_v1_copy for one to change"

    def record(scenario: Scenario) -> Path:
        key = json.dumps(scenario.model_dump(mode="json"), sort_keys=True)
        if key in done:
            out, digest = done[key]
            assert _digest(out) == digest, changed(out)
            return out
        out = tmp_path_factory.mktemp(re.sub(r"[^\w-]", "_", f"recorded-{scenario.name}-{scenario.runs}")) / "exp"

        async def run() -> None:
            with anyio.fail_after(RECORDING_TIMEOUT_S):
                await run_experiment(scenario, out_dir=out, device="cpu")

        anyio.run(run)
        done[key] = (out, _digest(out))
        return out

    yield record
    altered = [changed(out) for out, digest in done.values() if _digest(out) != digest]
    assert not altered, altered


@pytest.fixture(scope="session")
def recorded_v1(recorded_scenario: RecordScenario) -> RecordV1:
    """``recorded_v1(name, runs, transport=None, **overrides)``: ``scenarios/v1/<name>.yaml`` recorded once per session.

    ``transport`` switches every server (the scenario's own otherwise); ``overrides``
    replace scenario fields (``faults=load_faults(...)``, ``seed=...``). Returns the
    shared experiment directory: read only.
    """

    def record(name: str, runs: int, *, transport: str | None = None, **overrides: Any) -> Path:
        return recorded_scenario(_v1_scenario(name, runs, transport=transport, **overrides))

    return record


@pytest.fixture(scope="session")
def recorded_v1_copy(recorded_v1: RecordV1) -> CopyV1:
    """``recorded_v1_copy(name, out, runs, ...)``: a private copy at ``out`` of ``recorded_v1(name, runs, ...)``.

    For tests that change the experiment directory (edit its events, write a report into it).
    """

    def copy(name: str, out: Path, runs: int, *, transport: str | None = None, **overrides: Any) -> Path:
        shutil.copytree(recorded_v1(name, runs, transport=transport, **overrides), out, dirs_exist_ok=True)
        return out

    return copy


@pytest.fixture(scope="session")
def recorded_runs(recorded_scenario: RecordScenario) -> RecordRuns:
    """``recorded_runs(scenario)``: one fresh :class:`RunRecord` list per call, from the shared recording."""
    from testbed.events import BLOBS_DIR, BlobStore, read_events
    from testbed.validators import split_runs

    def runs(scenario: Scenario) -> list[RunRecord]:
        out = recorded_scenario(scenario)
        return split_runs(read_events(out).events, BlobStore(out / BLOBS_DIR))

    return runs


# --- the validators' calibration beside reproduce reports ------------------------------------


@pytest.fixture(scope="session")
def tiny_calibration(tmp_path_factory: pytest.TempPathFactory) -> Calibration:
    """The validators' calibration at two runs per fault kind, measured once per session.

    For reproduce tests that report a calibration but do not test it (they pass it as
    ``calibration=``). Calibration measured through the real path is tested in
    tests/test_reproduce_paper.py and tests/test_reproduce_cases_calibration.py.
    """
    from testbed.reproduce import calibrate

    return calibrate(tmp_path_factory.mktemp("tiny-calibration") / "calibration", runs=2, seed=3)


@pytest.fixture(scope="session")
def reproduced_cases_quick(tmp_path_factory: pytest.TempPathFactory) -> CasesCommand:
    """The quick case studies as a user runs them, with their own calibration, once per session: read only."""
    from click.testing import CliRunner

    from testbed.cli import main
    from tests._helpers import CasesCommand

    out = tmp_path_factory.mktemp("reproduce-cases") / "out"
    arguments = ["reproduce", "cases", "--quick", "--seed", "3", "--calibration-runs", "2", "--out", str(out)]
    result = CliRunner().invoke(main, arguments)
    return CasesCommand(out, result.exit_code, result.output)


@pytest.fixture
def file_reading_scenario() -> str:
    """A scenario whose detector reads the scene from the sandbox, by the ``$scene.image_path`` the agent passes."""
    return """
name: detect_from_file
version: 1
description: a detector that reads the scene from the sandbox.
seed: 0
runs: 2
scene:
  synthetic: {min_objects: 1, max_objects: 2}
servers:
  det: {server: detect-xywh-bl}
task: {kind: none}
agent:
  kind: scripted
  workflow:
    nodes:
      - id: detect
        call: det.detect_file
        args: {path: $scene.image_path}
expect: []
"""
