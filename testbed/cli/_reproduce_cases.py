"""``testbed reproduce cases``: the paper's five case studies (table D) beside its figures."""

from __future__ import annotations

from pathlib import Path

import click

from testbed.cli._calibration_option import calibration_runs_option
from testbed.report import report_console
from testbed.reproduce import (
    CASES_LEGEND,
    DEFAULT_CASES_SEED,
    reproduce_cases,
    rich_table,
)


@click.command()
@click.option("--quick", is_flag=True, help="Each case at its quick size (a few runs) instead of the paper's size.")
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_CASES_SEED, show_default=True, help="The seed.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("cases-out"), show_default=True)
@calibration_runs_option
def cases(quick: bool, seed: int, out_dir: Path, calibration_runs: int | None) -> None:
    """Run the case-study families (scenarios/cases/) and print table D beside the paper's figures.

    Every figure is marked input (configured from the paper) or output (measured by the validators).
    Exits non-zero when a finding's measured share misses the interval of its realised share. Rerunning
    with the same --out continues an interrupted run.
    """
    console = report_console()
    result = reproduce_cases(out_dir, quick=quick, seed=seed, calibration_runs=calibration_runs)
    console.print(rich_table(result.rows, f"testbed reproduce cases -> {out_dir}"))
    if result.timings:
        console.print(rich_table(result.timings, "Call latency (wall clock; timings.csv, not byte-reproducible)"))
    for line in CASES_LEGEND:
        console.print(line, style="dim")
    console.print(f"validator calibration: {result.calibration.goal_line()} (in report.html and tables.csv)")
    for path in result.files:
        console.print(f"wrote {path}")
    if result.failed:
        names = ", ".join(row.row for row in result.failed)
        raise click.ClickException(f"the validators missed the realised share for: {names}")
    console.print("every finding's measured share lies in the interval of its realised share")
