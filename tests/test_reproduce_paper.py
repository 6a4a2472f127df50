"""``testbed reproduce paper`` and the validators' calibration beside every reproduce report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from testbed._errors import TestbedError
from testbed.cli import main
from testbed.registry import registry
from testbed.reproduce import (
    PARTS,
    Calibration,
    PaperSizes,
    calibrate,
    calibration_dir,
    load_paper_manifest,
    reproduce_audit,
    reproduce_paper,
)
from testbed.reproduce._paper import Part

TINY = PaperSizes(quick=True, members=5, runs_per_workflow=2, calibration_runs=2)
"""Small enough for a test: five servers, two runs per workflow, two runs per fault kind."""


@pytest.fixture
def audit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The paper's part table with its audit and one part this build lacks (cases and security test themselves)."""
    missing = Part("future", "A part not built yet", lambda: None)
    monkeypatch.setattr("testbed.reproduce._paper.PARTS", (PARTS[0], missing))


def _bytes(directory: Path, *names: str) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in names}


@pytest.mark.slow
@pytest.mark.usefixtures("audit_only")
def test_a_paper_run_reruns_from_its_manifest_byte_for_byte_and_resumes_without_repeating(tmp_path: Path) -> None:
    first = reproduce_paper(tmp_path / "a", seed=11, sizes=TINY)
    assert first.ok, (first.failed, first.errors)
    statuses = {section.name: section.status for section in first.sections}
    assert statuses == {"audit": "ran", "future": "not run: this build has no such part yet"}
    tables = pd.read_csv(tmp_path / "a" / "tables.csv", keep_default_na=False)
    assert set(tables["part"]) == {"audit"}
    assert pd.read_parquet(tmp_path / "a" / "tables.parquet")["row"].tolist() == tables["row"].tolist()
    coords = tables[tables["row"] == "coords"].iloc[0]
    assert coords["family"] == "coords"
    assert coords["calibration"].startswith("coords.mismatch over 2 fault kind(s); recall >= ")
    calibration = pd.read_parquet(tmp_path / "a" / "calibration.parquet")
    assert len(calibration) == len(first.calibration.table.rows)
    assert set(calibration["fault_kind"]) >= {"flip_convention", "timeout", "kill"}
    report = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    for expected in ("recall: hits/applied", "input: configured from the paper", "data:image/png;base64,",
                     "calibration_scenario_seed", "pyarrow", "not run: this build has no such part yet"):  # fmt: skip
        assert expected in report
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sizes"] == {"quick": True, "members": 5, "runs_per_workflow": 2, "calibration_runs": 2}
    assert load_paper_manifest(tmp_path / "a" / "manifest.json") == (11, TINY)

    outputs = ("tables.csv", "calibration.csv", "report.html")
    result = CliRunner().invoke(
        main, ["reproduce", "paper", "--manifest", str(tmp_path / "a" / "manifest.json"), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    assert _bytes(tmp_path / "b", *outputs) == _bytes(tmp_path / "a", *outputs)  # same seed, same bytes

    again = reproduce_paper(tmp_path / "a", seed=11, sizes=TINY)
    assert again.recorded == 0  # everything was recorded: nothing repeated
    # as if killed while the calibration's kill experiment and the audit's first workflow were running:
    (tmp_path / "a" / "calibration" / "calibration.json").unlink()
    shutil.rmtree(tmp_path / "a" / "calibration" / "kill")
    shutil.rmtree(tmp_path / "a" / "audit" / "workflows" / "w000")
    resumed = reproduce_paper(tmp_path / "a", seed=11, sizes=TINY)
    assert resumed.recorded == TINY.calibration_runs + TINY.runs_per_workflow  # exactly what was lost
    assert _bytes(tmp_path / "a", *outputs) == _bytes(tmp_path / "b", *outputs)

    with pytest.raises(TestbedError, match="choose another --out"):
        reproduce_paper(tmp_path / "a", seed=12, sizes=TINY)


@pytest.mark.slow
@pytest.mark.usefixtures("audit_only")
def test_a_failed_recovery_check_exits_non_zero_with_the_report_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = registry()
    sighted = {name: plugin for name, plugin in plugins.validators.items() if not name.startswith("coords.")}
    monkeypatch.setattr(plugins, "validators", sighted)
    out = tmp_path / "blind"
    out.mkdir()
    manifest = {"command": "reproduce paper", "seeds": {"seed": 11}, "sizes": TINY.__dict__}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = CliRunner().invoke(main, ["reproduce", "paper", "--manifest", str(out / "manifest.json")])
    assert result.exit_code != 0
    assert "audit: undeclared_conventions: measured" in result.output
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "recovery check(s) failed" in report
    # the blinded family's calibration shows it: no flip or unit change was detected
    assert pd.read_csv(out / "calibration.csv").query("violation_id == 'coords.mismatch'")["detected_runs"].sum() == 0


@pytest.mark.slow
def test_the_audit_report_carries_the_calibration_of_each_rows_validators(tmp_path: Path) -> None:
    result = reproduce_audit(tmp_path / "audit", members=5, seed=3, runs=2, calibration_runs=2)
    assert isinstance(result.calibration, Calibration)
    assert result.calibration.directory == tmp_path / "audit" / "calibration"
    report = (tmp_path / "audit" / "report.html").read_text(encoding="utf-8")
    assert '<section id="calibration"><h2>Validator calibration</h2>' in report
    assert "false positives: flags/not applied" in report
    assert '<a href="#calibration">memory.handle_unknown, memory.handle_expired over 2 fault kind(s)' in report
    tables = pd.read_csv(tmp_path / "audit" / "tables.csv", keep_default_na=False).set_index("row")
    assert tables.loc["untyped connections", "calibration"].startswith("not calibrated")
    assert tables.loc["static: configured share", "calibration"] == ""  # an input: no validator produced it
    assert (tmp_path / "audit" / "calibration" / "calibration.parquet").is_file()


def test_a_part_of_a_paper_run_shares_the_paper_calibration(tmp_path: Path) -> None:
    assert calibration_dir(tmp_path / "alone") == tmp_path / "alone" / "calibration"
    (tmp_path / "manifest.json").write_text(json.dumps({"command": "reproduce paper"}), encoding="utf-8")
    assert calibration_dir(tmp_path / "cases") == (tmp_path / "calibration").resolve()


def test_a_calibration_directory_refuses_another_size(tmp_path: Path) -> None:
    (tmp_path / "calibration.json").write_text(json.dumps({"identity": {"runs": 7}}), encoding="utf-8")
    with pytest.raises(TestbedError, match="choose another --out"):
        calibrate(tmp_path, runs=2, seed=1)
    with pytest.raises(TestbedError, match="calibration runs: at least 1"):
        calibrate(tmp_path, runs=0, seed=1)


@pytest.mark.parametrize(
    ("document", "field"),
    [({"command": "reproduce audit"}, "command"), ({"command": "reproduce paper", "seeds": {}}, "seeds/sizes")],
)
def test_a_bad_paper_manifest_is_one_line_naming_the_field(
    tmp_path: Path, document: dict[str, object], field: str
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    result = CliRunner().invoke(main, ["reproduce", "paper", "--manifest", str(path)])
    assert result.exit_code != 0
    assert f"{path}: {field}" in result.output
    assert len(result.output.strip().splitlines()) == 1
