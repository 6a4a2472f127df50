"""``testbed reproduce audit``: a population's workflows run, measured and tabulated beside the paper's figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from testbed._errors import TestbedError
from testbed.cli import main
from testbed.population import load_prevalence, sample_population
from testbed.registry import registry
from testbed.reproduce import (
    AUDIT_PREVALENCE,
    EXECUTED_AGENT,
    MANIFEST_FILE,
    WORKFLOWS_DIR,
    AuditResult,
    Calibration,
    reproduce_audit,
    workflow_scenario,
)
from testbed.scenario import load_scenario_text

RUNS = 2


def _tiny(out_dir: Path, calibration: Calibration, runs: int = RUNS) -> AuditResult:
    """A population small enough to run in a few seconds: one server per capability, and one more."""
    return reproduce_audit(out_dir, members=5, seed=11, runs=runs, calibration=calibration)


def test_every_sampled_workflow_is_a_valid_scenario_run_by_its_executing_agent() -> None:
    population = sample_population(load_prevalence(AUDIT_PREVALENCE), n=91, seed=4)
    for workflow in population.workflows:
        document = workflow_scenario(population, workflow, runs=2)
        scenario = load_scenario_text(yaml.safe_dump(document), source=workflow.id)
        assert set(scenario.servers) == set(workflow.members)
        assert scenario.agent.kind == EXECUTED_AGENT[workflow.agent]
        assert document["seed"] == workflow_scenario(population, workflow, runs=9)["seed"]


def _rows_by_name(result: AuditResult) -> dict[str, str]:
    return {row.row: row.marking for row in result.rows}


@pytest.mark.slow
def test_audit_tables_are_marked_reproducible_and_resume_without_repeating(
    tmp_path: Path, tiny_calibration: Calibration
) -> None:
    first = _tiny(tmp_path / "a", tiny_calibration)
    assert first.failed == []
    markings = _rows_by_name(first)
    for family in ("schema", "coords", "mask", "memory", "perm", "proto", "untyped connections", "memory warnings"):
        assert markings[family] == "output"
    assert markings["static: configured share"] == "input"
    assert markings["undeclared_conventions: realised"] == "input"
    assert all(row.marking == "output" for row in first.rows if row.recovered)  # only outputs are checked
    configured = [row for row in first.rows if row.row.endswith("configured") or "configured share" in row.row]
    assert configured
    assert all(row.marking == "input" for row in configured)
    csv_bytes = (tmp_path / "a" / "tables.csv").read_bytes()
    parquet = pd.read_parquet(tmp_path / "a" / "tables.parquet")
    assert list(parquet["row"]) == [row.row for row in first.rows]
    assert "input: configured from the paper" in (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    manifest = json.loads((tmp_path / "a" / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert (manifest["seed"], manifest["runs_per_workflow"]) == (11, 2)

    second = _tiny(tmp_path / "b", tiny_calibration)
    assert (tmp_path / "b" / "tables.csv").read_bytes() == csv_bytes  # same seed, same tables, byte for byte
    assert second.recorded == first.recorded

    again = _tiny(tmp_path / "a", tiny_calibration)
    assert again.recorded == 0  # everything was recorded: nothing repeated

    shutil.rmtree(tmp_path / "a" / WORKFLOWS_DIR / "w000")  # as if killed before the first workflow finished
    resumed = _tiny(tmp_path / "a", tiny_calibration)
    assert resumed.recorded == RUNS  # exactly the lost workflow's runs, nothing else
    assert (tmp_path / "a" / "tables.csv").read_bytes() == csv_bytes

    with pytest.raises(TestbedError, match="choose another --out"):
        _tiny(tmp_path / "a", tiny_calibration, runs=3)


@pytest.mark.slow
def test_a_blinded_coordinate_validator_fails_the_recovery_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = registry()
    sighted = {name: plugin for name, plugin in plugins.validators.items() if not name.startswith("coords.")}
    assert len(sighted) < len(plugins.validators)
    monkeypatch.setattr(plugins, "validators", sighted)
    arguments = ["reproduce", "audit", "--n", "5", "--seed", "11", "--runs-per-workflow", "2"]
    arguments += ["--calibration-runs", "2"]
    result = CliRunner().invoke(main, [*arguments, "--out", str(tmp_path / "blind")])
    assert result.exit_code != 0
    assert "recovery check failed for: undeclared_conventions" in result.output


def test_audit_refuses_a_bad_population_file_in_one_line(tmp_path: Path) -> None:
    population = sample_population(load_prevalence(AUDIT_PREVALENCE), n=5, seed=1)
    data = population.document()
    data["members"][0]["capability"] = "teleport"
    path = tmp_path / "pop.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(main, ["reproduce", "audit", "--population", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert f"{path}: members[0].capability" in result.output
    assert not (tmp_path / "o" / WORKFLOWS_DIR).exists()


def test_audit_refuses_a_population_sampled_from_another_prevalence(tmp_path: Path) -> None:
    data = sample_population(load_prevalence(AUDIT_PREVALENCE), n=5, seed=1).document()
    data["prevalence"] = "some-other-audit"
    path = tmp_path / "pop.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(TestbedError, match="sampled from 'some-other-audit'"):
        reproduce_audit(tmp_path / "o", population_file=path)
