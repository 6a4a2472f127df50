"""``testbed compare``: experiments side by side, one row per orchestration mode."""

from __future__ import annotations

import csv
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from testbed._errors import TestbedError
from testbed.metrics import Interval, ModeRow, mode_row
from testbed.validators import validate_experiment


def _share(interval: Interval | None, passed: int | None, total: int) -> str:
    if interval is None or passed is None:
        return "n/a"
    return f"{100 * interval.estimate:.0f} % [{100 * interval.low:.0f}–{100 * interval.high:.0f}] ({passed}/{total})"


def _rate(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    return f"{interval.estimate:.1f} [{interval.low:.1f}–{interval.high:.1f}]"


@click.command()
@click.argument("directories", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False), help="Also write the table here.")
def compare(directories: tuple[Path, ...], csv_path: Path | None) -> None:
    """Compare experiments: plan validity, task success and violation rates per agent kind."""
    rows: list[ModeRow] = []
    for directory in directories:
        if not directory.is_dir():
            raise TestbedError(f"{directory}: no such experiment directory")
        try:
            rows.append(mode_row(directory.name, validate_experiment(directory)))
        except ValueError as error:
            raise TestbedError(str(error)) from None
    table = Table(title="orchestration modes (95 % intervals)", title_justify="left")
    for column in (
        "experiment",
        "agent",
        "runs",
        "plan valid",
        "task success",
        "runs with violations /100",
        "findings /100 executions",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.experiment,
            row.agent_kind,
            str(row.runs),
            _share(row.plan_validity, row.plan_valid_runs, row.runs),
            _share(row.task_success, row.task_passed_runs, row.task_checked_runs),
            _rate(row.violation_runs_per_100),
            _rate(row.occurrences_per_100_executions),
        )
    Console().print(table)
    if csv_path is not None:
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "experiment",
                    "agent_kind",
                    "runs",
                    "executions",
                    "plan_valid_runs",
                    "task_passed_runs",
                    "task_checked_runs",
                    "violation_runs",
                    "violation_runs_per_100",
                    "findings",
                    "findings_per_100_executions",
                ]
            )
            for row in rows:
                findings = row.occurrences_per_100_executions
                writer.writerow(
                    [
                        row.experiment,
                        row.agent_kind,
                        row.runs,
                        row.executions,
                        "" if row.plan_valid_runs is None else row.plan_valid_runs,
                        row.task_passed_runs,
                        row.task_checked_runs,
                        row.violation_runs,
                        round(row.violation_runs_per_100.estimate, 2),
                        row.occurrences,
                        "" if findings is None else round(findings.estimate, 2),
                    ]
                )
        click.echo(f"wrote {csv_path}")
