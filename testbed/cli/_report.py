"""``testbed report`` and ``testbed show``: rates and timelines of a recorded experiment."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from testbed._errors import TestbedError
from testbed.metrics import summarize
from testbed.report import render_run, render_terminal, write_report
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
def report(directory: Path, out_dir: Path | None) -> None:
    """Print the violation rates of RUN_DIR and write CSV, Markdown, HTML and plots."""
    result = _validated(directory)
    if not result.runs:
        raise TestbedError(f"no complete runs to report: {directory} has no run that finished")
    summary = summarize(result, source=str(directory))
    console = Console()
    render_terminal(summary, console)
    files = write_report(summary, out_dir if out_dir is not None else directory / REPORT_DIR)
    console.print(f"report written to {files.directory}: " + ", ".join(p.name for p in files.paths()[:3]) + ", ...")
    console.print(f"open {files.html}")


@click.command()
@click.argument("directory", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option("--run", "run_index", type=int, required=True, help="Run index to show.")
def show(directory: Path, run_index: int) -> None:
    """Show one run of RUN_DIR as a timeline: calls, outcomes, injected faults and violations."""
    render_run(_validated(directory), run_index, Console(), source=str(directory))
