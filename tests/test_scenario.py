"""Scenario files: a valid one loads, the JSON Schema matches the models, and every broken file fails on one line."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from PIL import Image

from testbed.conventions import BoxConvention
from testbed.scenario import (
    Scenario,
    ScenarioError,
    TaskKind,
    load_scenario,
    load_scenario_text,
    scenario_json_schema,
    write_json_schema,
)
from testbed.scenes import SceneSpec
from testbed.workflow import BoxAdapter, build_graph, topological_layers

REPOSITORY = Path(__file__).resolve().parents[1]
BROKEN = Path(__file__).resolve().parent / "data" / "broken_scenarios"
BROKEN_FILES = sorted(BROKEN.glob("*.yaml"))
SCHEMA_FILE = REPOSITORY / "scenarios" / "scenario.schema.json"

VALID = """\
name: crop-after-detect
version: 1
description: Detect shapes, then crop every circle with a server that wants xywh boxes.
seed: 7
runs: 20
scene:
  synthetic: {width: 320, height: 240, max_objects: 4}
servers:
  det: {server: detect-xyxy}
  det2: {server: detect-xyxy, transport: stdio}
  crop: {server: crop-xywh}
task:
  kind: crop_every
  node: crop
  class_name: circle
agent:
  kind: scripted
  grants: [det.detect, det2.detect, crop.crop]
  workflow:
    nodes:
      - id: detect
        call: det.detect
        args: {image: $scene.image}
        deadline_s: 30
      - id: detect2
        call: det2.detect
        args: {image: $scene.image}
      - id: crop
        call: crop.crop
        for_each: $detect.detections
        args:
          image: $scene.image
          box: $item.bbox
        adapters:
          box: {kind: box, from: xyxy/pixel, to: xywh/pixel}
expect: [coords.mismatch]
faults: [{kind: delay, seconds: 0.5, target: {server: det}}]
deadline_s: 45
"""


def test_a_valid_scenario_loads_into_frozen_models() -> None:
    scenario = load_scenario_text(VALID)

    assert (scenario.name, scenario.version, scenario.seed, scenario.runs) == ("crop-after-detect", 1, 7, 20)
    assert scenario.scene.synthetic == SceneSpec(width=320, height=240, max_objects=4)
    assert scenario.scene.images is None
    assert scenario.servers["det2"].transport == "stdio"
    assert scenario.servers["det"].transport == "inprocess"
    assert (scenario.task.kind, scenario.task.node, scenario.task.class_name) == (TaskKind.CROP_EVERY, "crop", "circle")
    assert scenario.agent.kind == "scripted"
    assert scenario.agent.grants == ("det.detect", "det2.detect", "crop.crop")
    assert scenario.expect == ("coords.mismatch",)
    [fault] = scenario.faults
    assert (fault.kind, fault.target.server) == ("delay", "det")
    assert "validators" not in Scenario.model_fields  # the unused placeholder is gone (issue 10)
    assert scenario.workflow is not None
    crop = scenario.workflow.node("crop")
    assert crop.adapters["box"] == BoxAdapter.between(BoxConvention.from_name("xyxy/pixel"), "xywh/pixel")
    assert topological_layers(build_graph(scenario.workflow)) == [["detect", "detect2"], ["crop"]]
    with pytest.raises(ValueError, match="frozen"):
        scenario.seed = 8


def test_a_node_without_a_deadline_uses_the_scenario_default() -> None:
    scenario = load_scenario_text(VALID)
    workflow = scenario.workflow
    assert workflow is not None

    assert scenario.call_deadline_s(workflow.node("detect")) == 30.0
    assert scenario.call_deadline_s(workflow.node("crop")) == 45.0


def test_a_loaded_scenario_dumps_to_json_and_validates_back_unchanged() -> None:
    scenario = load_scenario_text(VALID)

    assert Scenario.model_validate(scenario.model_dump(mode="json")) == scenario


def test_an_empty_synthetic_entry_means_the_default_generator() -> None:
    text = VALID.replace("  synthetic: {width: 320, height: 240, max_objects: 4}", "  synthetic:")

    assert load_scenario_text(text).scene.synthetic == SceneSpec()


def test_a_date_like_value_stays_text() -> None:
    line = "description: Detect shapes, then crop every circle with a server that wants xywh boxes."
    text = VALID.replace(line, "description: 2024-02-30")  # not even a valid date

    assert load_scenario_text(text).description == "2024-02-30"


def test_relative_image_paths_resolve_against_the_scenario_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path.parent)
    relative = Path(tmp_path.name)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 3)).save(tmp_path / "images" / "a.png")
    scene = "scene:\n  synthetic: {width: 320, height: 240, max_objects: 4}\n"
    paths_file = tmp_path / "paths.yaml"
    paths_file.write_text(VALID.replace(scene, "scene:\n  images: {paths: [images/a.png]}\n"))
    folder_file = tmp_path / "folder.yaml"
    folder_file.write_text(VALID.replace(scene, "scene:\n  images: {folder: images}\n"))

    paths = load_scenario(relative / "paths.yaml").scene.images
    folder = load_scenario(relative / "folder.yaml").scene.images

    assert paths is not None
    assert paths.paths == (tmp_path / "images" / "a.png",)
    assert folder is not None
    assert folder.folder == tmp_path / "images"


def test_packaged_images_are_named_without_a_path() -> None:
    text = VALID.replace(
        "  synthetic: {width: 320, height: 240, max_objects: 4}", "  images: {packaged: [bus.jpg, zidane.jpg]}"
    )

    images = load_scenario_text(text).scene.images

    assert images is not None
    assert images.packaged == ("bus.jpg", "zidane.jpg")


def test_an_unreadable_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ScenarioError) as caught:
        load_scenario(missing)

    assert str(caught.value) == f"{missing}: cannot read the file: No such file or directory"
    assert caught.value.line is None


def test_a_scenario_error_carries_its_parts() -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(VALID.replace("runs: 20", "runs: 0"), source="suite/x.yaml")

    error = caught.value
    assert (error.source, error.line, error.path) == ("suite/x.yaml", 5, "runs")
    assert str(error) == "suite/x.yaml:5: runs: input should be greater than or equal to 1 (got 0)"


def test_a_wrong_value_is_reported_before_a_missing_field() -> None:
    text = VALID.replace("seed: 7\n", "").replace("runs: 20", "runs: -2")

    with pytest.raises(ScenarioError, match=r"^<string>:4: runs: .* \(and 1 more error\)$"):
        load_scenario_text(text)


# --- JSON Schema ------------------------------------------------------------------------------


def test_the_json_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = scenario_json_schema()

    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_a_valid_scenario_document_satisfies_the_json_schema() -> None:
    validator = jsonschema.Draft202012Validator(scenario_json_schema())

    assert list(validator.iter_errors(yaml.safe_load(VALID))) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("seed: 7", "sead: 7"),
        ("runs: 20", "runs: 0"),
        ("from: xyxy/pixel", "from: xyxy/pixels"),
        ("kind: scripted", "kind: llm"),
        ("expect: [coords.mismatch]", "expect: [Coords]"),
        ("  synthetic: {width: 320, height: 240, max_objects: 4}", "  synthetic: {}\n  images: {folder: x}"),
    ],
)
def test_a_structurally_broken_document_fails_the_json_schema(old: str, new: str) -> None:
    validator = jsonschema.Draft202012Validator(scenario_json_schema())
    assert old in VALID

    assert list(validator.iter_errors(yaml.safe_load(VALID.replace(old, new)))) != []


def test_the_committed_json_schema_is_up_to_date(tmp_path: Path) -> None:
    written = write_json_schema(tmp_path / "scenario.schema.json")

    assert json.loads(written.read_text()) == scenario_json_schema()
    assert SCHEMA_FILE.read_text() == written.read_text(), "run testbed.scenario.write_json_schema to refresh it"


# --- the broken-scenario corpus ---------------------------------------------------------------


def expectations(path: Path) -> tuple[str, int | None]:
    """The ``# error: <substring>`` and ``# line: <n | none>`` headers of a corpus file.

    In each file the offending line also ends with a ``# <- error`` comment, for readers.
    """
    first, second = path.read_text().splitlines()[:2]
    assert first.startswith("# error: "), f"{path.name}: first line must be '# error: <substring>'"
    assert second.startswith("# line: "), f"{path.name}: second line must be '# line: <n>' or '# line: none'"
    line = second.removeprefix("# line: ")
    return first.removeprefix("# error: "), None if line == "none" else int(line)


def test_the_broken_scenario_corpus_covers_at_least_twenty_cases() -> None:
    assert len(BROKEN_FILES) >= 20


@pytest.mark.parametrize("path", BROKEN_FILES, ids=[path.stem for path in BROKEN_FILES])
def test_a_broken_scenario_fails_with_one_line_naming_file_line_and_problem(path: Path) -> None:
    substring, line = expectations(path)

    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)

    message = str(caught.value)
    assert "\n" not in message
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(prefix), message
    assert substring in message, message
