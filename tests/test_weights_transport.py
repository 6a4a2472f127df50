"""Custom weights (``TESTBED_DETECT_WEIGHTS``) reach the server over every transport, and the header records them.

A server process gets the variable as the testbed process has it; the run
header records, per server, the weights file its configuration names and its
hash (``servers[].weights``), and the experiment's ``weights`` are the ones
configured, not the shipped ones.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import torch

from testbed.events import CallEvent, CallOutcomeKind, ExperimentHeader, LoadedWeights, read_events
from testbed.orchestrator import run_experiment
from testbed.scenario import Scenario, load_scenario_text
from testbed.vision import SHIPPED_MODELS, WEIGHTS_DIR
from testbed.vision._weights import file_sha256

BOUND_S = 300.0
"""Bound on one recording (a server process loads torch and the detector first)."""

SCENARIO = """\
name: weights_detect
version: 1
seed: 0
runs: 1
scene: {synthetic: {min_objects: 1, max_objects: 2}}
servers:
  det: {server: detect-xyxy}
  crop: {server: crop-xywh}
task: {kind: detect_all, node: detect}
agent:
  kind: scripted
  workflow:
    nodes:
      - {id: detect, call: det.detect, args: {image: $scene.image}}
"""
SHIPPED_DETECTOR = WEIGHTS_DIR / SHIPPED_MODELS["detect"]
SHIPPED_SEGMENTER = WEIGHTS_DIR / SHIPPED_MODELS["segment"]


def _record(out: Path, transport: str) -> tuple[ExperimentHeader, CallEvent]:
    scenario: Scenario = load_scenario_text(SCENARIO)

    async def run() -> None:
        with anyio.fail_after(BOUND_S):
            await run_experiment(scenario, out_dir=out, transport=transport, device="cpu")  # type: ignore[arg-type]

    anyio.run(run)
    events = read_events(out).events
    header = events[0]
    assert isinstance(header, ExperimentHeader)
    call = next(event for event in events if isinstance(event, CallEvent) and event.node == "detect")
    return header, call


@pytest.mark.parametrize("transport", ["inprocess", "stdio", "http"])
def test_a_missing_custom_detector_is_what_the_server_loads_and_what_the_header_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    missing = (tmp_path / "no-such-detector.pt").resolve()
    monkeypatch.setenv("TESTBED_DETECT_WEIGHTS", str(missing))

    header, call = _record(tmp_path / "exp", transport)

    # The server reports the weights error naming the path: the variable reached its process.
    assert call.outcome is CallOutcomeKind.TOOL_ERROR
    assert call.error is not None
    assert str(missing) in call.error
    servers = {record.alias: record for record in header.servers}
    assert servers["det"].weights == {"detect": LoadedWeights(path=str(missing), sha256=None)}
    assert servers["crop"].weights == {}, "a cropping server loads no model"
    assert "detect" not in header.weights, "the shipped detector's hash is not recorded for weights never used"
    assert header.weights["segment"] == file_sha256(SHIPPED_SEGMENTER)


@pytest.fixture(scope="module")
def resaved_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped detector saved again with one harmless extra key: the same model, other bytes."""
    checkpoint = torch.load(SHIPPED_DETECTOR, map_location="cpu", weights_only=False)
    checkpoint["testbed_note"] = "re-saved by tests/test_weights_transport.py"
    path = tmp_path_factory.mktemp("weights") / "detector-resaved.pt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("transport", ["inprocess", "stdio", "http"])
def test_a_custom_detector_is_loaded_and_its_hash_recorded_instead_of_the_shipped_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resaved_detector: Path, transport: str
) -> None:
    monkeypatch.setenv("TESTBED_DETECT_WEIGHTS", str(resaved_detector))
    custom = file_sha256(resaved_detector)

    header, call = _record(tmp_path / "exp", transport)

    assert custom != file_sha256(SHIPPED_DETECTOR)
    assert call.outcome is CallOutcomeKind.OK, call.error
    det = next(record for record in header.servers if record.alias == "det")
    assert det.weights == {"detect": LoadedWeights(path=str(resaved_detector.resolve()), sha256=custom)}
    assert header.weights["detect"] == custom
