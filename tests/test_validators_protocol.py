"""Protocol validators (proto.*) on runs recorded in process, with faults injected where a rule should fire."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from testbed.check import in_process
from testbed.events import (
    Direction,
    Event,
    MessageEvent,
)
from testbed.faults import load_faults
from testbed.scenario import Scenario, load_scenario
from testbed.validators import RunRecord, ValidatorSpec, Violation
from testbed.validators._protocol import VALIDATORS

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios" / "v1"

PROTO_FAULTS: list[dict[str, Any]] = [
    {"kind": "timeout", "runs": [0], "target": {"server": "det", "tool": "detect"}},
    {"kind": "duplicate", "runs": [1], "target": {"server": "seg", "tool": "segment_image"}},
    {"kind": "jsonrpc_error", "runs": [2], "target": {"server": "crop", "tool": "crop_image"}},
    {"kind": "kill", "runs": [3], "target": {"server": "crop", "tool": "put_image"}},
    {"kind": "rug_pull", "change": "description", "runs": [4], "target": {"server": "seg", "tool": "segment_image"}},
]
"""One protocol fault per run of the faults scenario (the rug pull last: the changed listing persists)."""


def violations(record: RunRecord, specs: Iterable[ValidatorSpec]) -> list[Violation]:
    found = [violation for spec in specs for violation in spec.check(record)]
    for violation in found:
        spec_ids = {i for spec in specs for i in spec.emits}
        assert violation.id in spec_ids
    return found


def ids(found: Iterable[Violation]) -> list[str]:
    return sorted(violation.id for violation in found)


@pytest.fixture(scope="module")
def clean_runs(recorded_runs: Callable[[Scenario], list[RunRecord]]) -> list[RunRecord]:
    scenario = load_scenario(SCENARIOS / "detect_crop.yaml").model_copy(update={"runs": 2})
    return recorded_runs(scenario)


@pytest.fixture(scope="module")
def fault_runs(recorded_runs: Callable[[Scenario], list[RunRecord]]) -> list[RunRecord]:
    scenario = in_process(load_scenario(SCENARIOS / "faults.yaml"))
    scenario = scenario.model_copy(update={"runs": len(PROTO_FAULTS), "faults": load_faults(PROTO_FAULTS)})
    return recorded_runs(scenario)


def by_id(record: RunRecord, violation_id: str) -> list[Violation]:
    return [v for v in violations(record, VALIDATORS) if v.id == violation_id]


def test_fault_free_detect_crop_has_no_protocol_violation(clean_runs: list[RunRecord]) -> None:
    assert len(clean_runs) == 2
    for record in clean_runs:
        assert violations(record, VALIDATORS) == []


def test_timed_out_call_is_reported_as_proto_timeout(fault_runs: list[RunRecord]) -> None:
    (found,) = by_id(fault_runs[0], "proto.timeout")
    assert (found.run, found.server, found.node, found.item) == (0, "det", "detect", 0)
    assert fault_runs[0].events[found.evidence[0]].event == "call"


def test_calls_answered_in_time_are_not_reported_as_proto_timeout(fault_runs: list[RunRecord]) -> None:
    assert [v for record in fault_runs[1:] for v in by_id(record, "proto.timeout")] == []


def test_killed_server_is_reported_as_proto_transport_closed(fault_runs: list[RunRecord]) -> None:
    (found,) = by_id(fault_runs[3], "proto.transport_closed")
    assert (found.run, found.server, found.node) == (3, "crop", "put")


def test_open_transport_is_not_reported_as_proto_transport_closed(
    fault_runs: list[RunRecord], clean_runs: list[RunRecord]
) -> None:
    others = [record for record in [*fault_runs, *clean_runs] if record is not fault_runs[3]]
    assert [v for record in others for v in by_id(record, "proto.transport_closed")] == []


def test_jsonrpc_error_for_a_tool_failure_is_reported_as_proto_error_misclassified(
    fault_runs: list[RunRecord],
) -> None:
    found = by_id(fault_runs[2], "proto.error_misclassified")
    assert found
    assert {(v.server, v.node) for v in found} == {("crop", "crop")}
    assert all("-32603" in v.detail for v in found)
    assert len({v.item for v in found}) == len(found)


def test_is_error_results_are_not_reported_as_proto_error_misclassified(
    fault_runs: list[RunRecord], clean_runs: list[RunRecord]
) -> None:
    others = [record for record in [*fault_runs, *clean_runs] if record is not fault_runs[2]]
    assert [v for record in others for v in by_id(record, "proto.error_misclassified")] == []


def test_duplicated_response_is_reported_as_proto_id_mismatch(fault_runs: list[RunRecord]) -> None:
    (found,) = by_id(fault_runs[1], "proto.id_mismatch")
    assert (found.server, found.node, found.item) == ("seg", "segment", 0)
    assert "second time" in found.detail
    request, first, second = (fault_runs[1].events[i] for i in found.evidence)
    assert isinstance(request, MessageEvent)
    assert request.direction is Direction.CLIENT_TO_SERVER
    assert isinstance(first, MessageEvent)
    assert isinstance(second, MessageEvent)
    assert first.message == second.message


def test_response_to_an_unknown_id_is_reported_as_proto_id_mismatch(clean_runs: list[RunRecord]) -> None:
    record = clean_runs[0]
    stray = _message(record, Direction.SERVER_TO_CLIENT, {"jsonrpc": "2.0", "id": 9999, "result": {"content": []}})
    (found,) = by_id(stray, "proto.id_mismatch")
    assert "answers no request" in found.detail
    assert found.evidence == (len(record.events),)


def test_one_response_per_request_is_not_reported_as_proto_id_mismatch(
    fault_runs: list[RunRecord], clean_runs: list[RunRecord]
) -> None:
    others = [record for record in [*fault_runs, *clean_runs] if record is not fault_runs[1]]
    assert [v for record in others for v in by_id(record, "proto.id_mismatch")] == []


def test_rug_pulled_description_is_reported_as_proto_tool_list_changed(fault_runs: list[RunRecord]) -> None:
    (found,) = by_id(fault_runs[4], "proto.tool_list_changed")
    assert (found.server, found.node) == ("seg", "@list")
    assert "'segment_image' changed its description" in found.detail


def test_stable_listing_is_not_reported_as_proto_tool_list_changed(fault_runs: list[RunRecord]) -> None:
    assert [v for record in fault_runs[:4] for v in by_id(record, "proto.tool_list_changed")] == []


def test_unparseable_frame_is_reported_as_proto_malformed_message(clean_runs: list[RunRecord]) -> None:
    # In process, an unparseable frame has no id to attribute it by, so the recorder keeps it out of the
    # run; the recorded form (what the stdio transport yields) is added to a real run here.
    frame = {"transport_exception": "ValidationError: Invalid JSON: EOF while parsing"}
    record = _message(clean_runs[0], Direction.SERVER_TO_CLIENT, frame)
    (found,) = by_id(record, "proto.malformed_message")
    assert found.server == "det"
    assert "Invalid JSON" in found.detail


def test_parseable_frames_are_not_reported_as_proto_malformed_message(
    fault_runs: list[RunRecord], clean_runs: list[RunRecord]
) -> None:
    assert [v for record in [*fault_runs, *clean_runs] for v in by_id(record, "proto.malformed_message")] == []


def _message(record: RunRecord, direction: Direction, body: dict[str, Any]) -> RunRecord:
    """``record`` with one more wire message of server ``det`` appended to its events."""
    event = MessageEvent(
        time=time.time(),
        run=record.started.run,
        node="detect",
        item=0,
        seq=99,
        server="det",
        direction=direction,
        message=body,
    )
    return _with_events(record, lambda events: [*events, event])


def _with_events(record: RunRecord, change: Callable[[list[Event]], list[Event]]) -> RunRecord:
    return RunRecord(
        header=record.header,
        started=record.started,
        events=tuple(change(list(record.events))),
        blobs=record.blobs,
        servers=record.servers,
    )
