"""The mask, shape-order and field contracts end to end: each shipped example (scenarios/contracts/) fires its
rule, and halt stops, convert fixes with a recorded adapter (or halts where no adapter exists), fallback calls
the declared tool. The recordings are replayed: the contract events and violations come back exactly.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from testbed.check import in_process
from testbed.contracts import ContractPolicy
from testbed.conventions import ShapeOrder
from testbed.events import CallEvent, ContractEvent, RunFinished
from testbed.scenario import Scenario, load_scenario
from tests._helpers import assert_replays_exactly, events_of, record_experiment, violation_counts

CONTRACTS = Path(__file__).resolve().parent.parent / "scenarios" / "contracts"


def _scenario(name: str, runs: int = 2, policy: ContractPolicy | None = None) -> Scenario:
    scenario = in_process(load_scenario(CONTRACTS / f"{name}.yaml")).model_copy(update={"runs": runs})
    if policy is not None:
        assert scenario.contracts is not None
        scenario = scenario.model_copy(update={"contracts": scenario.contracts.model_copy(update={"policy": policy})})
    return scenario


def _with_servers(scenario: Scenario, **servers: Any) -> Scenario:
    data = scenario.model_dump(mode="json")
    data["servers"] = {**data["servers"], **servers}
    return in_process(Scenario.model_validate(data))


# --- mask_encoding --------------------------------------------------------------------------------


@pytest.mark.slow
def test_mask_encoding_convert_inserts_the_tracked_mask_adapter_and_every_cut_succeeds(tmp_path: Path) -> None:
    events = record_experiment(_scenario("mask_encoding"), tmp_path / "convert")

    cuts = [c for c in events_of(events, CallEvent) if c.tool == "crop_mask"]
    assert cuts
    assert all(c.outcome.value == "ok" for c in cuts)
    adapter = "mask: mask polygon@image -> coco_rle@image (contract)"
    assert all(c.adapters == [adapter] for c in cuts)
    assert all(isinstance(c.arguments["mask"], dict) and set(c.arguments["mask"]) == {"size", "counts"} for c in cuts)
    contract = events_of(events, ContractEvent)
    assert {(e.rule, e.finding, e.decision) for e in contract} == {("mask_encoding", "breach", "convert")}
    assert {(e.run, e.node, e.item) for e in contract} == {(c.run, c.node, c.item) for c in cuts}
    assert all(e.error is None for e in events_of(events, RunFinished))
    assert "contract.violation" not in violation_counts(tmp_path / "convert")
    assert_replays_exactly(tmp_path / "convert")


@pytest.mark.slow
def test_mask_encoding_halt_stops_before_the_first_cut(tmp_path: Path) -> None:
    events = record_experiment(_scenario("mask_encoding", policy=ContractPolicy.HALT), tmp_path / "halt")

    assert {c.tool for c in events_of(events, CallEvent)} == {"segment"}, "no cut was made"
    finished = events_of(events, RunFinished)
    assert all(e.error is not None and e.error.startswith("contract halt: mask_encoding:") for e in finished)
    assert {(e.rule, e.decision) for e in events_of(events, ContractEvent)} == {("mask_encoding", "halt")}
    assert set(violation_counts(tmp_path / "halt")) >= {"contract.violation"}
    assert_replays_exactly(tmp_path / "halt")


@pytest.mark.slow
def test_mask_encoding_fallback_calls_the_cutter_the_consumer_declares(tmp_path: Path) -> None:
    scenario = _with_servers(
        _scenario("mask_encoding", runs=1, policy=ContractPolicy.FALLBACK),
        cut={"server": "crop-mask", "profile": {"mask": {"encoding": "coco_rle"}, "fallback": "tool:cut_polygon"}},
        cut_poly={
            "server": "crop-mask",
            "profile": {"mask": {"encoding": "polygon"}, "names": {"tool": "cut_polygon"}},
        },
    )
    events = record_experiment(scenario, tmp_path / "fallback")

    cuts = [c for c in events_of(events, CallEvent) if c.node == "cut"]
    assert cuts
    assert {(c.server, c.tool, c.outcome.value) for c in cuts} == {("cut_poly", "cut_polygon", "ok")}
    assert {(e.decision, e.remedy) for e in events_of(events, ContractEvent)} == {("fallback", "cut_poly.cut_polygon")}
    assert "contract.violation" not in violation_counts(tmp_path / "fallback")
    assert_replays_exactly(tmp_path / "fallback")


@pytest.mark.slow
def test_an_undeclared_segmenter_makes_the_mask_rules_unevaluable_which_is_recorded_not_raised(
    tmp_path: Path,
) -> None:
    scenario = _with_servers(
        _scenario("mask_encoding", runs=1),
        seg={"server": "segment", "profile": {"mask": {"encoding": "coco_rle"}, "declares_extensions": False}},
    )
    events = record_experiment(scenario, tmp_path / "undeclared")

    unevaluable = [e for e in events_of(events, ContractEvent) if e.finding == "unevaluable"]
    assert unevaluable
    assert {(e.rule, e.decision) for e in unevaluable} == {("mask_encoding", "pass"), ("mask_resolution", "pass")}
    assert all("declares no mask encoding" in e.detail for e in unevaluable)
    cuts = [c for c in events_of(events, CallEvent) if c.tool == "crop_mask"]
    assert cuts
    assert all(c.outcome.value == "ok" for c in cuts), "an unevaluable rule does not stop the call"
    assert violation_counts(tmp_path / "undeclared")["contract.unevaluable"] == len(unevaluable)
    assert_replays_exactly(tmp_path / "undeclared")


# --- mask_resolution ------------------------------------------------------------------------------


@pytest.mark.slow
def test_mask_resolution_halt_stops_a_model_grid_mask_before_it_reaches_the_cutter(tmp_path: Path) -> None:
    events = record_experiment(_scenario("mask_resolution"), tmp_path / "halt")

    assert {c.tool for c in events_of(events, CallEvent)} == {"segment"}, "no cut was made"
    contract = events_of(events, ContractEvent)
    assert {(e.rule, e.finding, e.decision) for e in contract} == {("mask_resolution", "breach", "halt")}
    assert all("but the consumer reads it on the 320x240 image" in e.detail for e in contract)
    assert set(violation_counts(tmp_path / "halt")) == {"contract.violation"}
    assert_replays_exactly(tmp_path / "halt")


@pytest.mark.slow
def test_mask_resolution_convert_resizes_each_mask_onto_the_image(tmp_path: Path) -> None:
    events = record_experiment(_scenario("mask_resolution", policy=ContractPolicy.CONVERT), tmp_path / "convert")

    cuts = [c for c in events_of(events, CallEvent) if c.tool == "crop_mask"]
    assert cuts
    assert all(c.outcome.value == "ok" for c in cuts)
    assert all(c.adapters == ["mask: mask coco_rle@model -> coco_rle@image (contract)"] for c in cuts)
    assert all(c.arguments["mask"]["size"] == [240, 320] for c in cuts), "sent on the image's grid"
    assert {e.decision for e in events_of(events, ContractEvent)} == {"convert"}
    assert "contract.violation" not in violation_counts(tmp_path / "convert")
    assert_replays_exactly(tmp_path / "convert")


# --- required_fields ------------------------------------------------------------------------------


@pytest.mark.slow
def test_required_fields_halts_a_value_beyond_the_consumers_declared_range(tmp_path: Path) -> None:
    events = record_experiment(_scenario("required_fields"), tmp_path / "poisoned")

    assert "crop" not in {c.tool for c in events_of(events, CallEvent)}, "zoom.crop was never called"
    contract = events_of(events, ContractEvent)
    assert contract
    assert {(e.rule, e.decision, e.argument) for e in contract} == {("required_fields", "halt", "scale")}
    assert all("50.0 is greater than the maximum of 4" in e.detail for e in contract)
    assert violation_counts(tmp_path / "poisoned")["contract.violation"] == len(contract)
    assert_replays_exactly(tmp_path / "poisoned")


@pytest.mark.slow
def test_required_fields_lets_a_value_within_the_consumers_schema_through(tmp_path: Path) -> None:
    scenario = _with_servers(_scenario("required_fields", runs=1), inbox={"server": "vuln-inbox-clean"})
    events = record_experiment(scenario, tmp_path / "clean")

    assert events_of(events, ContractEvent) == []
    zooms = [c for c in events_of(events, CallEvent) if c.tool == "crop"]
    assert zooms
    assert all(c.outcome.value == "ok" for c in zooms)
    assert "contract.violation" not in violation_counts(tmp_path / "clean")


# --- shape_order ----------------------------------------------------------------------------------


def _shape_scenario(order: ShapeOrder, policy: ContractPolicy | None = None) -> Scenario:
    """The shipped example with the detector reporting its size in ``order``, and the thumbnail server (a command
    over stdio) started by this interpreter."""
    scenario = _scenario("shape_order", runs=1, policy=policy)
    servers = dict(scenario.servers)
    thumb, det = servers["thumb"], servers["det"]
    assert thumb.command is not None
    assert det.profile is not None
    servers["thumb"] = thumb.model_copy(update={"command": (sys.executable, *thumb.command[1:])})
    servers["det"] = det.model_copy(update={"profile": det.profile.model_copy(update={"shape_order": order})})
    return scenario.model_copy(update={"servers": servers})


@pytest.mark.slow
def test_shape_order_halts_a_wh_pair_before_it_reaches_a_consumer_reading_hw(tmp_path: Path) -> None:
    events = record_experiment(_shape_scenario(ShapeOrder.WH), tmp_path / "wh")

    assert {c.tool for c in events_of(events, CallEvent)} == {"detect"}, "the thumbnail was never made"
    contract = events_of(events, ContractEvent)
    assert [(e.rule, e.finding, e.decision, e.argument) for e in contract] == [
        ("shape_order", "breach", "halt", "size")
    ]
    assert "det.detect writes the size as wh, the consumer reads hw" in contract[0].detail
    assert violation_counts(tmp_path / "wh") == Counter({"contract.violation": 1})
    assert_replays_exactly(tmp_path / "wh")


@pytest.mark.slow
def test_shape_order_lets_a_pair_in_the_consumers_order_through(tmp_path: Path) -> None:
    events = record_experiment(_shape_scenario(ShapeOrder.HW), tmp_path / "hw")

    assert events_of(events, ContractEvent) == []
    (thumb,) = [c for c in events_of(events, CallEvent) if c.tool == "thumbnail"]
    assert thumb.outcome.value == "ok"
    assert thumb.arguments["size"] == [240, 320]


@pytest.mark.slow
def test_shape_order_under_convert_halts_because_no_adapter_reorders_a_pair(tmp_path: Path) -> None:
    events = record_experiment(_shape_scenario(ShapeOrder.WH, ContractPolicy.CONVERT), tmp_path / "convert")

    (finished,) = events_of(events, RunFinished)
    assert finished.error is not None
    assert finished.error.endswith("; no declaration says how to convert it")
    assert {e.decision for e in events_of(events, ContractEvent)} == {"halt"}
