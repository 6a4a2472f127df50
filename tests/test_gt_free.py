"""Coordinate evidence without ground truth (``testbed.validators._coords_free``): on unlabelled images a
convention fault is found from the boxes alone, under IDs of its own, and nothing fires on clean runs or
where ground truth exists."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.catalog import CATALOG
from testbed.events import BLOBS_DIR, BlobStore, GroundTruthRecord, read_events
from testbed.faults import load_faults
from testbed.registry import registry
from testbed.scenario import Scenario, load_scenario
from testbed.validators import VALIDATORS, RunRecord, split_runs, validate_runs
from testbed.validators._coords_pseudo import REFERENCE_DETECTOR_ENV
from testbed.vision import file_sha256, shipped_weights

GT_FREE_IDS = (
    "coords.inconsistent_convention",
    "coords.producers_disagree",
    "coords.implausible_boxes",
    "coords.edge_disagrees",
)
DET_BOXES = {"server": "det", "tool": "detect", "role": "bounding_box"}


def test_ground_truth_free_ids_are_catalogued_apart_and_emitted_by_registered_validators() -> None:
    emitted = {vid for plugin in registry().validator_list() for vid in plugin.emits}
    for vid in GT_FREE_IDS:
        assert CATALOG[vid].behaviour.startswith("Without ground truth:")
        assert vid in emitted
    assert "coords.mismatch" not in {
        vid for spec in VALIDATORS if spec.name == "coords.consistency" for vid in spec.emits
    }


def _records(directory: Path) -> list[RunRecord]:
    return split_runs(read_events(directory).events, BlobStore(directory / BLOBS_DIR))


def _unlabelled(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The same wire traffic over the same images, with their labels removed."""
    return [
        RunRecord(r.header, r.started.model_copy(update={"ground_truth": []}), r.events, r.blobs, r.servers)
        for r in records
    ]


def _found(records: Iterable[RunRecord]) -> list[Any]:
    result = validate_runs(list(records), VALIDATORS)
    assert result.failures == ()  # e.g. a recorded image scenario that no longer reads back
    return [v for v in result.violations if v.id in GT_FREE_IDS]


@pytest.fixture(scope="module")
def synthetic(recorded_v1: Callable[..., Path]) -> dict[str, list[RunRecord]]:
    """v1 scenarios recorded in process (the recordings test_validators_vision shares)."""
    return {
        name: _records(recorded_v1(name, 1, transport="inprocess"))
        for name in ("detect_crop", "detect_crop_incompatible", "detect_segment_crop", "fanout")
    } | {
        "flipped": _records(
            recorded_v1(
                "detect_crop",
                1,
                transport="inprocess",
                faults=load_faults([{"kind": "flip_convention", "to": "xywh/pixel", "target": DET_BOXES}]),
            )
        )
    }


@pytest.mark.slow
def test_ground_truth_free_checks_stay_silent_where_ground_truth_exists(synthetic: dict[str, list[RunRecord]]) -> None:
    assert validate_runs(synthetic["detect_crop_incompatible"], VALIDATORS).violations  # GT findings exist
    for records in synthetic.values():
        assert _found(records) == []


@pytest.mark.slow
def test_incompatible_edge_on_unlabelled_images_is_reported_as_coords_edge_disagrees(
    synthetic: dict[str, list[RunRecord]],
) -> None:
    unlabelled = _unlabelled(synthetic["detect_crop_incompatible"])
    found = validate_runs(unlabelled, VALIDATORS).violations
    assert not [v for v in found if v.id == "coords.mismatch"]  # no labels: the ground-truth check is blind
    edges = [v for v in found if v.id == "coords.edge_disagrees"]
    assert edges
    assert all(v.server == "crop" and v.detail.startswith("[no ground truth:") for v in edges)


@pytest.mark.slow
def test_clean_pipelines_on_unlabelled_images_raise_no_ground_truth_free_ids(
    synthetic: dict[str, list[RunRecord]],
) -> None:
    for name in ("detect_crop", "detect_segment_crop", "fanout"):
        assert _found(_unlabelled(synthetic[name])) == [], name


def _photo_scenario(
    tmp: Path,
    name: str,
    faults: list[dict[str, Any]],
    *,
    runs: int = 2,
    images: tuple[str, ...] = ("bus.jpg", "zidane.jpg"),
) -> Scenario:
    document: dict[str, Any] = {
        "name": name,
        "version": 1,
        "description": "detect-xyxy twice and segment-rle on the Ultralytics sample photographs",
        "seed": 0,
        "runs": runs,
        "scene": {"images": {"packaged": list(images)}},
        "servers": {"det": {"server": "detect-xyxy"}, "seg": {"server": "segment-rle"}},
        "task": {"kind": "none"},
        "agent": {
            "kind": "scripted",
            "workflow": {
                "nodes": [
                    {"id": "detect", "call": "det.detect", "args": {"image": "$scene.image"}},
                    {"id": "detect_again", "call": "det.detect", "args": {"image": "$scene.image"}},
                    {"id": "segment", "call": "seg.segment", "args": {"image": "$scene.image"}},
                ]
            },
        },
    }
    if faults:
        document["faults"] = faults
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_scenario(path)


@pytest.fixture(scope="module")
def photographs(
    recorded_scenario: Callable[[Scenario], Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[RunRecord]]:
    tmp = tmp_path_factory.mktemp("gt-free-photos")
    conditions: dict[str, list[dict[str, Any]]] = {
        "clean": [],
        "changed_mid_run": [
            {"kind": "flip_convention", "to": "cxcywh/pixel", "nodes": ["detect_again"], "target": DET_BOXES}
        ],
        "units": [{"kind": "change_units", "to_units": "normalized", "target": DET_BOXES}],
    }
    return {
        name: _records(recorded_scenario(_photo_scenario(tmp, f"gt-free-{name}", faults)))
        for name, faults in conditions.items()
    }


@pytest.mark.slow
def test_a_convention_changed_mid_run_on_photographs_is_reported_as_coords_inconsistent_convention(
    photographs: dict[str, list[RunRecord]],
) -> None:
    records = photographs["changed_mid_run"]
    assert all(not r.started.ground_truth for r in records)
    result = validate_runs(records, VALIDATORS)
    assert result.failures == ()
    found = result.violations
    assert not [v for v in found if v.id == "coords.mismatch"]
    changed = [v for v in found if v.id == "coords.inconsistent_convention"]
    assert {v.run for v in changed} == {0, 1}
    assert all(v.node == "detect_again" and "consistency across calls" in v.detail for v in changed)
    assert {v.run for v in found if v.id == "coords.producers_disagree" and v.node == "detect_again"} == {0, 1}


@pytest.mark.slow
def test_boxes_in_other_units_on_photographs_are_coords_implausible_boxes_and_coords_producers_disagree(
    photographs: dict[str, list[RunRecord]],
) -> None:
    found = validate_runs(photographs["units"], VALIDATORS).violations
    implausible = [v for v in found if v.id == "coords.implausible_boxes"]
    assert {v.run for v in implausible} == {0, 1}
    assert all(v.server == "det" and "xyxy/normalized" in v.detail for v in implausible)
    assert {v.run for v in found if v.id == "coords.producers_disagree"} == {0, 1}


@pytest.mark.slow
def test_clean_runs_on_photographs_raise_no_ground_truth_free_ids(photographs: dict[str, list[RunRecord]]) -> None:
    assert _found(photographs["clean"]) == []


@pytest.fixture(scope="module")
def changed_across_runs(
    recorded_scenario: Callable[[Scenario], Path], tmp_path_factory: pytest.TempPathFactory
) -> list[RunRecord]:
    """Four runs on bus.jpg; from run 2 on, every detect call returns cxcywh boxes (declared xyxy)."""
    flip = {"kind": "flip_convention", "to": "cxcywh/pixel", "runs": [2, 3], "target": DET_BOXES}
    scenario = _photo_scenario(
        tmp_path_factory.mktemp("gt-free-across"), "gt-free-across-runs", [flip], runs=4, images=("bus.jpg",)
    )
    return _records(recorded_scenario(scenario))


def _across_runs(found: Iterable[Any]) -> list[Any]:
    return [v for v in found if v.id == "coords.inconsistent_convention" and "consistency across runs" in v.detail]


@pytest.mark.slow
def test_a_convention_changed_mid_experiment_is_reported_across_runs_as_coords_inconsistent_convention(
    changed_across_runs: list[RunRecord],
) -> None:
    assert all(not r.started.ground_truth for r in changed_across_runs)
    result = validate_runs(changed_across_runs, VALIDATORS)
    assert result.failures == ()
    across = _across_runs(result.violations)
    assert {v.run for v in across} == {2, 3}  # run 3 also agrees with run 2, but not with the majority (0, 1)
    assert {(v.server, v.node) for v in across} == {("det", "detect"), ("det", "detect_again")}
    assert all(v.detail.startswith("[no ground truth: consistency across runs") for v in across)
    assert all("cxcywh/pixel" in v.detail for v in across)


@pytest.mark.slow
def test_the_cross_run_check_is_silent_on_clean_runs_and_where_ground_truth_exists(
    changed_across_runs: list[RunRecord], photographs: dict[str, list[RunRecord]]
) -> None:
    assert _across_runs(validate_runs(changed_across_runs[:2], VALIDATORS).violations) == []
    assert _across_runs(validate_runs(photographs["clean"], VALIDATORS).violations) == []
    label = GroundTruthRecord(class_name="bus", box_xyxy=[0.0, 0.0, 10.0, 10.0], mask_rle=None)
    labelled = [
        RunRecord(r.header, r.started.model_copy(update={"ground_truth": [label]}), r.events, r.blobs, r.servers)
        for r in changed_across_runs
    ]
    assert _across_runs(validate_runs(labelled, VALIDATORS).violations) == []


@pytest.mark.slow
def test_pseudo_mismatch_is_catalogued_apart_and_off_unless_a_reference_detector_is_set(
    photographs: dict[str, list[RunRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CATALOG["coords.pseudo_mismatch"].behaviour.startswith("Without ground truth:")
    assert "coords.pseudo_mismatch" in {vid for plugin in registry().validator_list() for vid in plugin.emits}
    monkeypatch.delenv(REFERENCE_DETECTOR_ENV, raising=False)
    found = validate_runs(photographs["changed_mid_run"], VALIDATORS).violations
    assert not [v for v in found if v.id == "coords.pseudo_mismatch"]


@pytest.mark.slow
def test_a_flipped_convention_on_photographs_is_coords_pseudo_mismatch_against_a_reference_detector(
    changed_across_runs: list[RunRecord], photographs: dict[str, list[RunRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REFERENCE_DETECTOR_ENV, str(shipped_weights("detect")))
    result = validate_runs(changed_across_runs, VALIDATORS)
    assert result.failures == ()
    pseudo = [v for v in result.violations if v.id == "coords.pseudo_mismatch"]
    assert {(v.run, v.node) for v in pseudo} == {(2, "detect"), (2, "detect_again"), (3, "detect"), (3, "detect_again")}
    sha = file_sha256(shipped_weights("detect"))[:12]
    assert all(
        v.detail.startswith(
            f"[no ground truth: pseudo ground truth from {shipped_weights('detect').name} (sha256 {sha})"
        )
        for v in pseudo
    )
    assert all("cxcywh/pixel" in v.detail and v.server == "det" for v in pseudo)
    assert not [
        v for v in validate_runs(photographs["clean"], VALIDATORS).violations if v.id == "coords.pseudo_mismatch"
    ]
