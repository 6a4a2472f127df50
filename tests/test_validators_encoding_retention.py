"""``mask.encoding_mismatch`` and ``memory.retention_exceeded`` on real recorded runs (in-process, two runs each).

The positive cases are the v1 scenarios built to show each ID; the negative
cases are their clean twins and recorded runs edited the way a different
workflow or server would have recorded them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.events import BLOBS_DIR, BlobStore, CallEvent, CallOutcomeKind, read_events
from testbed.validators import RunRecord, Violation, split_runs
from testbed.validators._mask import check_encoding_mismatch
from testbed.validators._memory import check_handle_expired, check_retention_exceeded

SCENARIOS = (
    "segment_crop_masked",
    "segment_polygon_crop_masked",
    "segment_polygon_crop_masked_incompatible",
    "detect_crop_ttl",
    "detect_segment_crop_ttl",
)


@pytest.fixture(scope="module")
def recorded(recorded_v1: Callable[..., Path]) -> dict[str, list[RunRecord]]:
    found = {}
    for name in SCENARIOS:
        out = recorded_v1(name, 2)
        found[name] = split_runs(read_events(out).events, BlobStore(out / BLOBS_DIR))
    return found


def calls_of(records: list[RunRecord], node: str) -> list[CallEvent]:
    return [call for record in records for _, call in record.calls() if call.node == node]


def mismatches(records: list[RunRecord]) -> list[Violation]:
    return [v for record in records for v in check_encoding_mismatch(record)]


def retained(records: list[RunRecord]) -> list[Violation]:
    return [v for record in records for v in check_retention_exceeded(record)]


def with_cut_node(record: RunRecord, **fields: Any) -> RunRecord:
    """The run as if its workflow's cut node had been written with ``fields`` (the calls stay as recorded)."""
    scenario = copy.deepcopy(record.header.scenario)
    for node in scenario["agent"]["workflow"]["nodes"]:
        if node["id"] == "cut":
            node.update(fields)
    header = record.header.model_copy(update={"scenario": scenario})
    return RunRecord(header, record.started, record.events, record.blobs, record.servers)


def with_adapter(record: RunRecord, adapter: dict[str, Any]) -> RunRecord:
    """The run as if its workflow had declared ``adapter`` on the cut node's mask argument."""
    return with_cut_node(record, adapters={"mask": adapter})


def with_calls(record: RunRecord, node: str, **update: Any) -> RunRecord:
    """The run with every call of ``node`` changed by ``update`` (e.g. the server refused them)."""
    events = tuple(
        event.model_copy(update=update) if isinstance(event, CallEvent) and event.node == node else event
        for event in record.events
    )
    return RunRecord(record.header, record.started, events, record.blobs, record.servers)


# --- mask.encoding_mismatch -----------------------------------------------------------------


def test_normalized_polygons_sent_to_a_coco_rle_reader_are_reported_as_mask_encoding_mismatch(
    recorded: dict[str, list[RunRecord]],
) -> None:
    runs = recorded["segment_polygon_crop_masked_incompatible"]
    cuts = calls_of(runs, "cut")
    assert cuts
    assert all(call.outcome is CallOutcomeKind.TOOL_ERROR for call in cuts)  # the reader refused them
    violations = mismatches(runs)
    assert [(v.run, v.item) for v in violations] == [(call.run, call.item) for call in cuts]
    assert {(v.server, v.node) for v in violations} == {("cut", "cut")}
    assert all(
        v.detail == "edge segment.results[*].polygons -> cut.mask: value is polygon/normalized@image"
        " but crop_mask reads coco_rle@image"
        for v in violations
    )
    assert all(len(v.evidence) == 2 for v in violations)  # the producing call and the reading call


def test_a_mask_picked_by_index_is_reported_as_mask_encoding_mismatch_but_a_value_from_another_path_is_not(
    recorded: dict[str, list[RunRecord]],
) -> None:
    run = recorded["segment_polygon_crop_masked_incompatible"][0]
    by_index = with_cut_node(run, args={"image": "$scene.image", "mask": "$segment.results[0].polygons"})
    violations = mismatches([by_index])
    assert len(violations) == len(calls_of([run], "cut"))
    assert all(v.detail.startswith("edge segment.results[0].polygons -> cut.mask: ") for v in violations)
    not_masks = with_cut_node(run, args={"image": "$scene.image", "mask": "$item.category"})
    assert mismatches([not_masks]) == []


def test_masks_in_the_readers_encoding_or_through_a_matching_adapter_are_not_reported_as_mask_encoding_mismatch(
    recorded: dict[str, list[RunRecord]],
) -> None:
    for name in ("segment_crop_masked", "segment_polygon_crop_masked"):
        runs = recorded[name]
        assert calls_of(runs, "cut"), name
        assert all(call.outcome is CallOutcomeKind.OK for call in calls_of(runs, "cut")), name
        assert mismatches(runs) == [], name


def test_an_adapter_that_misreads_the_producers_masks_is_reported_as_mask_encoding_mismatch(
    recorded: dict[str, list[RunRecord]],
) -> None:
    run = recorded["segment_polygon_crop_masked"][0]
    pixel_polygons = {"kind": "mask", "from": {"encoding": "polygon"}, "to": {"encoding": "coco_rle"}}
    violations = mismatches([with_adapter(run, pixel_polygons)])
    assert violations
    assert all("value is polygon/normalized@image but the adapter (mask polygon@image" in v.detail for v in violations)


def test_an_adapter_writing_another_encoding_than_the_reader_reads_is_reported_as_mask_encoding_mismatch(
    recorded: dict[str, list[RunRecord]],
) -> None:
    run = recorded["segment_polygon_crop_masked"][0]
    to_png = {
        "kind": "mask",
        "from": {"encoding": "polygon", "normalized_polygons": True},
        "to": {"encoding": "png_base64"},
    }
    violations = mismatches([with_adapter(run, to_png)])
    assert len(violations) == len(calls_of([run], "cut"))
    assert all(v.detail.endswith("value is png_base64@image but crop_mask reads coco_rle@image") for v in violations)


def test_a_meaningless_normalization_flag_on_rle_is_not_reported_as_mask_encoding_mismatch(
    recorded: dict[str, list[RunRecord]],
) -> None:
    run = recorded["segment_crop_masked"][0]
    # Normalization means nothing to COCO RLE: a from side that sets it still reads the producer's masks.
    rle = {
        "kind": "mask",
        "from": {"encoding": "coco_rle", "normalized_polygons": True},
        "to": {"encoding": "coco_rle"},
    }
    assert mismatches([with_adapter(run, rle)]) == []


# --- memory.retention_exceeded --------------------------------------------------------------


def test_a_handle_served_after_its_declared_ttl_is_reported_as_memory_retention_exceeded(
    recorded: dict[str, list[RunRecord]],
) -> None:
    runs = recorded["detect_segment_crop_ttl"]
    crops = calls_of(runs, "crop")
    assert crops
    assert all(call.outcome is CallOutcomeKind.OK and call.clock == 20.0 for call in crops)
    violations = retained(runs)
    assert [(v.run, v.item) for v in violations] == [(call.run, call.item) for call in crops]
    assert {(v.server, v.node) for v in violations} == {("crop", "crop")}
    assert all(
        "at t=20s; load_image declared it for 15s from t=0s, so it ended at t=15s" in v.detail for v in violations
    )
    # The handle is still inside the lifetime the server actually gives it (60 s): the client did nothing
    # the server would refuse, so this is the server's retention, not an expired-handle use.
    assert [v for record in runs for v in check_handle_expired(record)] == []


def test_a_handle_used_within_its_declared_ttl_is_not_reported_as_memory_retention_exceeded(
    recorded: dict[str, list[RunRecord]],
) -> None:
    runs = recorded["detect_crop_ttl"]
    assert calls_of(runs, "crop")
    assert all(call.clock == 10.0 for call in calls_of(runs, "crop"))
    assert retained(runs) == []


def test_a_server_refusing_a_handle_past_its_declared_ttl_is_not_reported_as_memory_retention_exceeded(
    recorded: dict[str, list[RunRecord]],
) -> None:
    run = recorded["detect_segment_crop_ttl"][0]
    handle = next(call for _, call in run.calls() if call.node == "load").payload["image_id"]
    refused = with_calls(
        run,
        "crop",
        outcome=CallOutcomeKind.TOOL_ERROR,
        payload=None,
        error=f"image_id: handle {handle!r} expired at t=15s (now t=20s)",
    )
    assert retained([refused]) == []
    assert len(list(check_handle_expired(refused))) == len(calls_of([run], "crop"))  # the client's misuse


def test_a_handle_with_no_declared_lifetime_is_not_reported_as_memory_retention_exceeded(
    recorded: dict[str, list[RunRecord]],
) -> None:
    run = recorded["detect_segment_crop_ttl"][0]
    tools = copy.deepcopy(run.servers["crop"].tools)
    for tool in tools:
        for prop in (tool.get("outputSchema") or {}).get("properties", {}).values():
            prop.pop("ttl_seconds", None)
    servers = {**run.servers, "crop": run.servers["crop"].model_copy(update={"tools": tools})}
    undeclared = RunRecord(run.header, run.started, run.events, run.blobs, servers)
    assert retained([undeclared]) == []
    assert retained([run])  # the same run with the declaration kept
