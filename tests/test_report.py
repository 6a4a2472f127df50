"""Report files, the terminal table, run timelines and the ``report``/``show`` commands."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from testbed._errors import TestbedError
from testbed.cli._report import report, show
from testbed.events import EVENTS_FILE
from testbed.metrics import summarize
from testbed.report import CSV_FIELDS, render_terminal, show_run, write_report
from testbed.validators import validate_experiment

RUNS = 6
"""Runs of each recorded experiment (recorded once per session: see ``recorded_v1`` in conftest.py)."""


@pytest.fixture(scope="module")
def incompatible(recorded_v1_copy: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own copy: the report command writes its report into the experiment directory."""
    return recorded_v1_copy("detect_crop_incompatible", tmp_path_factory.mktemp("incompatible") / "exp", RUNS)


@pytest.fixture(scope="module")
def compatible(recorded_v1: Callable[..., Path]) -> Path:
    return recorded_v1("detect_crop", RUNS)


def truncated_copy(source: Path, target: Path, *, keep_runs: int) -> Path:
    """A copy of an experiment killed during run ``keep_runs`` (its later events dropped)."""
    lines = (source / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    kept: list[str] = []
    started = 0
    for line in lines:
        if '"event":"run_started"' in line.replace(" ", ""):
            started += 1
        if started > keep_runs + 1:
            break
        kept.append(line)
    if started > keep_runs:  # cut the last run before its run_finished
        while '"run_finished"' not in kept[-1].replace(" ", "") and '"run_started"' not in kept[-1].replace(" ", ""):
            kept.pop()
        if '"run_finished"' in kept[-1].replace(" ", ""):
            kept.pop()
    target.mkdir(parents=True)
    (target / EVENTS_FILE).write_text("\n".join(kept) + "\n", encoding="utf-8")
    return target


def test_report_files_are_written_and_readable(incompatible: Path, tmp_path: Path) -> None:
    summary = summarize(validate_experiment(incompatible), source=str(incompatible))
    files = write_report(summary, tmp_path / "out")
    assert all(path.exists() for path in files.paths())
    with files.csv.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_FIELDS
    assert len(rows) == len(summary.rows)
    mismatch = next(r for r in rows if r["id"] == "coords.mismatch" and r["group_kind"] == "all")
    assert float(mismatch["runs_affected_per_100"]) > 0
    assert float(mismatch["runs_affected_per_100_low"]) <= float(mismatch["runs_affected_per_100"])
    page = files.html.read_text(encoding="utf-8")
    assert page.count('<img src="data:image/png;base64,') == len(files.plots) >= 3  # all + one per server
    assert all(plot.read_bytes().startswith(b"\x89PNG") for plot in files.plots)
    markdown = files.markdown.read_text(encoding="utf-8")
    assert summary.experiment_id is not None
    assert summary.experiment_id in markdown
    assert "runs affected /100 runs: share of runs with at least one occurrence" in markdown
    assert "| coords.mismatch | violation | all |" in markdown


def test_report_of_a_compatible_experiment_says_there_are_no_violations(compatible: Path, tmp_path: Path) -> None:
    files = write_report(summarize(validate_experiment(compatible)), tmp_path / "out")
    assert files.plots == ()
    assert "no violations in 6 runs" in files.markdown.read_text(encoding="utf-8")
    assert "No violations to tabulate." in files.html.read_text(encoding="utf-8")
    with files.csv.open(encoding="utf-8", newline="") as handle:
        assert list(csv.DictReader(handle)) == []


def test_terminal_table_lists_each_id_with_both_rates(incompatible: Path) -> None:
    console = Console(file=io.StringIO(), width=200, color_system=None, record=True)
    render_terminal(summarize(validate_experiment(incompatible)), console)
    text = console.export_text()
    assert "coords.mismatch" in text
    assert "runs affected /100 runs" in text
    assert "per 100 executions" in text
    assert "server=crop-xywh" in text


def test_show_run_lists_every_call_with_its_violations(incompatible: Path) -> None:
    text = show_run(incompatible, 0)
    record = next(r for r in validate_experiment(incompatible).runs if r.started.run == 0)
    assert text.count("crop.crop") == sum(1 for _, call in record.calls() if call.tool == "crop")
    assert "det.detect" in text
    assert "coords.mismatch" in text


def test_show_run_refuses_a_run_not_recorded(incompatible: Path) -> None:
    with pytest.raises(TestbedError, match=r"run 99 not recorded \(complete runs: 0-5\)"):
        show_run(incompatible, 99)


def test_report_command_prints_the_table_and_writes_next_to_the_experiment(incompatible: Path) -> None:
    result = CliRunner().invoke(report, [str(incompatible)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "coords.mismatch" in result.output
    assert str(incompatible / "report") in result.output
    assert (incompatible / "report" / "report.html").exists()


def test_report_command_honours_out(incompatible: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(report, [str(incompatible), "--out", str(tmp_path / "elsewhere")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "violations.csv").exists()


def test_report_command_refuses_a_missing_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(report, [str(tmp_path / "nope")])
    assert isinstance(result.exception, TestbedError)
    assert str(result.exception) == f"{tmp_path / 'nope'}: no such experiment directory"


def test_report_command_refuses_an_experiment_with_no_complete_runs(incompatible: Path, tmp_path: Path) -> None:
    killed = truncated_copy(incompatible, tmp_path / "killed", keep_runs=0)
    result = CliRunner().invoke(report, [str(killed)])
    assert isinstance(result.exception, TestbedError)
    assert str(result.exception).startswith("no complete runs to report: ")


def test_report_of_a_partial_experiment_names_the_complete_share(incompatible: Path, tmp_path: Path) -> None:
    killed = truncated_copy(incompatible, tmp_path / "killed", keep_runs=2)
    result = CliRunner().invoke(report, [str(killed)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "partial experiment: 2 of 6 planned runs complete" in result.output


def test_show_command_prints_the_timeline_and_refuses_unknown_runs(incompatible: Path) -> None:
    shown = CliRunner().invoke(show, [str(incompatible), "--run", "1"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "run 1" in shown.output
    assert "det.detect" in shown.output
    missing = CliRunner().invoke(show, [str(incompatible), "--run", "7"])
    assert isinstance(missing.exception, TestbedError)
    assert "run 7 not recorded" in str(missing.exception)
