"""Shortcuts of replay and planning (identity-keyed blob hashes, raw blob reads, adapters over a whole fan-out,
shared event parts) give exactly what the plain paths give, and a replay still catches every difference."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from agents._planning import plan_node
from testbed.agent import CallRecord, NodeResult, RunView, SceneView
from testbed.conventions import ImageSize
from testbed.events import BLOBS_DIR, EVENTS_FILE, BlobStore, CallEvent, ReplayBlobs, read_events
from testbed.events._store import BLOB_MIN_CHARS
from testbed.imaging import encode_png
from testbed.orchestrator import Divergence, replay_experiment
from testbed.workflow import AdapterError, Workflow, apply_adapters, apply_adapters_each

CROP_WORKFLOW = {
    "nodes": [
        {"id": "detect", "call": "det.detect", "args": {"image": "$scene.image"}},
        {
            "id": "crop",
            "call": "crop.crop",
            "args": {"image": "$scene.image", "box": "$item.bbox"},
            "for_each": "$detect.detections",
            "adapters": {"box": {"kind": "box", "from": "xyxy/pixel", "to": "cxcywh/normalized"}},
        },
    ]
}


def _crop_node() -> Any:
    return Workflow.model_validate(CROP_WORKFLOW).nodes[1]


def _view(detections: list[dict[str, Any]]) -> RunView:
    view = RunView(run=0, scene=SceneView(image="SCENE", image_path="/x/scene.png", width=317, height=211), catalog={})
    record = CallRecord(outcome="ok", payload={"detections": detections}, content=[])
    view.results["detect"] = NodeResult(node="detect", calls=(record,), fan_out=False, server="det", tool="detect")
    return view


def _item_by_item(node: Any, bound: list[dict[str, Any]], size: ImageSize) -> list[dict[str, Any]]:
    return [apply_adapters(node, arguments, image_size=size) for arguments in bound]


def test_adapters_over_a_fan_out_give_each_item_the_numbers_it_gets_alone() -> None:
    node, size = _crop_node(), ImageSize(width=317, height=211)
    boxes: list[Any] = [[10, 20.5, 33.25, 71], [0.1, 0.2, 316.9, 210.7], (1.0 / 3, 2.0 / 7, 100.0 / 9, 50.0 / 11)]
    bound = [{"image": "SCENE", "box": box} for box in boxes]
    together = apply_adapters_each(node, bound, image_size=size)
    alone = _item_by_item(node, bound, size)
    assert json.dumps(together) == json.dumps(alone)  # the same floats, to the last bit
    assert bound[0]["box"] == [10, 20.5, 33.25, 71]  # the bound arguments are left as they were
    mixed = [*bound, {"image": "SCENE", "box": [[1, 2, 3, 4], [5, 6, 7, 8]]}, {"image": "SCENE"}]
    assert json.dumps(apply_adapters_each(node, mixed, image_size=size)) == json.dumps(_item_by_item(node, mixed, size))


def test_adapters_over_a_fan_out_fail_on_the_first_item_that_fails_alone() -> None:
    node, size = _crop_node(), ImageSize(width=317, height=211)
    bound: list[dict[str, Any]] = [{"box": [1, 2, 3, 4]}, {"box": [1, 2, 3]}, {"box": "four numbers"}]
    with pytest.raises(AdapterError) as alone:
        _item_by_item(node, bound, size)
    with pytest.raises(AdapterError) as together:
        apply_adapters_each(node, bound, image_size=size)
    assert str(together.value) == str(alone.value)
    assert "[1, 2, 3]" in str(together.value)


def test_a_fan_out_plan_reports_the_failure_item_by_item_planning_meets_first() -> None:
    node = _crop_node()
    good = {"label": "a", "bbox": [1.0, 2.0, 30.0, 40.0]}
    plan = plan_node(node, _view([good, {"label": "b", "bbox": [5.0, 6.0, 70.0, 80.0]}]))
    assert [call.item for call in plan.calls] == [0, 1]
    assert (
        plan.calls[1].arguments["box"]
        == apply_adapters(node, {"box": [5.0, 6.0, 70.0, 80.0]}, image_size=ImageSize(width=317, height=211))["box"]
    )
    malformed, unbound = {"label": "c", "bbox": [1.0, 2.0]}, {"label": "d"}
    adapter_first = plan_node(node, _view([good, malformed, unbound]))
    assert "adapter" in str(adapter_first.skipped)
    binding_first = plan_node(node, _view([good, unbound, malformed]))
    assert "no field 'bbox'" in str(binding_first.skipped)
    assert adapter_first.calls == binding_first.calls == ()


def test_replay_blobs_know_a_string_read_by_itself_and_an_equal_one_by_its_text(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / BLOBS_DIR)
    png = encode_png(np.zeros((4, 5, 3), dtype=np.uint8))
    image = store.put(base64.b64encode(png).decode("ascii"))
    text = store.put("t" * BLOB_MIN_CHARS + "\r\nmiddle\rend")
    view = ReplayBlobs(BlobStore(tmp_path / BLOBS_DIR))
    for digest in (image, text):
        read = view.get(digest)
        assert read == store.get(digest)  # the text blob read as Path.read_text reads it (newlines translated)
        assert view.put(read) == digest
        equal = "".join(list(read))
        assert equal is not read
        assert view.put(equal) == digest
    again = ReplayBlobs(BlobStore(tmp_path / BLOBS_DIR))
    unknown = "u" * BLOB_MIN_CHARS
    assert again.put(unknown) == hashlib.sha256(unknown.encode()).hexdigest()  # nothing read yet: hashed
    read = again.get(text)  # read after a string was put: found both ways
    assert again.put(read) == again.put("".join(list(read))) == text
    assert not (tmp_path / BLOBS_DIR / f"{again.put(unknown)}.txt").exists()  # a replay writes nothing


def _edit_lines(directory: Path, edit: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite the events whose document ``edit`` changes (returns True for)."""
    events_file = directory / EVENTS_FILE
    lines = events_file.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        document = json.loads(line)
        if edit(document):
            lines[index] = json.dumps(document)
    events_file.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_recorded_box_the_adapters_would_not_make_is_caught(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    # A segment answer changed in the recording: the crops the agent plans from it (adapted all at once) are not
    # the recorded crop requests.
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=2)

    def nudge(document: dict[str, Any]) -> bool:
        if document.get("event") != "message" or document.get("run") != 1 or document.get("node") != "segment":
            return False
        result = document["message"].get("result")
        if not isinstance(result, dict) or not result.get("structuredContent"):
            return False
        result["structuredContent"]["instances"][0]["bbox"][0] += 0.5
        return True

    divergence = _divergence_once_edited(tmp_path, nudge)
    assert (divergence.run, divergence.where) == (1, "message crop#0")
    assert divergence.field.startswith("message.params.arguments.box")


def test_a_recorded_payload_the_answer_does_not_hold_is_caught(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    # A call event's payload (shared with the answer's parts when replayed directly) written out and changed.
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=2)
    recorded = next(
        event for event in read_events(tmp_path).events
        if isinstance(event, CallEvent) and event.run == 1 and event.node == "detect"
    )  # fmt: skip
    payload = json.loads(json.dumps(recorded.payload))
    payload["detections"][-1]["score"] = 0.125

    def change(document: dict[str, Any]) -> bool:
        if document.get("event") != "call" or document.get("run") != 1 or document.get("node") != "detect":
            return False
        document["payload"] = payload  # a value in the line wins over the response it was elided for
        return True

    divergence = _divergence_once_edited(tmp_path, change)
    assert (divergence.run, divergence.where) == (1, "call detect#0")
    assert divergence.field.startswith("payload.detections")


def _divergence_once_edited(directory: Path, edit: Callable[[dict[str, Any]], bool]) -> Divergence:
    """Replay the recording in ``directory`` after ``edit``: it must leave the direct path and diverge."""
    _edit_lines(directory, edit)
    report = anyio.run(lambda: replay_experiment(directory))
    assert not report.direct
    assert report.divergence is not None
    return report.divergence
