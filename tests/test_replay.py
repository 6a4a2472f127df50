"""Replay: recorded experiments reproduce without servers; the first differing event is named."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
import pytest
from click.testing import CliRunner

import testbed.orchestrator._replay as replay_module
import testbed.vision._model as model_module
from testbed._errors import TestbedError
from testbed.cli import main
from testbed.events import (
    BlobStore,
    CallEvent,
    Direction,
    EventLog,
    FaultEvent,
    MessageEvent,
    ReplayBlobs,
    RunFinished,
    RunStarted,
    externalize,
    internalize,
    internalized,
    read_events,
)
from testbed.faults import load_faults
from testbed.imaging import encode_png
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.orchestrator._direct_replay import UndecodedScene, UnreplayableError
from testbed.orchestrator._replay import recorded_scene
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
    assert report.direct  # served without MCP sessions: nothing in a fault-free recording needs the wire


def test_replay_reports_where_its_time_went(tmp_path: Path, recorded_v1_copy: Callable[..., Path]) -> None:
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=2)
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert set(report.phases_s) == {"read", "replay", "validate"}
    assert all(seconds > 0 for seconds in report.phases_s.values())
    assert sum(report.phases_s.values()) <= report.seconds  # phases of the whole, which also cleans up


def test_replay_names_the_first_event_that_differs(tmp_path: Path, recorded_v1_copy: Callable[..., Path]) -> None:
    recorded_v1_copy("detect_crop", tmp_path, runs=2)
    events = read_events(tmp_path).events  # edited as read, then written back as the recorder writes events
    for index, event in enumerate(events):
        if (
            isinstance(event, MessageEvent)
            and event.run == 1
            and event.node == "detect"
            and event.direction is Direction.SERVER_TO_CLIENT
        ):
            result = event.message["result"]
            content = result["structuredContent"]
            detections = content["detections"][:-1] or [{"label": "circle", "score": 0.5, "bbox": [0.0, 0.0, 1.0, 1.0]}]
            edited = {**result, "structuredContent": {**content, "detections": detections}}
            events[index] = event.model_copy(update={"message": {**event.message, "result": edited}})
            break
    else:
        pytest.fail("no answer to run 1's detect call")
    (tmp_path / "events.jsonl").unlink()
    log = EventLog(tmp_path)
    log.create(events)
    log.close()
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert report.divergence is not None
    assert report.divergence.run == 1
    assert "did not reproduce" in str(report.divergence)
    assert not report.direct  # the direct replay found the difference and left naming it to the session replay


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
    assert not report.direct  # faults, timeouts and restarts are replayed through MCP sessions


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


@pytest.mark.parametrize(
    ("field", "value"),
    [("clock", 99.0), ("adapters", ["made up"]), ("payload", {"detections": []}), ("outcome", "tool_error")],
)
def test_a_recorded_call_that_its_replay_does_not_match_is_a_divergence(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path], field: str, value: object
) -> None:
    recorded_v1_copy("detect_crop", tmp_path, runs=2)
    events_file = tmp_path / "events.jsonl"
    lines = events_file.read_text().splitlines()
    for index, line in enumerate(lines):
        document = json.loads(line)
        if document["event"] == "call" and document["run"] == 1 and document["node"] == "detect":
            document[field] = value
            lines[index] = json.dumps(document)
            break
    events_file.write_text("\n".join(lines) + "\n")
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert report.divergence is not None
    assert (report.divergence.run, report.divergence.where) == (1, "call detect#0")
    assert report.divergence.field.split(".")[0].split("[")[0] == field


def test_direct_and_session_replay_report_the_same(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_v1_copy("detect_crop_incompatible", tmp_path, runs=2)
    direct = anyio.run(lambda: replay_experiment(tmp_path))

    def refuse(*_: object, **__: object) -> None:
        raise UnreplayableError("test: replay through sessions")

    monkeypatch.setattr(replay_module, "replay_directly", refuse)
    sessions = anyio.run(lambda: replay_experiment(tmp_path))
    assert direct.direct
    assert not sessions.direct
    assert direct.divergence is None
    assert sessions.divergence is None
    assert (direct.runs, direct.events, direct.violations) == (sessions.runs, sessions.events, sessions.violations)
    assert direct.violations > 0


def test_replay_blobs_hash_as_a_blob_store_stores_and_write_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    image = base64.b64encode(encode_png(np.zeros((4, 6, 3), dtype=np.uint8))).decode("ascii")
    text = "x" * 600
    digests = [store.put(image), store.put(text)]
    stored = sorted(path.name for path in store.root.iterdir())
    replay = ReplayBlobs(store)
    assert replay.get(digests[0]) == image
    assert [replay.put(image), replay.put(text), replay.put("y" * 600)][:2] == digests
    assert sorted(path.name for path in store.root.iterdir()) == stored


def test_internalized_restores_blobs_and_shares_the_rest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    big = "z" * 700
    untouched = {"boxes": [[1.0, 2.0, 3.0, 4.0]], "label": "circle"}
    value = {"content": [{"text": big}], "structured": untouched}
    recorded = externalize(value, store)
    restored = internalized(recorded, store)
    assert restored == internalize(recorded, store) == value
    assert restored["structured"] is recorded["structured"]
    assert internalized(untouched, store) is untouched


def test_a_recorded_scene_read_lazily_holds_what_the_decoded_one_holds(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=1)
    [started] = [event for event in read_events(tmp_path).events if isinstance(event, RunStarted)]
    store = BlobStore(tmp_path / "blobs")
    _, decoded = recorded_scene(started, store)
    lazy = UndecodedScene(started, ReplayBlobs(store))
    assert (lazy.width, lazy.height, lazy.source) == (decoded.width, decoded.height, decoded.source)
    assert np.array_equal(lazy.image, decoded.image)
    assert [(o.class_name, o.box_xyxy) for o in lazy.objects] == [(o.class_name, o.box_xyxy) for o in decoded.objects]
    for mine, theirs in zip(lazy.objects, decoded.objects, strict=True):
        assert mine.mask is not None
        assert theirs.mask is not None
        assert np.array_equal(mine.mask, theirs.mask)


def _with_abandoned_discover_probe(events_file: Path) -> None:
    """Rewrite each server's handshake as a live client writes it when its ``server/discover`` probe times out:
    it falls back to ``initialize`` (refused with -32022), probes again, then lists its tools; the first probe's
    answer arrives late."""
    lines = [json.loads(line) for line in events_file.read_text().splitlines()]
    handshake = [d for d in lines if d["event"] == "message" and d["run"] is None]
    rewritten = []
    for server in dict.fromkeys(d["server"] for d in handshake):
        sent = {d["message"]["method"]: d for d in handshake if d["server"] == server and d["direction"] == "c->s"}
        answers = {d["message"]["id"]: d for d in handshake if d["server"] == server and d["direction"] == "s->c"}
        discover, listing = sent["server/discover"], sent["tools/list"]
        discovered, listed = answers[discover["message"]["id"]], answers[listing["message"]["id"]]
        versions = {"supported": ["2026-07-28"], "requested": "2025-11-25"}
        refusal = {"code": -32022, "message": "initialize refused", "data": versions}
        sequence = [
            (discover, {**discover["message"], "id": 1}),
            (discover, {"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {}}),
            (discovered, {**discovered["message"], "id": 1}),
            (discovered, {"jsonrpc": "2.0", "id": 2, "error": refusal}),
            (discover, {**discover["message"], "id": 3}),
            (discovered, {**discovered["message"], "id": 3}),
            (listing, {**listing["message"], "id": 4}),
            (listed, {**listed["message"], "id": 4}),
        ]
        rewritten += [{**template, "seq": seq, "message": message} for seq, (template, message) in enumerate(sequence)]
    others = [d for d in lines if not (d["event"] == "message" and d["run"] is None)]
    events_file.write_text("\n".join(json.dumps(d) for d in [others[0], *rewritten, *others[1:]]) + "\n")


def test_a_recording_whose_discover_probe_timed_out_replays_both_ways(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_v1_copy("detect_crop", tmp_path, runs=2)
    _with_abandoned_discover_probe(tmp_path / "events.jsonl")
    direct = anyio.run(lambda: replay_experiment(tmp_path))
    assert direct.direct
    assert direct.divergence is None, str(direct.divergence)

    def refuse(*_: object, **__: object) -> None:
        raise UnreplayableError("test: replay through sessions")

    monkeypatch.setattr(replay_module, "replay_directly", refuse)
    sessions = anyio.run(lambda: replay_experiment(tmp_path))
    assert sessions.divergence is None, str(sessions.divergence)
    assert sessions.events == direct.events
