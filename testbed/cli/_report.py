"""``testbed report`` and ``testbed show``: rates and timelines of a recorded experiment."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click
from rich.console import Console

from testbed._errors import TestbedError
from testbed.catalog import CATALOG
from testbed.metrics import mode_row, summarize
from testbed.report import CSV_FIELDS, render_run, render_terminal, report_console, write_report
from testbed.report._evidence import sampled_evidence
from testbed.report._files import rate_records
from testbed.validators import ValidationResult, validate_experiment

REPORT_DIR = "report"


def _validated(directory: Path) -> ValidationResult:
    if not directory.is_dir():
        raise TestbedError(f"{directory}: no such experiment directory")
    return validate_experiment(directory)


@click.command()
@click.argument("directory", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to write the report files (default: RUN_DIR/report).",
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
def report(directory: Path, out_dir: Path | None, output_format: str, per_id: int) -> None:
    """Print the violation rates of RUN_DIR and write CSV, Parquet, Markdown, HTML (with evidence) and plots."""
    result = _validated(directory)
    if not result.runs:
        raise TestbedError(f"no complete runs to report: {directory} has no run that finished")
    summary = summarize(result, source=str(directory))
    mode = mode_row(directory.name, result)
    _, evidence, figures = sampled_evidence(result.runs, result.violations, per_id=per_id, seed=0)
    files = write_report(
        summary,
        out_dir if out_dir is not None else directory / REPORT_DIR,
        mode=mode,
        evidence=evidence,
        figures=figures,
    )
    if output_format == "json":
        document = {
            "experiment_id": summary.experiment_id,
            "scenario": summary.scenario,
            "source": summary.source,
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
