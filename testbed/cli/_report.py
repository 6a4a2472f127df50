"""``testbed report`` and ``testbed show``: rates of recorded experiments (one or several), and run timelines."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console

from testbed._errors import TestbedError
from testbed.catalog import CATALOG
from testbed.events import EVENTS_FILE
from testbed.metrics import ModeRow, Summary, combined_mode, mode_row, summarize, summarize_experiments
from testbed.report import CSV_FIELDS, render_run, render_terminal, report_console, write_report
from testbed.report._aggregate import load_experiments, pooled_evidence
from testbed.report._evidence import Evidence, sampled_evidence
from testbed.report._files import rate_records
from testbed.validators import ValidationResult, validate_experiment

REPORT_DIR = "report"


def _validated(directory: Path) -> ValidationResult:
    if not directory.is_dir():
        raise TestbedError(f"{directory}: no such experiment directory")
    return validate_experiment(directory)


@dataclass(frozen=True)
class _ReportInputs:
    summary: Summary
    mode: ModeRow
    evidence: dict[str, list[Evidence]]
    figures: dict[str, bytes]
    out_dir: Path


def _one_experiment(directory: Path, out_dir: Path | None, per_id: int) -> _ReportInputs:
    result = _validated(directory)
    if not result.runs:
        raise TestbedError(f"no complete runs to report: {directory} has no run that finished")
    _, evidence, figures = sampled_evidence(result.runs, result.violations, per_id=per_id, seed=0)
    summary = summarize(result, source=str(directory))
    return _ReportInputs(
        summary, mode_row(directory.name, result), evidence, figures, out_dir or directory / REPORT_DIR
    )


def _several_experiments(directories: tuple[Path, ...], out_dir: Path | None, per_id: int) -> _ReportInputs:
    if out_dir is None and len(directories) > 1:
        raise click.UsageError("several RUN_DIRs: give --out for the report files")
    experiments = load_experiments(directories)
    summary = summarize_experiments([(str(e.path), e.result) for e in experiments])
    mode = combined_mode("all", [mode_row(e.path.name, e.result) for e in experiments])
    evidence, figures = pooled_evidence(experiments, per_id=per_id, seed=0)
    return _ReportInputs(summary, mode, evidence, figures, out_dir or directories[0] / REPORT_DIR)


@click.command()
@click.argument("directories", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to write the report files (default: RUN_DIR/report; required with several RUN_DIRs).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="What to print: rich tables, or the rate rows as JSON or CSV for scripts (files are written either way).",
)
@click.option("--per-id", type=click.IntRange(min=0), default=4, show_default=True, help="Evidence figures per ID.")
def report(directories: tuple[Path, ...], out_dir: Path | None, output_format: str, per_id: int) -> None:
    """Print the violation rates of RUN_DIR and write CSV, Parquet, Markdown, HTML (with evidence) and plots.

    Several RUN_DIRs, or a folder holding experiments (a population run), are reported together:
    runs and executions add up, and "servers flagged" counts every distinct server once (its
    registry name, or command or URL, with its configuration)."""
    if len(directories) == 1 and (directories[0] / EVENTS_FILE).is_file():
        inputs = _one_experiment(directories[0], out_dir, per_id)
    else:
        inputs = _several_experiments(directories, out_dir, per_id)
    summary, mode = inputs.summary, inputs.mode
    files = write_report(summary, inputs.out_dir, mode=mode, evidence=inputs.evidence, figures=inputs.figures)
    if output_format == "json":
        document = {
            "experiment_id": summary.experiment_id,
            "scenario": summary.scenario,
            "source": summary.source,
            "experiments": list(summary.experiments),
            "runs": summary.runs,
            "planned_runs": summary.planned_runs,
            "executions": summary.executions,
            "task_passed_runs": mode.task_passed_runs,
            "task_checked_runs": mode.task_checked_runs,
            "notes": list(summary.notes),
            "catalog": {
                vid: {"behaviour": e.behaviour, "severity": e.severity.value, "source": e.source}
                for vid in summary.ids
                if (e := CATALOG.get(vid)) is not None
            },
            "rows": rate_records(summary),
        }
        click.echo(json.dumps(document, indent=2))
    elif output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rate_records(summary))
    else:
        console = report_console()
        render_terminal(summary, console, mode=mode)
    where = Console(stderr=True) if output_format != "table" else report_console()
    where.print(f"report written to {files.directory}: " + ", ".join(p.name for p in files.paths()[:4]) + ", ...")
    where.print(f"open {files.html.resolve().as_uri()}", highlight=False, soft_wrap=True)


@click.command()
@click.argument("directory", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option("--run", "run_index", type=int, required=True, help="Run index to show.")
def show(directory: Path, run_index: int) -> None:
    """Show one run of RUN_DIR as a timeline: calls, outcomes, injected faults and violations."""
    render_run(_validated(directory), run_index, report_console(), source=str(directory))
