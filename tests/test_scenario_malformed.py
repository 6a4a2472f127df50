"""Malformed scenarios: every one is refused before any run, as one line naming file, line and field.

The corpus in ``data/malformed_scenarios`` holds one file per case; its first line is
``# expect: <substring of the error>`` and the offending line ends with ``# <- error``.
Files too large to commit (bombs, deep nesting, oversized files) are generated here.
"""

from __future__ import annotations

import itertools
import re
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from testbed.cli import main
from testbed.registry import registry
from testbed.scenario import Scenario, ScenarioError, load_scenario, load_scenario_text
from testbed.scenario._model import MAX_RUNS
from testbed.scenario._yaml import MAX_BYTES, MAX_DEPTH, MAX_NODES

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "data" / "malformed_scenarios"
CORPUS_FILES = sorted(CORPUS.glob("*.yaml"))
V1 = HERE.parent / "scenarios" / "v1"
MARKER = "# <- error"
TIME_BOUND_S = 5.0  # the goal is < 2 s; generous because CI machines are noisy
MEMORY_BOUND = 256 * 2**20

VALID = """\
name: detect-crop
version: 1
seed: 3
runs: 4
scene:
  synthetic: {max_objects: 3}
servers:
  det: {server: detect-xyxy}
  crop: {server: crop-xywh}
task: {kind: crop_every, node: crop, class_name: circle}
agent:
  kind: scripted
  workflow:
    nodes:
      - id: detect
        call: det.detect
        args: {image: $scene.image}
      - id: crop
        call: crop.crop
        for_each: $detect.detections
        args: {image: $scene.image, box: $item.bbox}
        adapters:
          box: {kind: box, from: xyxy/pixel, to: xywh/pixel}
"""


def refusal(load: Any, *args: Any, **kwargs: Any) -> ScenarioError:
    """The ScenarioError that loading raises (any other exception fails the test)."""
    with pytest.raises(ScenarioError) as caught:
        load(*args, **kwargs)
    return caught.value


def assert_one_line(message: str) -> None:
    assert len(message.splitlines()) == 1, repr(message)
    assert "Traceback" not in message


def within_bounds(load: Any, *args: Any) -> ScenarioError:
    """Refuse, timing it; then refuse again under tracemalloc (which slows Python several times) for the peak."""
    started = time.perf_counter()
    error = refusal(load, *args)
    elapsed = time.perf_counter() - started
    tracemalloc.start()
    try:
        refusal(load, *args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_one_line(str(error))
    assert elapsed < TIME_BOUND_S, f"took {elapsed:.2f} s"
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.0f} MiB"
    return error


# --- the corpus ----------------------------------------------------------------------------------


def expected(path: Path) -> tuple[str, int | None]:
    """The ``# expect:`` substring and the line marked ``# <- error`` (``None`` when unmarked)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# expect: "), f"{path.name}: first line must be '# expect: <substring>'"
    marked = [number for number, line in enumerate(lines, start=1) if line.rstrip().endswith(MARKER)]
    assert len(marked) <= 1, f"{path.name}: mark one line at most"
    return lines[0].removeprefix("# expect: "), marked[0] if marked else None


def test_the_corpus_has_at_least_forty_cases_in_every_category() -> None:
    assert len(CORPUS_FILES) >= 40
    categories = {path.name.split("_", 1)[0] for path in CORPUS_FILES}
    assert categories == {"yaml", "number", "name", "registry", "binding", "scene"}


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[path.stem for path in CORPUS_FILES])
def test_a_malformed_scenario_is_refused_with_one_line_naming_file_line_and_problem(path: Path) -> None:
    substring, line = expected(path)

    error = refusal(load_scenario, path)

    message = str(error)
    assert_one_line(message)
    assert re.match(rf"^{re.escape(str(path))}:\d+: ", message), message
    assert error.line is not None
    if line is not None:
        assert error.line == line, message
    assert substring in message, message


def test_scenario_check_reports_each_malformed_file_on_one_line_without_a_traceback() -> None:
    result = CliRunner().invoke(main, ["scenario", "check", *map(str, CORPUS_FILES)])

    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[-1] == f"Error: {len(CORPUS_FILES)} of {len(CORPUS_FILES)} scenario file(s) are invalid"
    assert sorted(line.split(":", 1)[0] for line in lines[:-1]) == [str(path) for path in CORPUS_FILES]


def test_the_corpus_files_are_the_valid_scenario_but_for_one_fault() -> None:
    # Guards the corpus against refusing for a reason other than its own: the unmodified base loads.
    load_scenario_text(VALID, base_dir=CORPUS)


# --- YAML within limits ----------------------------------------------------------------------------


def billion_laughs(levels: int = 9, fanout: int = 10) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]" for i in range(1, levels + 1)]
    return VALID + "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())

    error = within_bounds(load_scenario, path)

    assert "(an alias bomb?)" in str(error)
    assert f"more than {MAX_NODES} nodes" in str(error)
    assert error.line is not None


def test_a_wide_alias_bomb_of_mappings_and_merge_keys_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4}"]
    lines += [f"m{i}: &m{i} {{<<: *m{i - 1}, x: [*m{i - 1}, *m{i - 1}, *m{i - 1}, *m{i - 1}]}}" for i in range(1, 30)]
    path = tmp_path / "merge_bomb.yaml"
    path.write_text(VALID + "\n".join(lines) + "\n")

    error = within_bounds(load_scenario, path)

    assert "(an alias bomb?)" in str(error)


@pytest.mark.parametrize(
    ("name", "nesting"),
    [
        ("flow_lists", "x: " + "[" * 10_000 + "]" * 10_000),
        ("flow_mappings", "x: " + "{a: " * 10_000 + "}" * 10_000),
        ("block_lists", "x:\n" + "".join("  " * depth + "-\n" for depth in range(1, 500))),
        ("unclosed_flow_lists", "x: " + "[" * 10_000),
    ],
)
def test_very_deep_nesting_is_refused_quickly_with_one_line(tmp_path: Path, name: str, nesting: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(VALID + nesting + "\n")

    error = within_bounds(load_scenario, path)

    assert f"nested more than {MAX_DEPTH} levels deep" in str(error)


def test_aliases_that_nest_too_deep_when_expanded_are_refused(tmp_path: Path) -> None:
    lines = ["d0: &d0 " + "[" * 40 + "]" * 40, "d1: &d1 " + "[" * 40 + "*d0" + "]" * 40]
    path = tmp_path / "deep_alias.yaml"
    path.write_text(VALID + "\n".join(lines) + "\n")

    error = within_bounds(load_scenario, path)

    assert f"alias *d0 nests the document more than {MAX_DEPTH} levels deep" in str(error)


def test_a_file_over_one_mebibyte_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(VALID + "description: " + "x" * MAX_BYTES + "\n")

    error = within_bounds(load_scenario, path)

    assert str(error) == f"{path}: the file is larger than 1 MiB, the limit for a scenario file"
    with pytest.raises(ScenarioError, match="larger than 1 MiB"):
        load_scenario_text(path.read_text())


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_device_is_read_no_further_than_the_size_limit() -> None:
    error = within_bounds(load_scenario, Path("/dev/zero"))

    assert "larger than 1 MiB" in str(error)


@pytest.mark.parametrize(
    ("name", "filler"),
    [
        ("long_description", 'description: "' + "x" * (MAX_BYTES - 4_000) + '"\n'),
        ("many_comments", ("# " + "c" * 98 + "\n") * ((MAX_BYTES - 4_000) // 101)),
    ],
)
def test_a_valid_file_just_under_the_size_limit_loads_quickly(tmp_path: Path, name: str, filler: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(VALID + filler)
    assert path.stat().st_size < MAX_BYTES

    started = time.perf_counter()
    load_scenario(path)

    assert time.perf_counter() - started < TIME_BOUND_S


def test_a_file_with_too_many_nodes_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(VALID + "x: [" + ", ".join(["1"] * (MAX_BYTES // 3 - 2_000)) + "]\n")
    assert path.stat().st_size < MAX_BYTES

    error = within_bounds(load_scenario, path)

    assert f"it holds more than {MAX_NODES} nodes" in str(error)


def test_a_binary_file_is_refused_as_one_line(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 10)

    error = refusal(load_scenario, path)

    assert_one_line(str(error))
    assert "not UTF-8" in str(error)


def test_anchors_aliases_and_merge_keys_used_normally_still_work() -> None:
    text = VALID.replace(
        "        args: {image: $scene.image}\n",
        "        args: &detect_args {image: $scene.image}\n        deadline_s: &deadline 30\n",
    ).replace(
        "        args: {image: $scene.image, box: $item.bbox}\n",
        "        args: {<<: *detect_args, box: $item.bbox}\n        deadline_s: *deadline\n",
    )

    scenario = load_scenario_text(text)

    assert scenario.workflow is not None
    assert scenario.workflow.node("crop").args == {"image": "$scene.image", "box": "$item.bbox"}
    assert scenario.workflow.node("crop").deadline_s == 30


def test_a_line_break_in_quoted_input_never_splits_the_error_line() -> None:
    error = refusal(load_scenario_text, VALID.replace("seed: 3", 'seed: "3\\u2028\\n4"'))

    assert_one_line(str(error))
    assert "seed" in str(error)


# --- numbers ---------------------------------------------------------------------------------------


def test_runs_up_to_the_documented_bound_are_accepted_and_beyond_refused() -> None:
    assert load_scenario_text(VALID.replace("runs: 4", f"runs: {MAX_RUNS}")).runs == MAX_RUNS
    assert "100,000" in (Scenario.model_fields["runs"].description or "")

    error = refusal(load_scenario_text, VALID.replace("runs: 4", f"runs: {MAX_RUNS + 1}"))

    assert str(error) == f"<string>:4: runs: input should be less than or equal to {MAX_RUNS} (got {MAX_RUNS + 1})"


def test_a_fault_in_the_last_run_is_accepted() -> None:
    text = VALID + "faults:\n  - {kind: delay, runs: [0, 3], nodes: [detect, crop], target: {server: det}}\n"

    [fault] = load_scenario_text(text).faults

    assert fault.runs == (0, 3)


# --- every model forbids unknown settings ----------------------------------------------------------


def scenario_models() -> Iterator[type[BaseModel]]:
    """Every model a scenario file can reach: the scenario's own, and each registered agent, fault and scene spec."""
    roots: list[Any] = [Scenario]
    reg = registry()
    roots += [plugin.spec for plugin in reg.agents.values()]
    roots += [plugin.spec for plugin in reg.faults.values()]
    roots += [plugin.spec for plugin in reg.scene_sources.values()]
    seen: set[type[BaseModel]] = set()
    while roots:
        annotation = roots.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                continue
            seen.add(annotation)
            yield annotation
            roots += [info.annotation for info in annotation.model_fields.values()]
        elif get_origin(annotation) is not None or get_args(annotation):
            roots += list(get_args(annotation))


def test_every_model_in_the_scenario_tree_forbids_unknown_settings() -> None:
    models = list(scenario_models())
    names = {model.__name__ for model in models}
    assert {"Scenario", "SceneSpec", "EmbeddedLLM", "OpenAICompatibleLLM", "BoxAdapter", "MaskAdapter"} <= names
    assert {"MaskConvention", "FaultTarget", "WorkflowNode", "Worker", "Task", "ImageSet"} <= names

    # A scene names its source by key: SceneSource takes the registered names as extra keys, each validated.
    open_models = [model.__name__ for model in models if model.model_config.get("extra") != "forbid"]
    assert open_models == ["SceneSource"]


def test_an_unknown_scene_source_is_refused_as_one_line() -> None:
    error = refusal(load_scenario_text, VALID.replace("synthetic: {max_objects: 3}", "synthetc: {max_objects: 3}"))

    assert str(error).startswith("<string>:6: scene.synthetc: unknown scene source 'synthetc'"), str(error)


# --- bindings: declaration order does not matter -------------------------------------------------


DIAMOND = """\
name: diamond
version: 1
seed: 0
runs: 2
scene:
  synthetic: {max_objects: 3}
servers:
  det: {server: detect-xyxy}
  seg: {server: segment-rle}
  crop: {server: crop-xywh}
task: {kind: crop_every, node: crop, class_name: circle}
agent:
  kind: scripted
  workflow:
    nodes:
"""
DIAMOND_NODES = [
    "      - {id: detect, call: det.detect, args: {image: $scene.image}}\n",
    '      - {id: segment, call: seg.segment, args: {image: $scene.image, boxes: "$detect.detections[*].bbox"}}\n',
    "      - id: crop\n        call: crop.crop\n        for_each: $segment.instances\n"
    "        args: {image: $scene.image, box: $item.bbox}\n"
    "        adapters: {box: {kind: box, from: xyxy/pixel, to: xywh/pixel}}\n",
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_reordering_the_nodes_does_not_change_acceptance(order: tuple[int, ...]) -> None:
    scenario = load_scenario_text(DIAMOND + "".join(DIAMOND_NODES[index] for index in order))

    assert scenario.workflow is not None
    assert sorted(scenario.workflow.node_ids) == ["crop", "detect", "segment"]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_reordering_the_nodes_does_not_change_a_refusal(order: tuple[int, ...]) -> None:
    nodes = [node.replace("$item.bbox", "$item.bbxo") for node in DIAMOND_NODES]

    error = refusal(load_scenario_text, DIAMOND + "".join(nodes[index] for index in order))

    assert "no field 'bbxo' (did you mean 'bbox'?)" in str(error)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_a_cycle_is_refused_with_the_cycle_named_in_any_order(order: tuple[int, ...]) -> None:
    nodes = [DIAMOND_NODES[0].replace("$scene.image", "$crop.@content"), *DIAMOND_NODES[1:]]

    error = refusal(load_scenario_text, DIAMOND + "".join(nodes[index] for index in order))

    assert_one_line(str(error))
    members = re.search(r"cycle in the workflow: ([a-z >-]+) \(", str(error))
    assert members is not None, str(error)
    cycle = members.group(1).split(" -> ")
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["crop", "detect", "segment"]


def test_every_v1_scenario_still_loads() -> None:
    files = sorted(V1.glob("*.yaml"))
    assert files

    for path in files:
        load_scenario(path)


def test_parsing_never_constructs_python_objects() -> None:
    text = VALID.replace("seed: 3", "seed: !!python/object/apply:os.getpid []")

    error = refusal(load_scenario_text, text)

    assert "could not determine a constructor" in str(error)
