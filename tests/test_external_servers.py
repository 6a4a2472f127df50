"""Any MCP server in a scenario: an external ``command`` (stdio) or ``url`` (streamable HTTP).

The external server is ``tests/fixtures/external_detector.py``, a real separate
process built on the MCP SDK alone. Faults, recording, validation, replay and
resume work for it exactly as for the testbed's own servers; replay needs
neither the script nor the registry; a server that cannot start is one line
naming its alias within a bound, and leaves the experiment directory as it was.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

import testbed.transport._connect as connect_module
from testbed._errors import TestbedError
from testbed.events import BLOBS_DIR, EVENTS_FILE, BlobStore, ExperimentHeader, FaultEvent, RunFinished, read_events
from testbed.metrics import summarize
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.protocol import load_truth_file, truth_json_schema, write_truth_json_schema
from testbed.registry import Registry
from testbed.report import render_terminal, write_report
from testbed.scenario import Scenario, ScenarioError, load_scenario
from testbed.transport import free_port
from testbed.validators import (
    CATALOG,
    TRUTH_READERS,
    RunRecord,
    registered_validators,
    split_runs,
    validate_experiment,
)

TESTS = Path(__file__).resolve().parent
FIXTURE = TESTS / "fixtures" / "external_detector.py"
TRUTH_SCHEMA_FILE = TESTS.parent / "scenarios" / "truth.schema.json"
RUNS = 5
BOUND_S = 30.0
"""Bound on any one recording here (each is a few runs of a light server)."""
POLL_S = 0.05

SCENARIO = """\
name: external_detect_crop
version: 1
description: an external detector's [cx, cy, w, h] fractions -> crop-xywh, with no adapter.
seed: 0
runs: {runs}
deadline_s: 3
scene: {{synthetic: {{min_objects: 1, max_objects: 1, max_distractors: 0, background: gradient}}}}
servers:
  det: {det}
  crop: {{server: crop-xywh}}
task: {{kind: detect_all, node: detect}}
agent:
  kind: scripted
  workflow:
    nodes:
      - {{id: detect, call: det.detect, args: {{image: $scene.image}}}}
      - {{id: crop, call: crop.crop, for_each: $detect.detections, args: {{image: $scene.image, box: $item.box}}}}
faults: {faults}
"""

FAULTS = """
  - {kind: truncate, runs: [1], target: {server: det, tool: detect}}
  - {kind: flip_convention, to: xywh/pixel, runs: [2], target: {server: det, tool: detect, path: "detections[*].box"}}
  - {kind: kill, runs: [3], target: {server: det, tool: detect}}"""

EXPECTED = {
    (0, "coords.crop_misses_object"),
    (0, "coords.mismatch"),
    (1, "proto.malformed_message"),
    (1, "proto.timeout"),
    (2, "coords.out_of_bounds"),
    (3, "proto.transport_closed"),
    (4, "coords.crop_misses_object"),
    (4, "coords.mismatch"),
}
"""(run, violation ID) of the faulted pipeline: the unadapted edge breaks every clean run; each fault its own run."""

TRUTH_FILE = """\
name: external-detector
kind: detection
summary: One box around the saturated pixels, [cx, cy, w, h] as fractions of the image.
declares_conventions: false
tools:
  - name: detect
    schema_style: full
    box_convention: {format: cxcywh, units: normalized}
    inputs: {image: image}
    paths: {detections: detections, bounding_box: "detections[*].box"}
"""


def _command(script: Path, *flags: str) -> str:
    return json.dumps({"command": [sys.executable, str(script), *flags]})


def _scenario(folder: Path, det: str, *, runs: int = RUNS, faults: str = FAULTS) -> Scenario:
    path = folder / "scenario.yaml"
    path.write_text(SCENARIO.format(runs=runs, det=det, faults=faults or "[]"), encoding="utf-8")
    return load_scenario(path)


def _record(scenario: Scenario, out: Path, *, runs: int | None = None) -> None:
    async def run() -> None:
        with anyio.fail_after(BOUND_S * 4):
            await run_experiment(scenario.model_copy(update={"runs": runs or scenario.runs}), out_dir=out, device="cpu")

    anyio.run(run)


def _kill_and_resume(scenario: Scenario, out: Path) -> None:
    """Record two runs, cut the log as a SIGKILL mid-write would, then let a new process finish the experiment."""
    _record(scenario, out, runs=2)
    events = out / EVENTS_FILE
    lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
    events.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2], encoding="utf-8")
    _record(scenario, out)


def _header(out: Path) -> ExperimentHeader:
    header = read_events(out).events[0]
    assert isinstance(header, ExperimentHeader)
    return header


def _found(out: Path) -> set[tuple[int, str]]:
    return {(violation.run, violation.id) for violation in validate_experiment(out).violations}


def _finished_runs(out: Path) -> list[int]:
    return [event.run for event in read_events(out).events if isinstance(event, RunFinished)]


@pytest.fixture
def offline_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything looks a server up in the registry or starts or reaches a server."""

    def refused(*_: object, **__: object) -> Any:
        raise AssertionError("offline replay looked up, started or reached a server")

    monkeypatch.setattr(Registry, "server", refused)
    for name in ("stdio_client", "streamable_http_client", "InMemoryTransport"):
        monkeypatch.setattr(connect_module, name, refused)
    monkeypatch.setattr(subprocess, "Popen", refused)


# --- a command server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def command_experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An experiment with the external detector as a command (a private copy of the script), killed after two
    runs and resumed; returns (its directory, the script)."""
    folder = tmp_path_factory.mktemp("command")
    script = folder / "external_detector.py"
    shutil.copyfile(FIXTURE, script)
    out = folder / "exp"
    _kill_and_resume(_scenario(folder, _command(script)), out)
    return out, script


def test_a_command_server_is_recorded_with_its_command_and_in_declared_only_mode(
    command_experiment: tuple[Path, Path],
) -> None:
    out, script = command_experiment
    records = {record.alias: record for record in _header(out).servers}

    det, crop = records["det"], records["crop"]
    assert det.command == [sys.executable, str(script)]
    assert det.url is None
    assert det.server == f"command '{sys.executable} {script}'"
    assert det.transport == "stdio"
    assert det.server_info is not None
    assert det.server_info["name"] == "external-detector"
    assert (det.truth, det.truth_mode, det.weights) == (None, "declared", {})
    assert (crop.server, crop.truth_mode, crop.command) == ("crop-xywh", "truth", None)


def test_faults_on_a_command_server_cause_their_expected_violations(command_experiment: tuple[Path, Path]) -> None:
    out, _ = command_experiment
    faults = [event for event in read_events(out).events if isinstance(event, FaultEvent)]

    assert [(fault.run, fault.kind, fault.applied) for fault in faults] == [
        (1, "truncate", True),
        (2, "flip_convention", True),
        (3, "kill", True),
    ]
    assert "from cxcywh/normalized/xy/top_left" in faults[1].detail, "the declared convention is the one flipped"
    assert _found(out) == EXPECTED


def test_a_killed_experiment_with_a_command_server_resumes_with_every_run_recorded_once(
    command_experiment: tuple[Path, Path],
) -> None:
    out, _ = command_experiment

    assert _finished_runs(out) == list(range(RUNS))
    assert (out / "servers" / "det.stderr.log").exists()


def test_offline_replay_needs_neither_the_script_nor_any_registered_server(
    command_experiment: tuple[Path, Path], offline_only: None
) -> None:
    out, script = command_experiment
    hidden = script.with_name("moved-away.py")
    script.rename(hidden)
    try:
        report = anyio.run(lambda: replay_experiment(out))
    finally:
        hidden.rename(script)

    assert report.divergence is None, str(report.divergence)
    assert report.runs == RUNS
    assert report.violations == len(validate_experiment(out).violations)


def test_the_report_states_which_validators_ran_in_which_truth_mode(
    command_experiment: tuple[Path, Path], tmp_path: Path
) -> None:
    out, _ = command_experiment
    summary = summarize(validate_experiment(out), source=str(out))
    console = Console(record=True, width=400)
    render_terminal(summary, console)
    files = write_report(summary, tmp_path / "report")

    terminal = console.export_text()
    markdown = files.markdown.read_text(encoding="utf-8")
    page = files.html.read_text(encoding="utf-8")
    for text in (terminal, markdown, page):
        assert "coords.out_of_bounds" in text
        assert "perm.path_outside_sandbox" in text
        assert "det (command " in text
        assert ": declared, declared only: what its tools/list declares" in text
        assert "crop (crop-xywh): truth, its truth manifest" in text


def test_truth_readers_names_exactly_the_validators_that_read_truth_manifests(
    command_experiment: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = command_experiment
    records = split_runs(read_events(out).events, BlobStore(out / BLOBS_DIR))
    reading: set[str] = set()
    current: list[str] = []
    original = RunRecord.truth

    def watched(self: RunRecord, alias: str) -> Any:
        reading.update(current)
        return original(self, alias)

    monkeypatch.setattr(RunRecord, "truth", watched)
    builtin = [spec for spec in registered_validators() if spec.origin.distribution == "mcp-vision-testbed"]
    for spec in builtin:
        current[:] = [spec.name]
        for record in records:
            list(spec.check(dataclasses.replace(record)))  # a fresh record: nothing memoized by another validator

    multi_run = {"memory.handle_out_of_scope", "memory.unbounded_store"}  # checks over several runs, not registered
    unexercised = {"coords.scale_mismatch"}  # no measure tool in this experiment: tests/test_cases.py covers it
    assert reading == set(TRUTH_READERS) - multi_run - unexercised
    assert set(TRUTH_READERS) <= set(CATALOG)


# --- a URL server ----------------------------------------------------------------------------------


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "the external detector exited before it listened"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=POLL_S).close()
            return
        except OSError:
            time.sleep(POLL_S)
    raise AssertionError(f"nothing listened on 127.0.0.1:{port} within {BOUND_S:.0f}s")


@pytest.fixture(scope="module")
def http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The external detector serving streamable HTTP on a free loopback port, for this module."""
    port = free_port()
    log = (tmp_path_factory.mktemp("http") / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(FIXTURE), "--http", str(port)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    try:
        _wait_listening(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def url_experiment(http_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("url")
    out = folder / "exp"
    _kill_and_resume(_scenario(folder, json.dumps({"url": http_url})), out)
    return out


def test_a_url_server_is_recorded_validated_and_resumed_like_a_command_server(
    url_experiment: Path, http_url: str
) -> None:
    det = next(record for record in _header(url_experiment).servers if record.alias == "det")

    assert (det.url, det.command, det.server, det.transport) == (http_url, None, f"url {http_url}", "http")
    assert det.truth_mode == "declared"
    assert _finished_runs(url_experiment) == list(range(RUNS))
    assert _found(url_experiment) == EXPECTED


def test_offline_replay_of_a_url_server_reaches_no_server(url_experiment: Path, offline_only: None) -> None:
    report = anyio.run(lambda: replay_experiment(url_experiment))

    assert report.divergence is None, str(report.divergence)
    assert report.runs == RUNS


# --- truth files and declared-only mode --------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "truth", "mode", "expected"),
    [
        ((), False, "declared", {"coords.mismatch", "coords.crop_misses_object"}),
        (("--undeclared",), True, "truth", {"coords.mismatch", "coords.crop_misses_object", "coords.undeclared"}),
        (("--undeclared",), False, "none", {"coords.mismatch", "coords.crop_misses_object"}),
    ],
    ids=["declares-its-convention", "declares-nothing-with-a-truth-file", "declares-nothing-without-one"],
)
def test_truth_reading_validators_run_on_the_truth_file_else_on_declarations_else_skip_the_server(
    tmp_path: Path, flags: tuple[str, ...], truth: bool, mode: str, expected: set[str]
) -> None:
    (tmp_path / "det.truth.yaml").write_text(TRUTH_FILE, encoding="utf-8")
    det = {"command": [sys.executable, str(FIXTURE), *flags], **({"truth": "det.truth.yaml"} if truth else {})}
    faults = "\n" + FAULTS.splitlines()[2].replace("runs: [2]", "runs: [1]")  # flip_convention alone, in run 1
    out = tmp_path / "exp"
    _record(_scenario(tmp_path, json.dumps(det), runs=2, faults=faults), out)

    record = next(record for record in _header(out).servers if record.alias == "det")
    assert record.truth_mode == mode
    assert (record.truth is not None) == truth
    found = _found(out)
    assert {violation_id for run, violation_id in found if run == 0} == expected
    # Flipped from the convention the truth file or the declarations give, the boxes are off the image read in
    # it; with neither, the fault cannot tell what to flip from, and no validator reads the server's boxes.
    assert ((1, "coords.out_of_bounds") in found) == (mode != "none")


def test_a_truth_file_that_does_not_match_its_schema_is_one_line_naming_the_file_and_the_field(
    tmp_path: Path,
) -> None:
    truth = tmp_path / "det.truth.yaml"
    truth.write_text(TRUTH_FILE.replace("units: normalized", "units: fractions"), encoding="utf-8")

    with pytest.raises(ScenarioError) as caught:
        _scenario(tmp_path, json.dumps({"command": ["server"], "truth": "det.truth.yaml"}))
    message = str(caught.value)
    assert "\n" not in message
    assert f"{truth}:8: tools[0].box_convention.units: input should be" in message
    assert "servers.det.truth" in message


def test_a_truth_file_describing_a_tool_the_server_lacks_is_refused_when_it_starts(tmp_path: Path) -> None:
    extra_tool = "  - {name: segment, schema_style: full}\n"
    (tmp_path / "det.truth.yaml").write_text(TRUTH_FILE + extra_tool, encoding="utf-8")
    det = {"command": [sys.executable, str(FIXTURE)], "truth": "det.truth.yaml"}
    scenario = _scenario(tmp_path, json.dumps(det), runs=1, faults="")

    with pytest.raises(TestbedError, match=r"^server 'det' .*describes 'segment', which the server does not declare"):
        _record(scenario, tmp_path / "exp")


@pytest.mark.parametrize(
    ("det", "field"),
    [
        ({"command": ["server"], "transport": "http"}, "a command server speaks stdio, not 'http'"),
        ({"url": "http://127.0.0.1:9/mcp", "transport": "inprocess"}, "a url server speaks http, not 'inprocess'"),
        ({"command": ["server"], "url": "http://127.0.0.1:9/mcp"}, "give exactly one of 'server'"),
        ({"url": "http://127.0.0.1:9/mcp", "env": {"A": "1"}}, "env applies to a command server only"),
    ],
)
def test_a_contradictory_external_server_entry_is_one_line_naming_its_field(
    tmp_path: Path, det: dict[str, Any], field: str
) -> None:
    with pytest.raises(ScenarioError, match=r"servers\.det") as caught:
        _scenario(tmp_path, json.dumps(det), faults="")
    assert field in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_committed_truth_json_schema_is_up_to_date_and_checks_the_example(tmp_path: Path) -> None:
    written = write_truth_json_schema(tmp_path / "truth.schema.json")
    (tmp_path / "det.truth.yaml").write_text(TRUTH_FILE, encoding="utf-8")

    assert TRUTH_SCHEMA_FILE.read_text() == written.read_text(), "run testbed.protocol.write_truth_json_schema"
    assert load_truth_file(tmp_path / "det.truth.yaml").tools[0].name == "detect"
    assert truth_json_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# --- servers that cannot start -------------------------------------------------------------------

_HANG_BOUND_S = 3.0
"""The startup bound of the tests that wait it out (the default, ``EXTERNAL_STARTUP_TIMEOUT_S``, is 30 s)."""


def _silent_listener() -> tuple[socket.socket, str]:
    """A loopback socket that accepts connections and never answers a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("command not found", "cannot start: command 'no-such-mcp-server' not found"),
        ("exits at once", "failed to start: MCPError: Connection closed; its stderr: external_detector: exiting"),
        ("non-MCP output on stdout", "other than JSON-RPC on stdout: 'external_detector 1.0 ready, listening"),
        ("hangs during initialize", f"did not start within {_HANG_BOUND_S:.0f}s"),
        ("url with nothing listening", "failed to start: ConnectError"),
        ("url that never answers", f"did not start within {_HANG_BOUND_S:.0f}s"),
    ],
)
def test_an_external_server_that_cannot_start_is_one_line_naming_its_alias_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, message: str
) -> None:
    monkeypatch.setattr(connect_module, "EXTERNAL_STARTUP_TIMEOUT_S", _HANG_BOUND_S)
    listener, silent_url = _silent_listener()
    det = {
        "command not found": {"command": ["no-such-mcp-server", "--stdio"]},
        "exits at once": {"command": [sys.executable, str(FIXTURE), "--misbehave", "exit"]},
        "non-MCP output on stdout": {"command": [sys.executable, str(FIXTURE), "--misbehave", "garbage"]},
        "hangs during initialize": {"command": [sys.executable, str(FIXTURE), "--misbehave", "hang"]},
        "url with nothing listening": {"url": f"http://127.0.0.1:{free_port()}/mcp"},
        "url that never answers": {"url": silent_url},
    }[case]
    scenario = _scenario(tmp_path, json.dumps(det), runs=1, faults="")
    out = tmp_path / "exp"

    started = time.monotonic()
    try:
        with pytest.raises(TestbedError) as caught:
            _record(scenario, out)
    finally:
        listener.close()
    elapsed = time.monotonic() - started

    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("server 'det' (")
    assert message in text
    assert elapsed < _HANG_BOUND_S + 1.0, f"{case}: {elapsed:.1f}s"
    assert not (out / EVENTS_FILE).exists()


def test_resuming_with_a_server_that_no_longer_starts_keeps_every_recorded_run(tmp_path: Path) -> None:
    script = tmp_path / "external_detector.py"
    shutil.copyfile(FIXTURE, script)
    scenario = _scenario(tmp_path, _command(script), runs=3, faults="")
    out = tmp_path / "exp"
    _record(scenario, out, runs=2)
    events = out / EVENTS_FILE
    lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
    events.write_text("".join(lines[:-1]), encoding="utf-8")  # killed before "finished": two runs to keep
    before = events.read_bytes()
    script.write_text("import sys\nprint('broken: no server here', file=sys.stderr)\nsys.exit(3)\n", encoding="utf-8")

    with pytest.raises(TestbedError, match=r"^server 'det' .* failed to start: .*its stderr: broken: no server here$"):
        _record(scenario, out)

    assert events.read_bytes() == before
    assert _finished_runs(out) == [0, 1]
