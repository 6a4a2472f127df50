"""testbed experiment: paired factorial designs, run cell by cell, compared with paired statistics."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import jsonschema
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from testbed._errors import TestbedError
from testbed.cli import main
from testbed.events import RunFinished, RunStarted, read_events
from testbed.experiment import (
    MANIFEST_FILE,
    DesignError,
    Plan,
    analyse,
    cell_dir,
    compare_binary,
    compare_numeric,
    experiment_json_schema,
    holm,
    load_design,
    load_design_text,
    plan_experiment,
    plan_from_manifest,
    run_cells,
    write_experiment_json_schema,
    write_manifest,
)
from testbed.faults import FaultPlan
from testbed.orchestrator import scene_for_run
from testbed.transport import CallSite
from testbed.vision import shared_inference_cache

REPOSITORY = Path(__file__).resolve().parents[1]
V1 = REPOSITORY / "scenarios" / "v1"
EXAMPLE = REPOSITORY / "scenarios" / "experiments" / "agents_faults.yaml"
SCHEMA_FILE = REPOSITORY / "scenarios" / "experiment.schema.json"

FLIP = "{kind: flip_convention, to: xywh/pixel, target: {server: det, tool: detect, path: 'detections[*].bbox'}}"


def _design(tmp_path: Path, body: str, *, runs: int = 4, scenario: str | None = None) -> Path:
    path = tmp_path / "design.yaml"
    scenario = scenario or str(V1 / "detect_crop.yaml")
    path.write_text(f"name: trial\nscenario: {scenario}\nseed: 3\nruns: {runs}\n{body}", encoding="utf-8")
    return path


def _plan(tmp_path: Path, body: str, **kwargs: object) -> Plan:
    return plan_experiment(load_design(_design(tmp_path, body)), **kwargs)  # type: ignore[arg-type]


# --- design and planning -------------------------------------------------------------------------


def test_the_shipped_example_plans_every_combination_with_default_contrasts() -> None:
    plan = plan_experiment(load_design(EXAMPLE))

    assert [cell.levels for cell in plan.cells] == [
        (("scenario", "detect_crop"), ("agent", "scripted"), ("flip", "off")),
        (("scenario", "detect_crop"), ("agent", "scripted"), ("flip", "on")),
        (("scenario", "detect_segment_crop"), ("agent", "scripted"), ("flip", "off")),
        (("scenario", "detect_segment_crop"), ("agent", "scripted"), ("flip", "on")),
    ]
    assert {cell.scenario.seed for cell in plan.cells} == {0}
    assert [cell.scenario.faults[-1].probability for cell in plan.cells] == [0.0, 0.5, 0.0, 0.5]
    flip = next(contrast for contrast in plan.contrasts if contrast.name == "flip: on vs off")
    # The scenario set is pooled: the fault is compared within each scenario, pairs stacked.
    assert flip.strata == ((plan.cells[1].id, plan.cells[0].id), (plan.cells[3].id, plan.cells[2].id))


def test_two_switches_get_a_contrast_each_and_one_of_both_against_baseline(tmp_path: Path) -> None:
    drop = "{kind: drop, target: {server: crop}}"
    body = (
        f"factors:\n  flip:\n    kind: faults\n    fault: {FLIP}\n    probability: [off, on]\n"
        f"  drop:\n    kind: faults\n    fault: {drop}\n    probability: [0, 0.2, 1]\n"
    )
    plan = _plan(tmp_path, body)

    ids = {cell.levels: cell.id for cell in plan.cells}
    assert len(plan.cells) == 6
    assert [(contrast.name, contrast.strata) for contrast in plan.contrasts] == [
        ("flip: on vs off", ((ids[("flip", "on"), ("drop", "0")], ids[("flip", "off"), ("drop", "0")]),)),
        ("drop: 0.2 vs 0", ((ids[("flip", "off"), ("drop", "0.2")], ids[("flip", "off"), ("drop", "0")]),)),
        ("drop: 1 vs 0", ((ids[("flip", "off"), ("drop", "1")], ids[("flip", "off"), ("drop", "0")]),)),
        (
            "all: flip=on, drop=1 vs baseline",
            ((ids[("flip", "on"), ("drop", "1")], ids[("flip", "off"), ("drop", "0")]),),
        ),
    ]
    # Each fault keeps its own slot in every cell, so neither moves the other's draws.
    assert {tuple(fault.kind for fault in cell.scenario.faults) for cell in plan.cells} == {("flip_convention", "drop")}


def test_quick_and_runs_override_the_runs_of_every_cell(tmp_path: Path) -> None:
    plan = _plan(tmp_path, f"factors:\n  flip:\n    kind: faults\n    fault: {FLIP}\n    probability: [0, 1]\n", runs=2)

    assert plan.runs == 2
    assert {cell.scenario.runs for cell in plan.cells} == {2}


def test_every_cell_draws_the_same_fault_decisions_and_scenes(tmp_path: Path) -> None:
    body = (
        "factors:\n  flip:\n    kind: faults\n    labels: [low_a, low_b, half, full]\n"
        f"    fault: {FLIP}\n    probability: [0.3, 0.3, 0.5, 1.0]\n"
    )
    plan = _plan(tmp_path, body)

    def hits(cell: int) -> set[int]:
        scenario = plan.cells[cell].scenario
        fault_plan = FaultPlan(scenario.faults, seed=scenario.seed)
        site = {"node": "detect", "item": 0, "server": "det", "tool": "detect"}
        return {run for run in range(400) if fault_plan.faults_for(CallSite(run=run, **site))}  # type: ignore[arg-type]

    low_a, low_b, half, full = (hits(cell) for cell in range(4))
    assert low_a == low_b
    assert 80 < len(low_a) < 160  # about 30 % of 400
    assert low_a <= half <= full == set(range(400))  # one draw per call site: a weaker fault hits a subset
    scenes = [scene_for_run(cell.scenario, 5, None) for cell in plan.cells]
    assert all(np.array_equal(scene.image, scenes[0].image) for scene in scenes)


def test_an_override_factor_changes_one_field_of_every_cell(tmp_path: Path) -> None:
    body = "factors:\n  crowd:\n    kind: override\n    path: scene.synthetic.max_objects\n    values: [3, 6]\n"
    plan = _plan(tmp_path, body)

    assert [cell.scenario.scene.synthetic.max_objects for cell in plan.cells] == [3, 6]  # type: ignore[union-attr]
    assert [cell.level("crowd") for cell in plan.cells] == ["3", "6"]


def test_an_agent_level_may_be_a_whole_agent_section(tmp_path: Path) -> None:
    scripted = yaml.safe_load((V1 / "detect_crop.yaml").read_text())["agent"]
    body = f"factors:\n  agent:\n    kind: agent\n    levels: [retrieval, {json.dumps(scripted)}]\n"

    plan = plan_experiment(load_design(_design(tmp_path, body, scenario=str(V1 / "retrieval_detect_crop.yaml"))))

    assert [cell.scenario.agent.kind for cell in plan.cells] == ["retrieval", "scripted"]
    assert [cell.level("agent") for cell in plan.cells] == ["retrieval", "scripted"]


def test_an_agent_that_cannot_run_the_scenario_is_refused_at_its_level(tmp_path: Path) -> None:
    retrieval = yaml.safe_load((V1 / "retrieval_detect_crop.yaml").read_text())["agent"]
    path = _design(tmp_path, f"factors:\n  agent:\n    kind: agent\n    levels: [scripted, {json.dumps(retrieval)}]\n")

    # detect_crop checks its task by workflow node, which an agent that plans for itself does not have.
    with pytest.raises(DesignError, match=r":8: factors\.agent\.levels\[1\]: cell \(agent=retrieval\).*task\.node"):
        plan_experiment(load_design(path))


BAD_DESIGNS = [
    ("factors:\n  colour:\n    kind: colour\n    levels: [red]\n", "factors.colour.kind", "unknown kind 'colour'", 7),
    ("factors:\n  agent:\n    kind: agent\n    levels: [scripted, wizard]\n", "factors.agent.levels[1]",
     "unknown agent kind 'wizard'", 8),
    ("factors:\n  agent:\n    kind: agent\n    levels: [scripted, retrieval]\n", "factors.agent.levels[1]",
     "give this level as a whole agent section", 8),
    ("factors:\n  f:\n    kind: faults\n    fault: {kind: flipp, target: {server: det}}\n    probability: [0, 1]\n",
     "factors.f.fault.kind", "unknown kind 'flipp'", 8),
    ("factors:\n  f:\n    kind: faults\n    fault: {kind: drop, target: {server: nope}}\n    probability: [0, 1]\n",
     "factors.f.fault", "faults[0].target.server: fault target server 'nope' is not a server alias", 8),
    ("factors:\n  f:\n    kind: faults\n    fault: {kind: drop, target: {server: det}}\n    probability: [0, 1.5]\n",
     "factors.f.probability[1]", "must be between 0 and 1", 9),
    ("factors:\n  o:\n    kind: override\n    path: servers.det.sever\n    values: [a]\n", "factors.o.values[0]",
     "servers.det.sever: unknown field; did you mean 'server'?", 9),
    ("factors:\n  o:\n    kind: override\n    path: servers.dett.server\n    values: [a]\n", "factors.o.path",
     "has no 'servers.dett' to change", 8),
    ("factors:\n  o:\n    kind: override\n    path: servers.det.server\n    values: [detect-xyxy, nope]\n",
     "factors.o.values[1]", "unknown server 'nope'", 9),
    ("factors:\n  o:\n    kind: override\n    path: servers.det.server\n    values: [detect-xyxy, detect-yxyx]\n",
     "factors.o.values[1]", "server 'det' (detect-yxyx) has no tool 'detect'", 9),
    ("factors:\n  s:\n    kind: scenario\n    levels: [nope.yaml]\n", "factors.s.levels[0]",
     "no such scenario file", 8),
    ("factors: {}\n", "factors", "the design is empty", 5),
    ("", "factors", "the design is empty", 1),
    ("factors:\n  f:\n    kind: faults\n    fault: {kind: drop, target: {server: det}}\n    probability: [off, on]\n"
     "contrasts:\n  - treatment: {f: maybe}\n", "contrasts[0].treatment.f", "factor 'f' has no level 'maybe'", 11),
    ("factors:\n  f:\n    kind: faults\n    fault: {kind: drop, target: {server: det}}\n    probability: [off, on]\n"
     "contrasts:\n  - treatment: {g: on}\n", "contrasts[0].treatment.g", "unknown factor 'g'", 11),
    ("factorz: {}\n", "factorz", "unknown field; did you mean 'factors'?", 5),
    ("factors:\n  f:\n    kind: faults\n    fault: {kind: drop, target: {server: det}}\n    probability: [off, on]\n"
     "contrasts:\n  - treatment: {f: off}\n", "contrasts[0].treatment", "the treatment and the baseline are the same",
     11),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field", "message", "line"), BAD_DESIGNS, ids=[case[2] for case in BAD_DESIGNS])
def test_a_bad_design_is_one_line_naming_the_file_line_and_field(
    tmp_path: Path, body: str, field: str, message: str, line: int
) -> None:
    path = _design(tmp_path, body)

    with pytest.raises(DesignError) as raised:
        plan_experiment(load_design(path))

    error = raised.value
    assert "\n" not in str(error)
    assert str(error).startswith(f"{path}:{line}: {field}: ")
    assert message in error.message


def test_a_design_over_ten_thousand_cells_needs_force(tmp_path: Path) -> None:
    factor = "    kind: override\n    path: deadline_s\n    values: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n"
    body = "factors:\n" + "".join(f"  o{index}:\n{factor}" for index in range(4))
    path = _design(tmp_path, body)

    with pytest.raises(DesignError, match=r":5: factors: the design has 14,641 cells .* pass --force"):
        plan_experiment(load_design(path))
    result = CliRunner().invoke(main, ["experiment", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "14,641 cells" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give a design FILE.yaml, or --resume OUT"),
        (["--resume", "{tmp}"], "no design.json: not an experiment directory of testbed experiment"),
        (["{example}", "--resume", "{tmp}"], "--resume OUT reads the design, runs and seed from OUT/design.json"),
        (["{tmp}/missing.yaml"], "missing.yaml: cannot read the file"),
    ],
)
def test_the_command_refuses_bad_arguments_in_one_line(tmp_path: Path, arguments: list[str], message: str) -> None:
    filled = [argument.format(tmp=tmp_path, example=EXAMPLE) for argument in arguments]

    result = CliRunner().invoke(main, ["experiment", *filled])

    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_the_committed_json_schema_is_up_to_date_and_accepts_the_example(tmp_path: Path) -> None:
    written = write_experiment_json_schema(tmp_path / "experiment.schema.json")

    assert SCHEMA_FILE.read_text() == written.read_text(), "run testbed.experiment.write_experiment_json_schema"
    validator = jsonschema.Draft202012Validator(experiment_json_schema())
    assert list(validator.iter_errors(yaml.safe_load(EXAMPLE.read_text()))) == []
    assert list(validator.iter_errors({"name": "x", "scenario": "a.yaml", "seed": 0, "runs": 0})) != []


def test_the_manifest_plans_the_same_cells_without_the_design_files(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text((V1 / "detect_crop.yaml").read_text())
    path = _design(tmp_path, f"factors:\n  flip:\n    kind: faults\n    fault: {FLIP}\n    probability: [0, 1]\n",
                   scenario="s.yaml")  # fmt: skip
    plan = plan_experiment(load_design(path))
    other = plan_experiment(load_design_text(path.read_text().replace("seed: 3", "seed: 4"), path=path))
    out = tmp_path / "out"
    write_manifest(plan, out)
    path.unlink()
    scenario.unlink()

    again, text = plan_from_manifest(out)

    assert [(cell.id, cell.scenario) for cell in again.cells] == [(cell.id, cell.scenario) for cell in plan.cells]
    assert "flip_convention" in text
    with pytest.raises(TestbedError, match="holds experiment 'trial' with other cells, seed or runs per cell"):
        write_manifest(other, out, text=text)


# --- statistics ----------------------------------------------------------------------------------


def test_identical_paired_outcomes_have_no_discordant_pairs_and_p_one() -> None:
    outcome = np.array([True, False, True, True, False, False, True, False])

    comparison = compare_binary(outcome, outcome.copy(), confidence=0.95)

    assert comparison is not None
    assert (comparison.treatment_only, comparison.baseline_only) == (0, 0)
    assert comparison.p_value == 1.0
    assert comparison.difference == 0.0
    assert comparison.low < 0.0 < comparison.high


def test_a_planted_paired_difference_gives_the_exact_mcnemar_p() -> None:
    comparison = compare_binary(np.ones(12, dtype=bool), np.zeros(12, dtype=bool), confidence=0.95)

    assert comparison is not None
    assert comparison.p_value == pytest.approx(2 * 0.5**12)
    assert comparison.difference == 1.0
    assert 0.6 < comparison.low < comparison.high == pytest.approx(1.0)


def test_paired_numbers_are_compared_by_their_differences() -> None:
    rng = np.random.default_rng(0)
    baseline = rng.normal(10.0, 3.0, size=30)

    shifted = compare_numeric(baseline + 1.0, baseline, confidence=0.95, rng=np.random.default_rng(1))
    same = compare_numeric(baseline.copy(), baseline, confidence=0.95, rng=np.random.default_rng(1))

    assert shifted is not None
    assert same is not None
    # Every pair differs by exactly 1: the pairing removes the spread of the runs entirely.
    assert (shifted.difference, shifted.low, shifted.high) == pytest.approx((1.0, 1.0, 1.0))
    assert shifted.p_value < 1e-3
    assert same.p_value == 1.0


def test_holm_adjusts_step_down() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


# --- running -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_planted_fault_is_detected_and_identical_levels_show_no_effect(tmp_path: Path) -> None:
    body = (
        "factors:\n  flip:\n    kind: faults\n    labels: [none, full, low_a, low_b]\n"
        f"    fault: {FLIP}\n    probability: [0, 1.0, 0.3, 0.3]\n"
        "contrasts:\n"
        "  - {name: planted, treatment: {flip: full}, baseline: {flip: none}}\n"
        "  - {name: no effect, treatment: {flip: low_b}, baseline: {flip: low_a}}\n"
    )
    plan = _plan(tmp_path, body, runs=12)
    out = tmp_path / "out"
    write_manifest(plan, out)
    anyio.run(lambda: run_cells(plan, out, device="cpu"))
    # Each cell started with a cold inference cache: the last cell's detections were computed, not reused
    # from earlier cells' identical scenes (which would make latency measure the order of the cells).
    cache = shared_inference_cache().stats
    assert (cache.hits, cache.misses) == (0, plan.runs)

    results = analyse(plan, out)

    rows = results.contrasts.set_index(["contrast", "outcome"])
    planted = rows.loc[("planted", "coords")]
    assert planted["p_value"] < 0.01
    assert planted["p_holm"] < 0.01
    assert (planted["treatment"], planted["baseline"]) == (1.0, 0.0)
    null = rows.loc["no effect"]
    binary = null[null["measure"] == "proportion"]
    assert set(binary.index) >= {"coords", "task_success"}
    assert (binary["p_value"] == 1.0).all()
    assert (binary["treatment_only"] == 0).all()
    assert (binary["baseline_only"] == 0).all()
    assert null.loc["calls", "p_value"] == 1.0
    # Pairing is real: run i of every cell saw the same scene, and the two 0.3 cells faulted the same runs.
    started = {
        cell.level("flip"): {e.run: e.image_blob for e in read_events(cell_dir(out, cell.id)).events
                             if isinstance(e, RunStarted)}
        for cell in plan.cells
    }  # fmt: skip
    assert len({tuple(sorted(blobs.items())) for blobs in started.values()}) == 1
    assert len(set(started["none"].values())) > 1
    faulted = results.cells.set_index("flip")["coords_percent"]
    assert faulted["low_a"] == faulted["low_b"]
    for name in ("cells.csv", "contrasts.csv"):
        assert not (out / name).exists()  # analyse writes nothing; the CLI writes the files


class _InterruptedError(Exception):
    pass


@pytest.mark.slow
def test_an_interrupted_experiment_resumes_each_cell_and_records_every_run_once(tmp_path: Path) -> None:
    plan = _plan(tmp_path, f"factors:\n  flip:\n    kind: faults\n    fault: {FLIP}\n    probability: [0, 1, 0.5]\n")
    out = tmp_path / "out"
    write_manifest(plan, out)

    def stop_in_the_second_cell(done: int, total: int) -> None:
        if done == plan.runs + 2:
            raise _InterruptedError

    with pytest.raises((_InterruptedError, BaseExceptionGroup)):
        anyio.run(lambda: run_cells(plan, out, progress=stop_in_the_second_cell, device="cpu"))
    assert not (cell_dir(out, plan.cells[2].id) / "events.jsonl").exists()

    result = CliRunner().invoke(main, ["experiment", "--resume", str(out), "--device", "cpu"])

    assert result.exit_code == 0, result.output
    for cell in plan.cells:
        runs = [e.run for e in read_events(cell_dir(out, cell.id)).events if isinstance(e, RunFinished)]
        assert sorted(runs) == list(range(plan.runs))
    assert "flip: 1 vs 0" in result.output
    assert (out / "contrasts.csv").is_file()


@pytest.mark.slow
def test_the_shipped_example_runs_quick_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "example"

    result = CliRunner().invoke(main, ["experiment", str(EXAMPLE), "--quick", "--out", str(out), "--device", "cpu"])

    assert result.exit_code == 0, result.output
    assert "flip: on vs off" in result.output
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["runs"] == 10
    assert len(manifest["cells"]) == 4
    for name in ("cells.csv", "cells.parquet", "contrasts.csv", "contrasts.parquet", "effects.png", "report.html"):
        assert (out / name).stat().st_size > 0
    assert '<img alt="effect plot" src="data:image/png;base64,' in (out / "report.html").read_text()
    again = CliRunner().invoke(main, ["experiment", str(EXAMPLE), "--quick", "--out", str(out), "--device", "cpu"])
    assert again.exit_code == 0, again.output  # every cell finished: nothing reruns, the tables are rewritten
