"""``testbed reproduce paper`` and the validators' calibration beside every reproduce report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from testbed._errors import TestbedError
from testbed.cli import main
from testbed.registry import registry
from testbed.reproduce import (
    PARTS,
    QUICK_SIZES,
    Calibration,
    PaperSizes,
    calibrate,
    calibration_dir,
    load_paper_manifest,
    reproduce_audit,
    reproduce_paper,
)
from testbed.reproduce._paper import QUICK_SECURITY_AGENTS, Part

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


@pytest.mark.slow
def test_the_quick_paper_run_as_a_user_types_it_writes_every_part_marked_quick(tmp_path: Path) -> None:
    out = tmp_path / "paper"
    command = [sys.executable, "-m", "testbed", "reproduce", "paper", "--quick", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    tables = pd.read_csv(out / "tables.csv", keep_default_na=False)
    # exit status: 0 exactly when no recovery check failed and no part stopped; quick sizes are not excused
    failed = tables[tables["recovered"] == "NO"]
    assert (done.returncode == 0) == failed.empty, done.stdout + done.stderr
    assert done.returncode == 0, failed[["part", "row", "note"]].to_string()
    assert "every recovery check passed" in done.stdout
    for part in ("audit", "cases", "security"):
        assert f"{part}: ran (quick sizes: " in done.stdout

    assert set(tables["part"]) == {part.name for part in PARTS}
    assert set(tables["sizes"]) == {"quick"}
    assert pd.read_parquet(out / "tables.parquet")["row"].tolist() == tables["row"].tolist()
    assert set(tables["marking"]) == {"input", "output"}
    for part, rows in tables.groupby("part"):
        outputs = rows[rows["marking"] == "output"]
        assert (outputs["count"] != "").any(), f"{part}: no measured output"
        assert (rows["recovered"] == "yes").any(), f"{part}: no check ran"
    configured = tables[tables["row"].str.endswith(": configured")]
    assert not configured.empty
    assert set(configured["marking"]) == {"input"}  # a configured share is never shown as reproduced
    attack_agents = {name.split(": ")[0].split(" / ")[1] for name in tables["row"] if " / " in name}
    assert attack_agents == set(QUICK_SECURITY_AGENTS)

    # every part's report carries the shared calibration, linked from the rows its validators produced
    for part in ("cases", "security"):
        report = (out / part / "report.html").read_text(encoding="utf-8")
        assert '<section id="calibration"><h2>Validator calibration</h2>' in report
        assert "Recorded under <code>../calibration</code>" in report
        calibrated = pd.read_csv(out / part / "tables.csv", keep_default_na=False)
        assert (calibrated["calibration"] != "").any()
    coords = tables.set_index("row").loc[["coords", "coords: mismatch found"]]
    assert coords["calibration"].str.startswith("coords.").all()
    assert int(coords["count"].iloc[1]) <= int(coords["count"].iloc[0])

    report = (out / "report.html").read_text(encoding="utf-8")
    assert "The paper, reproduced (quick sizes)" in report
    assert report.count(": a smoke test of the pipeline, not the paper") == len(PARTS)
    assert "every recovery check passed" in report
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sizes"] == asdict(QUICK_SIZES)
    assert len(pd.read_csv(out / "calibration.csv")) > 0
