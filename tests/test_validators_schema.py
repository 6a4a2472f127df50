"""Schema-format validators (schema.*) on runs recorded in process."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.check import in_process
from testbed.faults import load_faults
from testbed.scenario import Scenario, load_scenario, load_scenario_text
from testbed.validators import RunRecord, Violation
from testbed.validators._connection import VALIDATORS as CONNECTION
from testbed.validators._permission import VALIDATORS as PERMISSION
from testbed.validators._permission import path_outside_sandbox
from testbed.validators._schema import VALIDATORS

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios" / "v1"

# Three detectors that diverge in every schema convention, called well and badly:
# detect-cxcywh lists a loose outputSchema and reports failures as {"error": ...} payloads,
# detect-yxyx returns JSON in a text block with no outputSchema, detect-xyxy is well-behaved.
MIXED_SCENARIO = """
name: schema_mix
version: 1
description: three detectors with diverging schema conventions, one good call each, two bad calls.
seed: 0
runs: 1
scene:
  synthetic: {min_objects: 2, max_objects: 3}
servers:
  loose: {server: detect-cxcywh}
  text: {server: detect-yxyx}
  full: {server: detect-xyxy}
task: {kind: none}
agent:
  kind: scripted
  workflow:
    nodes:
      - id: loose_ok
        call: loose.detect_objects
        args: {image_base64: $scene.image}
      - id: loose_not_an_image
        call: loose.detect_objects
        args: {image_base64: "not an image"}
      - id: loose_wrong_type
        call: loose.detect_objects
        args: {image_base64: 42}
      - id: text_ok
        call: text.locate_objects
        args: {image_b64: $scene.image}
      - id: full_ok
        call: full.detect
        args: {image: $scene.image}
expect: []
"""


def found(records: list[RunRecord]) -> list[Violation]:
    return [violation for record in records for spec in VALIDATORS for violation in spec.check(record)]


def at(violations: list[Violation], violation_id: str) -> list[tuple[str | None, str | None]]:
    return sorted((v.server, v.node) for v in violations if v.id == violation_id)


@pytest.fixture(scope="module")
def clean_runs(recorded_runs: Callable[[Scenario], list[RunRecord]]) -> list[RunRecord]:
    scenario = load_scenario(SCENARIOS / "detect_crop.yaml").model_copy(update={"runs": 1})
    return recorded_runs(scenario)


@pytest.fixture(scope="module")
def mixed_violations(recorded_runs: Callable[[Scenario], list[RunRecord]]) -> list[Violation]:
    scenario = load_scenario_text(MIXED_SCENARIO)
    return found(recorded_runs(scenario))


@pytest.fixture(scope="module")
def removed_field_runs(recorded_runs: Callable[[Scenario], list[RunRecord]]) -> list[RunRecord]:
    faults = [
        {"kind": "remove_field", "runs": [1], "target": {"server": "seg", "tool": "segment_image", "path": "masks"}}
    ]
    scenario = in_process(load_scenario(SCENARIOS / "faults.yaml"))
    scenario = scenario.model_copy(update={"runs": 2, "faults": load_faults(faults)})
    return recorded_runs(scenario)


def test_fault_free_detect_crop_has_no_schema_violation(clean_runs: list[RunRecord]) -> None:
    assert found(clean_runs) == []


def test_undeclared_servers_of_the_faults_pipeline_have_exactly_their_schema_violations(
    removed_field_runs: list[RunRecord],
) -> None:
    clean = found(removed_field_runs[:1])
    assert Counter((v.id, v.server, v.node) for v in clean) == {
        ("schema.output_schema_missing", "crop", "put"): 1,
        ("schema.output_schema_missing", "crop", "crop"): 1,
        ("schema.text_json_without_schema", "crop", "put"): 1,
        ("schema.text_json_without_schema", "crop", "crop"): 1,
        ("schema.field_name_divergence", None, None): 1,
    }


def test_removed_required_field_is_reported_as_schema_structured_mismatch(removed_field_runs: list[RunRecord]) -> None:
    (mismatch,) = [v for v in found(removed_field_runs[1:]) if v.id == "schema.structured_mismatch"]
    assert (mismatch.run, mismatch.server, mismatch.node) == (1, "seg", "segment")
    assert "'masks' is a required property" in mismatch.detail


def test_conforming_structured_content_is_not_reported_as_schema_structured_mismatch(
    removed_field_runs: list[RunRecord], mixed_violations: list[Violation]
) -> None:
    assert at(found(removed_field_runs[:1]), "schema.structured_mismatch") == []
    assert at(mixed_violations, "schema.structured_mismatch") == []


def test_text_json_result_without_output_schema_is_reported_as_schema_output_schema_missing(
    mixed_violations: list[Violation],
) -> None:
    assert at(mixed_violations, "schema.output_schema_missing") == [("text", "text_ok")]


def test_text_json_result_without_output_schema_is_reported_as_schema_text_json_without_schema(
    mixed_violations: list[Violation],
) -> None:
    assert at(mixed_violations, "schema.text_json_without_schema") == [("text", "text_ok")]


def test_loose_output_schema_of_a_called_tool_is_reported_as_schema_output_schema_loose(
    mixed_violations: list[Violation],
) -> None:
    (loose,) = [v for v in mixed_violations if v.id == "schema.output_schema_loose"]
    assert loose.server == "loose"
    assert len(loose.evidence) == 3


def test_error_payload_is_reported_as_schema_error_in_payload(mixed_violations: list[Violation]) -> None:
    assert at(mixed_violations, "schema.error_in_payload") == [
        ("loose", "loose_not_an_image"),
        ("loose", "loose_wrong_type"),
    ]


def test_wrongly_typed_argument_is_reported_as_schema_arguments_invalid(mixed_violations: list[Violation]) -> None:
    (invalid,) = [v for v in mixed_violations if v.id == "schema.arguments_invalid"]
    assert (invalid.server, invalid.node) == ("loose", "loose_wrong_type")
    assert "42 is not of type 'string'" in invalid.detail


def test_blob_image_arguments_are_not_reported_as_schema_arguments_invalid(clean_runs: list[RunRecord]) -> None:
    # The image argument is recorded as a blob reference (an object): it must be resolved before validation.
    assert any(isinstance(call.arguments.get("image"), dict) for _, call in clean_runs[0].calls())
    assert at(found(clean_runs), "schema.arguments_invalid") == []


def test_different_box_field_names_are_reported_as_schema_field_name_divergence(
    mixed_violations: list[Violation],
) -> None:
    divergent = [v for v in mixed_violations if v.id == "schema.field_name_divergence"]
    (box,) = [v for v in divergent if "'bounding_box'" in v.detail]
    assert "full: bbox" in box.detail
    assert "loose: box" in box.detail
    assert "text: box_2d" in box.detail
    assert all(v.server is None for v in divergent)


def test_shared_field_names_are_not_reported_as_schema_field_name_divergence(clean_runs: list[RunRecord]) -> None:
    assert at(found(clean_runs), "schema.field_name_divergence") == []


# Connection typing (conn.*) and permissions (perm.*): their validators sit beside the schema ones
# because edge types are schema checks; one crafted scenario exercises both.
CONN_PERM_SCENARIO = """
name: conn_perm
version: 1
description: typed and untyped edges, a wrongly typed value, paths inside and outside the sandbox, a missing grant.
seed: 0
runs: 1
scene:
  synthetic: {min_objects: 2, max_objects: 3}
servers:
  det: {server: detect-xyxy}
  text: {server: detect-yxyx}
  crop: {server: crop-xywh}
  files: {server: detect-xywh-bl}
task: {kind: none}
agent:
  kind: scripted
  grants: [det.detect, text.locate_objects, crop.crop, files.save_image]
  workflow:
    nodes:
      - id: detect
        call: det.detect
        args: {image: $scene.image}
      - id: locate
        call: text.locate_objects
        args: {image_b64: $scene.image}
      - id: crop_size
        call: crop.crop
        args: {image: $scene.image, box: $detect.image_size}
      - id: crop_text
        call: crop.crop
        for_each: $locate.results
        args: {image: $scene.image, box: $item.box_2d}
      - id: save
        call: files.save_image
        args: {image_b64: $scene.image}
      - id: read_saved
        call: files.detect_file
        args: {path: $save.path}
      - id: read_scene
        call: files.detect_file
        args: {path: $scene.image_path}
      - id: read_escape
        call: files.detect_file
        args: {path: ../../secrets.png}
      - id: read_absolute
        call: files.detect_file
        args: {path: /etc/hosts}
expect: []
"""


def conn_perm_found(records: list[RunRecord]) -> list[Violation]:
    specs = (*CONNECTION, *PERMISSION)
    return [violation for record in records for spec in specs for violation in spec.check(record)]


@pytest.fixture(scope="module")
def conn_perm_violations(recorded_runs: Callable[[Scenario], list[RunRecord]]) -> list[Violation]:
    scenario = load_scenario_text(CONN_PERM_SCENARIO)
    return conn_perm_found(recorded_runs(scenario))


def test_fault_free_detect_crop_has_no_connection_or_permission_violation(clean_runs: list[RunRecord]) -> None:
    assert conn_perm_found(clean_runs) == []


def test_edge_from_a_tool_without_output_schema_is_reported_as_conn_untyped_edge(
    conn_perm_violations: list[Violation],
) -> None:
    untyped = [v for v in conn_perm_violations if v.id == "conn.untyped_edge"]
    assert sorted((v.node, v.detail.split(":")[0]) for v in untyped) == [
        ("crop_text", "edge $item.box_2d -> crop_text.box"),
        ("crop_text", "edge $locate.results -> crop_text.@for_each"),
    ]
    assert all("text.locate_objects lists no outputSchema" in v.detail for v in untyped)


def test_edges_between_declared_schemas_are_not_reported_as_conn_untyped_edge(
    conn_perm_violations: list[Violation],
) -> None:
    nodes = {v.node for v in conn_perm_violations if v.id == "conn.untyped_edge"}
    assert nodes.isdisjoint({"crop_size", "read_saved"})


def test_object_sent_to_an_array_argument_is_reported_as_conn_type_incompatible(
    conn_perm_violations: list[Violation],
) -> None:
    (incompatible,) = [v for v in conn_perm_violations if v.id == "conn.type_incompatible"]
    assert (incompatible.server, incompatible.node) == ("crop", "crop_size")
    assert "object value, schema wants array" in incompatible.detail


def test_converted_boxes_are_not_reported_as_conn_type_incompatible(clean_runs: list[RunRecord]) -> None:
    assert [v for v in conn_perm_found(clean_runs) if v.id == "conn.type_incompatible"] == []


def test_call_to_a_tool_left_out_of_grants_is_reported_as_perm_tool_not_granted(
    conn_perm_violations: list[Violation],
) -> None:
    denied = sorted(v.node or "" for v in conn_perm_violations if v.id == "perm.tool_not_granted")
    assert denied == ["read_absolute", "read_escape", "read_saved", "read_scene"]


def test_granted_calls_are_not_reported_as_perm_tool_not_granted(conn_perm_violations: list[Violation]) -> None:
    denied = {v.node for v in conn_perm_violations if v.id == "perm.tool_not_granted"}
    assert denied.isdisjoint({"detect", "locate", "crop_size", "crop_text", "save"})


def test_paths_leaving_the_sandbox_are_reported_as_perm_path_outside_sandbox(
    conn_perm_violations: list[Violation],
) -> None:
    outside = sorted(v.node or "" for v in conn_perm_violations if v.id == "perm.path_outside_sandbox")
    assert outside == ["read_absolute", "read_escape"]


def test_sandbox_paths_are_not_reported_as_perm_path_outside_sandbox(conn_perm_violations: list[Violation]) -> None:
    outside = {v.node for v in conn_perm_violations if v.id == "perm.path_outside_sandbox"}
    assert outside.isdisjoint({"read_saved", "read_scene"})


@pytest.mark.parametrize(
    ("path", "outside"),
    [
        ("images/a.png", False),
        ("/tmp/exp/sandbox/run-0/scene.png", False),
        ("/tmp/exp/sandbox/../events.jsonl", True),
        ("../a.png", True),
        ("/etc/passwd", True),
        ("..\\..\\a.png", True),
    ],
)
def test_sandbox_rule_of_perm_path_outside_sandbox(path: str, outside: bool) -> None:
    assert path_outside_sandbox(path) is outside
