"""Coordinate, mask and memory validators on real recorded runs (in-process servers, few runs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from testbed.events import BLOBS_DIR, BlobStore, read_events
from testbed.faults import load_faults
from testbed.validators import RunRecord, Violation, split_runs
from testbed.validators._coords import VALIDATORS as COORDS
from testbed.validators._mask import VALIDATORS as MASK
from testbed.validators._memory import VALIDATORS as MEMORY
from testbed.validators._memory import check_out_of_scope, check_unbounded_store

ALL = (*COORDS, *MASK, *MEMORY)


def run_records(directory: Path) -> list[RunRecord]:
    """One RunRecord per run of an experiment directory (RunStarted..RunFinished)."""
    return split_runs(read_events(directory).events, BlobStore(directory / BLOBS_DIR))


def _experiment(
    recorded_v1: Callable[..., Path], name: str, runs: int, faults: list[dict[str, Any]] | None = None
) -> list[RunRecord]:
    """The runs of ``scenarios/v1/<name>.yaml`` recorded in process (shared with other modules)."""
    update: dict[str, Any] = {}
    if faults is not None:
        update["faults"] = load_faults(faults)
    return run_records(recorded_v1(name, runs, transport="inprocess", **update))


@pytest.fixture(scope="module")
def recorded(recorded_v1: Callable[..., Path]) -> dict[str, list[RunRecord]]:
    seg = {"server": "seg", "tool": "segment_image"}
    load = {"server": "seg", "tool": "load_image"}
    det_boxes = {"server": "det", "tool": "detect", "role": "bounding_box"}
    faults: list[dict[str, Any]] = [
        {"kind": "change_units", "to_units": "normalized", "runs": [0], "target": {**seg, "role": "bounding_box"}},
        {"kind": "mask_resolution", "size": [64, 48], "runs": [1], "target": {**seg, "role": "mask"}},
        {"kind": "evict_handle", "runs": [2], "target": {**load, "role": "image_handle"}},
        {"kind": "expire_handle", "advance_s": 100, "runs": [3], "target": load},
    ]
    return {
        "detect_crop": _experiment(recorded_v1, "detect_crop", 1),
        "detect_crop_incompatible": _experiment(recorded_v1, "detect_crop_incompatible", 1),
        "detect_segment_crop": _experiment(recorded_v1, "detect_segment_crop", 1),
        "fanout": _experiment(recorded_v1, "fanout", 1),
        "flipped": _experiment(
            recorded_v1, "detect_crop", 1, [{"kind": "flip_convention", "to": "xywh/pixel", "target": det_boxes}]
        ),
        "faults": _experiment(recorded_v1, "faults", 4, faults),
    }


def found(records: Iterable[RunRecord], violation_id: str) -> list[Violation]:
    return [
        v
        for record in records
        for spec in ALL
        if violation_id in spec.emits
        for v in spec.check(record)
        if v.id == violation_id
    ]


COMPATIBLE = ("detect_crop", "detect_segment_crop", "fanout")
SEMANTIC_IDS = (
    "coords.mismatch",
    "coords.crop_misses_object",
    "coords.out_of_bounds",
    "mask.size_mismatch",
    "mask.outside_box",
)


@pytest.mark.parametrize("violation_id", SEMANTIC_IDS)
def test_compatible_fault_free_workflows_report_no_coords_or_mask_violations(
    recorded: dict[str, list[RunRecord]], violation_id: str
) -> None:
    for name in COMPATIBLE:
        assert found(recorded[name], violation_id) == [], name


def test_xyxy_boxes_sent_to_an_xywh_cropper_are_reported_as_coords_mismatch(
    recorded: dict[str, list[RunRecord]],
) -> None:
    violations = found(recorded["detect_crop_incompatible"], "coords.mismatch")
    assert violations
    assert all(v.node == "crop" and v.server == "crop" and "xyxy" in v.detail for v in violations)
    assert all(v.evidence for v in violations)


def test_flipped_box_convention_is_reported_as_coords_mismatch(recorded: dict[str, list[RunRecord]]) -> None:
    violations = found(recorded["flipped"], "coords.mismatch")
    assert violations
    assert all(v.node == "crop" and "adapter" in v.detail for v in violations)


def test_changed_box_units_are_reported_as_coords_mismatch(recorded: dict[str, list[RunRecord]]) -> None:
    violations = found(recorded["faults"][:1], "coords.mismatch")
    assert violations
    assert all(v.node == "crop" and "normalized" in v.detail for v in violations)
    assert found(recorded["faults"][1:], "coords.mismatch") == []


def test_boxes_locating_no_object_under_any_convention_are_model_error_not_coords_mismatch(
    recorded: dict[str, list[RunRecord]],
) -> None:
    record = recorded["detect_crop_incompatible"][0]
    assert found([record], "coords.mismatch")
    # The same wire traffic over a scene with no objects: every box is a false detection (model error).
    empty = RunRecord(
        record.header,
        record.started.model_copy(update={"ground_truth": []}),
        record.events,
        record.blobs,
        record.servers,
    )
    assert found([empty], "coords.mismatch") == []
    assert found([empty], "coords.crop_misses_object") == []
    # Objects shifted away from every detection: mislocated under all 36 conventions, still model error.
    moved = [g.model_copy(update={"box_xyxy": [0.0, 0.0, 3.0, 3.0]}) for g in record.started.ground_truth]
    shifted = RunRecord(
        record.header,
        record.started.model_copy(update={"ground_truth": moved}),
        record.events,
        record.blobs,
        record.servers,
    )
    assert found([shifted], "coords.mismatch") == []


def test_xyxy_boxes_read_as_xywh_off_the_image_are_reported_as_coords_out_of_bounds(
    recorded: dict[str, list[RunRecord]],
) -> None:
    violations = found(recorded["detect_crop_incompatible"], "coords.out_of_bounds")
    assert violations
    assert all(v.server == "crop" for v in violations)


def test_crop_of_a_box_in_the_wrong_units_is_reported_as_coords_crop_misses_object(
    recorded: dict[str, list[RunRecord]],
) -> None:
    violations = found(recorded["faults"][:1], "coords.crop_misses_object")
    assert violations
    assert all(v.node == "crop" for v in violations)


def test_box_tool_without_coordinate_system_is_reported_once_as_coords_undeclared(
    recorded: dict[str, list[RunRecord]],
) -> None:
    record = recorded["faults"][0]
    violations = found([record], "coords.undeclared")
    tools = [v.detail.split(":")[0] for v in violations]
    assert sorted(tools) == ["crop.crop_image", "seg.segment_image"]
    for name in ("detect_crop", "detect_segment_crop"):  # well-behaved servers declare every box
        assert found(recorded[name], "coords.undeclared") == [], name
    assert {v.server for v in found(recorded["fanout"], "coords.undeclared")} == {"det_b"}  # detect-yxyx declares none


def test_model_masks_resampled_to_another_grid_are_reported_as_mask_size_mismatch(
    recorded: dict[str, list[RunRecord]],
) -> None:
    runs = recorded["faults"]
    violations = found(runs[1:2], "mask.size_mismatch")
    assert len(violations) == 1
    assert "64x48" in violations[0].detail
    assert found([runs[0]], "mask.size_mismatch") == []


def test_masks_with_boxes_in_the_wrong_units_are_reported_as_mask_outside_box(
    recorded: dict[str, list[RunRecord]],
) -> None:
    runs = recorded["faults"]
    violations = found(runs[:1], "mask.outside_box")
    assert violations
    assert all(v.server == "seg" and v.node == "segment" for v in violations)


def test_evicted_handle_is_reported_as_memory_handle_unknown(recorded: dict[str, list[RunRecord]]) -> None:
    runs = recorded["faults"]
    violations = found(runs[2:3], "memory.handle_unknown")
    assert len(violations) == 1
    assert violations[0].node == "segment"
    assert violations[0].server == "seg"
    assert found([runs[0], runs[1], runs[3]], "memory.handle_unknown") == []


def test_handle_used_past_its_ttl_is_reported_as_memory_handle_expired(recorded: dict[str, list[RunRecord]]) -> None:
    runs = recorded["faults"]
    violations = found(runs[3:4], "memory.handle_expired")
    assert len(violations) == 1
    assert violations[0].node == "segment"
    assert "expired" in violations[0].detail
    assert found(runs[:3], "memory.handle_expired") == []


def test_global_handles_piling_up_across_runs_are_reported_as_memory_unbounded_store(
    recorded: dict[str, list[RunRecord]],
) -> None:
    runs = recorded["faults"]
    violations = check_unbounded_store(runs)
    assert violations
    assert {v.server for v in violations} == {"crop"}
    assert 0 not in {v.run for v in violations}
    assert check_unbounded_store(recorded["detect_crop"]) == []


def test_ttl_handle_replayed_in_a_later_run_is_reported_as_memory_handle_out_of_scope(
    recorded: dict[str, list[RunRecord]],
) -> None:
    first, second = recorded["faults"][0], recorded["faults"][1]
    assert check_out_of_scope([first, second]) == []
    # Splice run 0's TTL handle into run 1's segment call, as a client caching handles across runs would.
    old = next(e for _, e in first.calls() if e.node == "load").payload["image_id"]
    events = tuple(
        e.model_copy(update={"arguments": {"image_id": old}})
        if getattr(e, "node", None) == "segment" and e.event == "call"
        else e
        for e in second.events
    )
    replayed = RunRecord(second.header, second.started, events, second.blobs, second.servers)
    violations = check_out_of_scope([first, replayed])
    assert len(violations) == 1
    assert violations[0].run == 1
    assert violations[0].node == "segment"
