"""Replay: recorded experiments reproduce without servers; the first differing event is named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

import testbed.vision._model as model_module
from testbed._errors import TestbedError
from testbed.cli import main
from testbed.events import CallEvent, FaultEvent, RunFinished, read_events
from testbed.faults import load_faults
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.scenario import load_scenario

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"


def test_fault_free_experiment_replays_identically_without_loading_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded_v1_copy: Callable[..., Path]
) -> None:
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=3)

    def no_models(*_: object, **__: object) -> None:
        raise AssertionError("replay must not load a model")

    monkeypatch.setattr(model_module.VisionModel, "__init__", no_models)
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert report.divergence is None, str(report.divergence)
    assert report.runs == 3
    assert report.events > 3


def test_replay_names_the_first_event_that_differs(tmp_path: Path, recorded_v1_copy: Callable[..., Path]) -> None:
    recorded_v1_copy("detect_crop", tmp_path, runs=2)
    events_file = tmp_path / "events.jsonl"
    lines = events_file.read_text().splitlines()
    for index, line in enumerate(lines):
        document = json.loads(line)
        if (
            document["event"] == "message"
            and document["run"] == 1
            and document["node"] == "detect"
            and document["direction"] == "s->c"
        ):
            content = document["message"]["result"]["structuredContent"]
            content["detections"] = content["detections"][:-1] or [{"label": "circle", "score": 0.5,
                                                                     "bbox": [0.0, 0.0, 1.0, 1.0]}]  # fmt: skip
            lines[index] = json.dumps(document)
            break
    events_file.write_text("\n".join(lines) + "\n")
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert report.divergence is not None
    assert report.divergence.run == 1
    assert "did not reproduce" in str(report.divergence)


def test_cli_replay_reports_reproduction_and_exits_non_zero_on_divergence(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    recorded_v1_copy("fanout", tmp_path, runs=2)
    result = CliRunner().invoke(main, ["replay", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "reproduced 2 runs" in result.output
    events_file = tmp_path / "events.jsonl"
    text = events_file.read_text().replace('"node":"crop_b","item":0', '"node":"crop_b","item":7', 1)
    events_file.write_text(text)
    assert CliRunner().invoke(main, ["replay", str(tmp_path)]).exit_code != 0


def test_replay_of_another_format_version_says_so(tmp_path: Path, recorded_v1_copy: Callable[..., Path]) -> None:
    recorded_v1_copy("detect_crop", tmp_path, runs=1)
    events_file = tmp_path / "events.jsonl"
    lines = events_file.read_text().splitlines()
    header = json.loads(lines[0])
    header["format_version"] = 99
    events_file.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(TestbedError, match="format version 99"):
        anyio.run(lambda: replay_experiment(tmp_path))


@pytest.mark.slow
def test_faulted_experiment_of_100_runs_replays_identically(tmp_path: Path) -> None:
    scenario = load_scenario(V1 / "faults.yaml")
    in_process = {alias: ref.model_copy(update={"transport": "inprocess"}) for alias, ref in scenario.servers.items()}
    random_faults = [
        {"kind": "delay", "seconds": 0.005, "probability": 0.2, "target": {"server": "det"}},
        {"kind": "duplicate", "probability": 0.1, "target": {"server": "seg", "tool": "segment_image"}},
        {"kind": "reorder", "probability": 0.1, "target": {"server": "crop", "tool": "crop_image"}},
        {"kind": "flip_convention", "to": "xywh/pixel", "probability": 0.1,
         "target": {"server": "det", "tool": "detect", "role": "bounding_box"}},
        {"kind": "evict_handle", "probability": 0.05,
         "target": {"server": "seg", "tool": "load_image", "role": "image_handle"}},
        {"kind": "jsonrpc_error", "probability": 0.05, "target": {"server": "crop", "tool": "crop_image"}},
        {"kind": "timeout", "probability": 0.03, "target": {"server": "crop", "tool": "put_image"}},
    ]  # fmt: skip
    faulted = scenario.model_copy(
        update={"runs": 100, "servers": in_process, "faults": load_faults(random_faults), "deadline_s": 0.5}
    )
    anyio.run(lambda: run_experiment(faulted, out_dir=tmp_path, device="cpu"))
    events = read_events(tmp_path).events
    assert sum(isinstance(e, RunFinished) for e in events) == 100
    assert len({e.kind for e in events if isinstance(e, FaultEvent)}) >= 5
    assert any(isinstance(e, CallEvent) and e.outcome.value == "timeout" for e in events)
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert report.divergence is None, str(report.divergence)


@pytest.mark.slow
def test_faults_scenario_injects_every_kind_over_stdio_and_replays(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    from testbed.faults import FAULT_CATALOG

    recorded_v1_copy("faults", tmp_path, runs=20)
    events = read_events(tmp_path).events
    applied = {e.kind for e in events if isinstance(e, FaultEvent) and not e.detail.startswith("not applicable")}
    assert applied == set(FAULT_CATALOG)
    for event in events:
        if isinstance(event, FaultEvent) and not event.detail.startswith("not applicable"):
            assert tuple(event.expected) == FAULT_CATALOG[event.kind].expected
    outcomes = {e.outcome.value for e in events if isinstance(e, CallEvent)}
    assert {"ok", "timeout", "protocol_error", "transport_closed"} <= outcomes
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert report.divergence is None, str(report.divergence)


@pytest.mark.slow
def test_timed_out_calls_record_whether_the_server_honoured_the_cancellation(tmp_path: Path) -> None:
    scenario = load_scenario(V1 / "faults.yaml")
    in_process = {alias: ref.model_copy(update={"transport": "inprocess"}) for alias, ref in scenario.servers.items()}
    faults = load_faults([{"kind": "timeout", "target": {"server": "det", "tool": "detect"}}])
    timed_out = scenario.model_copy(update={"runs": 1, "servers": in_process, "faults": faults})
    anyio.run(lambda: run_experiment(timed_out, out_dir=tmp_path, device="cpu"))
    [detect] = [e for e in read_events(tmp_path).events if isinstance(e, CallEvent) and e.node == "detect"]
    assert detect.outcome.value == "timeout"
    # The injected timeout withholds the response before the client sees it, so no late answer arrives.
    assert detect.cancel_honoured is True
    others = [e for e in read_events(tmp_path).events if isinstance(e, CallEvent) and e.outcome.value == "ok"]
    assert all(e.cancel_honoured is None for e in others)


def test_replay_recomputes_the_same_violations(tmp_path: Path, recorded_v1_copy: Callable[..., Path]) -> None:
    from testbed.validators import validate_experiment

    recorded_v1_copy("detect_crop_incompatible", tmp_path, runs=3)
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert report.divergence is None, str(report.divergence)
    recorded = validate_experiment(tmp_path).violations
    assert report.violations == len(recorded) > 0
    assert "coords.mismatch" in {v.id for v in recorded}
