"""The extensions experiment: factor kinds for each extension and their bundles, population levels, the
latency statistics, the paper tables and forest plots, and the shipped design."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import mcp.types as types
import numpy as np
import pytest
from click.testing import CliRunner

from agents._specs import LLMAgentSpec
from agents.llm import LLMAgent
from servers.parametric import build_parametric
from testbed.cli import main
from testbed.experiment import (
    BUNDLES,
    MANIFEST_FILE,
    DesignError,
    PopulationLevels,
    analyse,
    cell_dir,
    compare_binary,
    compare_ratio,
    load_design,
    plan_experiment,
    plan_from_manifest,
    run_cells,
    write_manifest,
    write_results,
)
from testbed.experiment._extensions import contracts_edit, memory_edit, observability_edit
from testbed.experiment._factors import Document
from testbed.experiment._stats import quantile_interval
from testbed.experiment._tables import latex, markdown
from testbed.orchestrator import replay_experiment
from testbed.profile import ConventionProfile
from testbed.protocol import MemoryScope
from testbed.scenario import Scenario
from testbed.server_config import ServerConfig

REPOSITORY = Path(__file__).resolve().parents[1]
V1 = REPOSITORY / "scenarios" / "v1"
PREVALENCE = REPOSITORY / "scenarios" / "populations" / "audit-2025.yaml"
SHIPPED = REPOSITORY / "scenarios" / "experiments" / "extensions.yaml"


def _design(tmp_path: Path, scenario: str, body: str, *, runs: int = 4) -> Path:
    path = tmp_path / "design.yaml"
    path.write_text(f"name: trial\nscenario: {scenario}\nseed: 1\nruns: {runs}\n{body}", encoding="utf-8")
    return path


def _population(workflows: int = 3) -> str:
    return f"{{prevalence: {PREVALENCE}, members: 12, seed: 2025, workflows: {workflows}}}"


# --- factor kinds ----------------------------------------------------------------------------------


def _document(**data: Any) -> Document:
    return Document({"name": "x", **data}, V1 / "detect_crop.yaml")


def test_contracts_and_observability_levels_write_the_pinned_keys_and_off_takes_them_away() -> None:
    base = _document(contracts={"policy": "halt"}, observability={"spans": True})

    assert contracts_edit("replan")(base).data["contracts"] == {"policy": "replan"}
    assert contracts_edit("convert", ("box_convention",))(base).data["contracts"] == {
        "policy": "convert",
        "rules": ["box_convention"],
    }
    assert "contracts" not in contracts_edit(None)(base).data
    assert observability_edit(True)(_document()).data["observability"] == {"spans": True}
    assert "observability" not in observability_edit(False)(base).data
    assert base.data["contracts"] == {"policy": "halt"}  # edits copy; the document is left as it was


def test_a_contracts_factor_plans_one_cell_per_policy(tmp_path: Path) -> None:
    path = _design(tmp_path, str(V1 / "detect_crop_incompatible.yaml"), "factors:\n  c: {kind: contracts}\n")

    plan = plan_experiment(load_design(path))

    assert [cell.level("c") for cell in plan.cells] == ["off", "halt", "convert", "replan", "fallback"]
    policies = [None if cell.scenario.contracts is None else cell.scenario.contracts.policy for cell in plan.cells]
    assert policies == [None, "halt", "convert", "replan", "fallback"]


def test_memory_on_moves_only_servers_that_keep_images_to_the_context_store() -> None:
    servers = {
        "det": {"server": "detect-xyxy"},  # by value: keeps nothing
        "crop": {"server": "crop-ttl"},  # a preset keeping images for a TTL
        "seg": {"server": "segment", "profile": {"memory": {"scope": "global"}}},
        "cut": {"server": "crop-handle"},  # not parametric: never touched
    }

    edited = memory_edit(True)(_document(servers=servers)).data["servers"]

    assert edited["crop"]["server"] == "crop"
    assert edited["crop"]["profile"]["memory"] == {"scope": MemoryScope.CONTEXT.value}
    assert edited["seg"]["profile"]["memory"] == {"scope": "context"}
    assert edited["det"] == {"server": "detect-xyxy"}  # left as written
    assert edited["cut"] == {"server": "crop-handle"}
    assert memory_edit(False)(_document(servers=servers)).data["servers"] == servers


def test_each_bundle_switches_exactly_its_extensions(tmp_path: Path) -> None:
    path = _design(tmp_path, str(V1 / "detect_crop_ttl.yaml"), "factors:\n  ext: {kind: extensions}\n")
    loaded = load_design(path)
    factor = loaded.design.factors["ext"]
    source = Document(json.loads(json.dumps(_ttl_scenario())), V1 / "detect_crop_ttl.yaml")

    documents = {level.label: level.edit(source).data for level in factor.levels(None)}  # type: ignore[arg-type]

    assert list(documents) == list(BUNDLES)
    assert list(BUNDLES) == [
        *("none", "declarations", "contracts", "declarations+contracts"),
        *("memory", "provenance", "all"),
    ]

    def switched(data: dict[str, Any]) -> set[str]:
        profiles = [entry["profile"] for entry in data["servers"].values()]
        on = set()
        if all(profile["declares_extensions"] for profile in profiles):
            on.add("declarations")
        if data.get("contracts") == {"policy": "convert"}:
            on.add("contracts")
        if any(profile.get("memory") == {"scope": "context"} for profile in profiles):
            on.add("memory")
        if data.get("observability") == {"spans": True}:
            on.add("observability")
        return on

    assert {label: switched(data) for label, data in documents.items()} == {
        label: set(extensions) for label, extensions in BUNDLES.items()
    }


def _ttl_scenario() -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load((V1 / "detect_crop_ttl.yaml").read_text())
    return data


def test_memory_on_plans_cells_whose_retaining_servers_use_the_context_store(tmp_path: Path) -> None:
    path = _design(tmp_path, str(V1 / "detect_crop_ttl.yaml"), "factors:\n  memory: {kind: memory}\n")

    plan = plan_experiment(load_design(path))

    off, on = (cell.scenario.servers for cell in plan.cells)
    assert [cell.level("memory") for cell in plan.cells] == ["off", "on"]
    assert (off["crop"].server, on["crop"].server) == ("crop-ttl", "crop")
    assert on["crop"].profile is not None
    assert on["crop"].profile.memory.scope is MemoryScope.CONTEXT
    assert on["det"] == off["det"]


BAD = [
    ("factors:\n  ext: {kind: extensions, levels: [none, everything]}\n", "factors.ext.levels[1]",
     "unknown bundle 'everything'"),
    ("factors:\n  c: {kind: contracts, levels: [off, stop]}\n", "factors.c.levels[1]",
     "unknown contracts level 'stop'; expected one of: off, halt, convert, replan, fallback"),
    ("factors:\n  c: {kind: contracts, levels: []}\n", "factors.c.levels", "at least 1 item"),
    ("factors:\n  ext: {kind: extensions, contracts: retry}\n", "factors.ext.contracts", "input should be"),
    ("factors:\n  m: {kind: memory, levels: [off, maybe]}\n", "factors.m.levels[1]", ""),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field", "message"), BAD, ids=[case[1] for case in BAD])
def test_a_bad_extension_level_is_one_line_naming_the_field(
    tmp_path: Path, body: str, field: str, message: str
) -> None:
    path = _design(tmp_path, str(V1 / "detect_crop.yaml"), body)

    with pytest.raises(DesignError) as raised:
        plan_experiment(load_design(path))

    assert "\n" not in str(raised.value)
    assert f": {field}" in str(raised.value)
    assert message in raised.value.message


# --- population levels -----------------------------------------------------------------------------


def test_a_population_entry_makes_one_level_per_workflow_and_resumes_from_the_manifest(tmp_path: Path) -> None:
    scenario = f"[{V1 / 'detect_crop.yaml'}, {_population(3)}]"
    path = _design(tmp_path, scenario, "factors:\n  ext: {kind: extensions, levels: [none, declarations]}\n")

    plan = plan_experiment(load_design(path))

    assert dict(plan.factors)["scenario"] == ("detect_crop", "audit-2025-w000", "audit-2025-w001", "audit-2025-w002")
    workflow = plan.cells[2].scenario
    assert workflow.name == "population_w000"
    assert workflow.seed == 1  # the experiment's seed, shared by every cell
    assert {cell.scenario.seed for cell in plan.cells} == {1}
    assert str(PREVALENCE) in plan.scenario_texts
    declarations = next(contrast for contrast in plan.contrasts if contrast.name == "ext: declarations vs none")
    assert len(declarations.strata) == 4  # pooled over the scenario set
    out = tmp_path / "out"
    write_manifest(plan, out)
    again, _ = plan_from_manifest(out)  # reads the prevalence text the manifest recorded
    assert [cell.scenario for cell in again.cells] == [cell.scenario for cell in plan.cells]


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        ("{prevalence: nope.yaml}", "scenario[1]", "no such file"),
        (f"{{prevalence: {PREVALENCE}, members: 2}}", "scenario[1].members", "greater than or equal to 4"),
        (f"{{prevalence: {V1 / 'detect_crop.yaml'}}}", "scenario[1].prevalence", "detect_crop.yaml"),
    ],
)
def test_a_bad_population_entry_is_one_line_naming_it(tmp_path: Path, entry: str, field: str, message: str) -> None:
    path = _design(tmp_path, f"[{V1 / 'detect_crop.yaml'}, {entry}]", "factors: {}\n")

    with pytest.raises(DesignError) as raised:
        plan_experiment(load_design(path))

    assert "\n" not in str(raised.value)
    assert f": {field}: " in str(raised.value)
    assert message in str(raised.value)


# --- statistics ------------------------------------------------------------------------------------


def test_a_server_always_faulty_with_the_extension_off_is_detected_and_no_effect_mostly_is_not() -> None:
    # The bar, over many seeds: 12 paired runs, the server faulty in every run with the extension off
    # and in none with it on, gives p < 0.01; two arms faulty at the same rate, drawn independently, give
    # p > 0.05 in most seeds (an exact test at 5 % rejects a true null in at most 5 % of them).
    planted = compare_binary(np.zeros(12, dtype=bool), np.ones(12, dtype=bool), confidence=0.95)
    null = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        null.append(compare_binary(rng.random(30) < 0.4, rng.random(30) < 0.4, confidence=0.95))

    assert planted is not None
    assert planted.p_value < 0.01
    assert planted.high < -0.6  # the whole interval says "the extension cuts it"
    rejected = sum(result is not None and result.p_value <= 0.05 for result in null)
    assert rejected <= 0.05 * len(null)
    assert sum(result is not None and result.p_value > 0.05 for result in null) >= 0.9 * len(null)


def test_the_latency_ratio_finds_a_planted_slowdown_and_none_where_there_is_none() -> None:
    rng = np.random.default_rng(0)
    baseline = rng.lognormal(np.log(10.0), 0.3, size=40)

    slower = compare_ratio(baseline * 1.5 * rng.lognormal(0, 0.05, 40), baseline, confidence=0.95, rng=rng)
    same = compare_ratio(baseline.copy(), baseline, confidence=0.95, rng=rng)

    assert slower is not None
    assert same is not None
    assert slower.measure == "ratio"
    assert 1.4 < slower.low < slower.difference < slower.high < 1.6
    assert slower.p_value < 0.001
    assert (same.difference, same.low, same.high, same.p_value) == (1.0, 1.0, 1.0, 1.0)
    assert compare_ratio(np.array([1.0]), np.array([2.0]), confidence=0.95, rng=rng) is None


def test_a_latency_quantile_has_an_order_statistic_interval_that_covers_it() -> None:
    values = np.arange(1.0, 101.0)

    median = quantile_interval(values, 0.5, confidence=0.95)
    p90 = quantile_interval(values, 0.9, confidence=0.95)
    few = quantile_interval(np.array([1.0, 2.0, 3.0]), 0.9, confidence=0.95)

    assert median[0] == 50.5
    assert median[1] is not None
    assert median[2] is not None
    assert 35 < median[1] < 50.5 < median[2] < 65
    assert p90[0] is not None
    assert p90[1] is not None
    assert p90[2] is not None
    assert p90[1] < p90[0] < p90[2]
    assert few[2] is None  # three values cannot bound a p90 from above
    assert quantile_interval(np.array([]), 0.5, confidence=0.95) == (None, None, None)


def test_paper_tables_escape_latex_and_keep_every_row() -> None:
    import pandas as pd

    table = pd.DataFrame([{"Contrast": "a_b", "Effect": "×1.2 [1.0, 1.4]", "p": "50 %"}])

    assert markdown(table).splitlines() == ["| Contrast | Effect | p |", "| --- | --- | --- |",
                                            "| a_b | ×1.2 [1.0, 1.4] | 50 % |"]  # fmt: skip
    tex = latex(table, caption="t_1")
    assert r"a\_b & $\times$1.2 [1.0, 1.4] & 50 \% \\" in tex
    assert r"\caption{t\_1}" in tex
    assert tex.count(r"\\") == 2


# --- agents read declarations ----------------------------------------------------------------------


def _tools(declares: bool) -> dict[str, types.Tool]:
    tools: dict[str, types.Tool] = {}
    for alias, capability, box in (("det", "detect", "xyxy/pixel"), ("crop", "crop", "xywh/pixel")):
        profile = ConventionProfile.model_validate({"box": box, "declares_extensions": declares})
        for listed in build_parametric(capability, ServerConfig(profile=profile))._tool_manager.list_tools():  # type: ignore[arg-type]
            tools[f"{alias}.{listed.name}"] = types.Tool(
                name=listed.name, description=listed.description, input_schema=listed.parameters
            )
    return tools


def test_the_llm_prompt_names_the_declared_conventions_only_when_declared() -> None:
    agent = LLMAgent(LLMAgentSpec(kind="llm", goal="crop every object"), llm=None, seed=0)  # type: ignore[arg-type]
    view = SimpleNamespace(results={}, skipped={})

    def prompt(declares: bool) -> str:
        return agent._prompt(view, _tools(declares), ["$scene.image"], [], [])  # type: ignore[arg-type]

    declared, undeclared = prompt(True), prompt(False)
    assert "Declares: arguments.box: coordinate_system=xywh/pixel/xy/top_left" in declared
    assert "choose the adapter that converts between them" in declared
    assert "Declares:" not in undeclared
    assert "adapter" not in undeclared


# --- running ---------------------------------------------------------------------------------------


def test_a_discarded_warm_up_goes_before_the_cells_and_none_before_a_finished_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import testbed.experiment._execute as execute

    plan = plan_experiment(
        load_design(_design(tmp_path, str(V1 / "detect_crop.yaml"), "factors:\n  m: {kind: memory}\n"))
    )
    out = tmp_path / "out"
    started: list[tuple[Path, int]] = []

    async def record(scenario: Any, *, out_dir: Path, **_: Any) -> Any:
        started.append((out_dir, scenario.runs))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "events.jsonl").write_text("")
        return SimpleNamespace(runs=scenario.runs, resumed_runs=0, resume_note=None)

    monkeypatch.setattr(execute, "run_experiment", record)
    anyio.run(lambda: run_cells(plan, out, device="cpu"))
    anyio.run(lambda: run_cells(plan, out, device="cpu"))

    warm_up, *cells = started
    assert warm_up[1] == 3
    assert out not in warm_up[0].parents  # thrown away, never in the experiment directory
    assert [directory.name for directory, _ in cells] == [cell.id for cell in plan.cells] * 2


@pytest.mark.slow
def test_a_cell_with_observability_on_writes_its_spans_beside_its_events(tmp_path: Path) -> None:
    path = _design(tmp_path, str(V1 / "detect_crop.yaml"), "factors:\n  spans: {kind: observability}\n", runs=2)
    plan = plan_experiment(load_design(path))
    out = tmp_path / "out"
    write_manifest(plan, out)

    anyio.run(lambda: run_cells(plan, out, device="cpu"))

    off, on = (cell_dir(out, cell.id) for cell in plan.cells)
    assert not (off / "spans.otlp.jsonl").exists()
    lines = (on / "spans.otlp.jsonl").read_text().splitlines()
    assert lines
    assert all("resourceSpans" in json.loads(line) for line in lines)
    assert anyio.run(lambda: replay_experiment(on)).divergence is None  # its traceparents replay


@pytest.mark.slow
def test_memory_cuts_the_memory_family_and_a_no_op_bundle_changes_nothing(tmp_path: Path) -> None:
    scenario = f"[{V1 / 'detect_crop.yaml'}, {_population(2)}]"
    body = (
        "factors:\n  ext: {kind: extensions, levels: [none, declarations, memory]}\n"
        "contrasts:\n  - {name: memory, treatment: {ext: memory}, baseline: {ext: none}, pool: [scenario]}\n"
        "  - {name: memory on v1, treatment: {ext: memory, scenario: detect_crop},"
        " baseline: {ext: none, scenario: detect_crop}}\n"
    )
    plan = plan_experiment(load_design(_design(tmp_path, scenario, body, runs=6)))
    out = tmp_path / "out"
    write_manifest(plan, out)
    anyio.run(lambda: run_cells(plan, out, device="cpu"))

    results = analyse(plan, out)
    files = write_results(results, out)

    rows = results.contrasts.set_index(["contrast", "outcome"])
    memory = rows.loc[("memory", "memory")]
    assert memory["baseline"] > 0.0
    assert memory["treatment"] == 0.0  # the context store scopes every entry to its run
    # detect_crop's servers take images by value: the memory bundle changes none of them, so nothing differs.
    no_op = rows.loc["memory on v1"]
    binary = no_op[no_op["measure"] == "proportion"]
    assert (binary["treatment_only"] == 0).all()
    assert (binary["baseline_only"] == 0).all()
    cells = results.cells.set_index(["scenario", "ext"])
    for column in ("latency_median_ms", "latency_median_low", "latency_p90_ms"):
        assert (cells[column] > 0).all()
    assert (cells["latency_median_low"] <= cells["latency_median_ms"]).all()
    assert (cells["latency_median_ms"] <= cells["latency_median_high"]).all()
    assert set(results.contrasts["outcome"]) >= {"memory", "latency_ratio", "calls"}
    assert [path.name for path in files.forest] == ["00-memory.png", "01-memory-on-v1.png"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in files.forest)
    table = (out / "table-contrasts.md").read_text()
    assert "| memory | memory | 18 |" in table
    assert r"\begin{tabular}" in (out / "table-cells.tex").read_text()


CONTRACTS_BUILT = "contracts" in Scenario.model_fields
"""Runtime contracts are built by another change; until the scenario loader takes ``contracts``, the shipped
design cannot be planned (its contracts and all bundles would be refused, one line naming the level)."""


def test_the_shipped_design_crosses_every_bundle_with_v1_pipelines_and_the_audit_population() -> None:
    design = load_design(SHIPPED).design

    assert design.factors["extensions"].levels_ == tuple(BUNDLES)  # type: ignore[attr-defined]
    assert isinstance(design.scenario, tuple)
    assert [entry for entry in design.scenario if isinstance(entry, str)] == [
        "../v1/detect_crop.yaml",
        "../v1/detect_crop_incompatible.yaml",
        "../v1/detect_crop_ttl.yaml",
    ]
    population = design.scenario[-1]
    assert isinstance(population, PopulationLevels)
    assert (Path(SHIPPED.parent, population.prevalence).resolve(), population.members) == (PREVALENCE, 12)
    assert design.contrasts is not None
    assert [(c.treatment, c.baseline, c.pool) for c in design.contrasts] == [
        *(({"extensions": bundle}, {"extensions": "none"}, ("scenario",)) for bundle in list(BUNDLES)[1:4]),
        ({"extensions": "declarations+contracts"}, {"extensions": "declarations"}, ("scenario",)),
        *(({"extensions": bundle}, {"extensions": "none"}, ("scenario",)) for bundle in list(BUNDLES)[4:]),
    ]


@pytest.mark.skipif(not CONTRACTS_BUILT, reason="the scenario loader does not take contracts yet")
def test_the_shipped_design_plans_a_cell_per_scenario_and_bundle() -> None:
    plan = plan_experiment(load_design(SHIPPED))

    scenarios = dict(plan.factors)["scenario"]
    assert len(scenarios) == 3 + 8  # three v1 pipelines and the 12-server population's eight workflows
    assert len(plan.cells) == len(scenarios) * len(BUNDLES)
    by_levels = {cell.levels: cell.scenario for cell in plan.cells}
    everything = by_levels[(("scenario", "detect_crop_ttl"), ("extensions", "all"))]
    assert everything.observability.spans


@pytest.mark.slow
@pytest.mark.skipif(not CONTRACTS_BUILT, reason="the scenario loader does not take contracts yet")
def test_the_shipped_extensions_experiment_runs_quick_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "extensions"

    result = CliRunner().invoke(main, ["experiment", str(SHIPPED), "--quick", "--out", str(out), "--device", "cpu"])

    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["runs"] == 10
    assert manifest["factors"]["extensions"] == list(BUNDLES)
    assert [contrast["name"] for contrast in manifest["contrasts"]] == [
        "declarations",
        "contracts",
        "declarations_contracts",
        "contracts_given_declarations",
        "memory",
        "provenance",
        "all",
    ]
    contrasts = (out / "table-contrasts.csv").read_text()
    for outcome in ("latency_ratio", "task_success", "coords"):
        assert outcome in contrasts
    assert len(list((out / "forest").glob("*.png"))) == 7


@pytest.mark.slow
def test_contracts_check_nothing_without_declarations_and_act_with_them(tmp_path: Path) -> None:
    body = (
        "factors:\n  ext: {kind: extensions, levels: [none, contracts, declarations+contracts]}\n"
        "contrasts:\n  - {name: alone, treatment: {ext: contracts}, baseline: {ext: none}, pool: [scenario]}\n"
        "  - {name: declared, treatment: {ext: declarations+contracts}, baseline: {ext: none}, pool: [scenario]}\n"
    )
    plan = plan_experiment(load_design(_design(tmp_path, f"[{_population(2)}]", body, runs=3)))
    out = tmp_path / "out"
    write_manifest(plan, out)
    anyio.run(lambda: run_cells(plan, out, device="cpu"))

    rows = analyse(plan, out).contrasts.set_index(["contrast", "outcome"])

    assert rows.loc[("alone", "contract"), "baseline"] == rows.loc[("alone", "contract"), "treatment"] == 0.0
    assert rows.loc[("declared", "contract"), "treatment"] > 0.0  # a decision recorded on a declared edge
