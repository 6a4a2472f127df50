"""``testbed compare``: experiments side by side, one row per orchestration mode."""

from __future__ import annotations

import csv
from pathlib import Path

import click
from rich.table import Table

from testbed._errors import TestbedError
from testbed.metrics import Interval, ModeRow, mode_row
from testbed.report import report_console
from testbed.validators import validate_experiment


def _share(interval: Interval | None, passed: int | None, total: int) -> str:
    if interval is None or passed is None:
        return "n/a"
    return f"{100 * interval.estimate:.0f} % [{100 * interval.low:.0f}–{100 * interval.high:.0f}] ({passed}/{total})"


def _rate(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    return f"{interval.estimate:.1f} [{interval.low:.1f}–{interval.high:.1f}]"


CSV_FIELDS = (
    "experiment",
    "agent_kind",
    "runs",
    "executions",
    "plan_valid_runs",
    "plan_validity",
    "plan_validity_low",
    "plan_validity_high",
    "task_passed_runs",
    "task_checked_runs",
    "task_success",
    "task_success_low",
    "task_success_high",
    "violation_runs",
    "violation_runs_per_100",
    "violation_runs_per_100_low",
    "violation_runs_per_100_high",
    "findings",
    "findings_per_100_executions",
    "findings_per_100_executions_low",
    "findings_per_100_executions_high",
)
"""Columns of ``compare --csv``: counts, each rate with its 95 % bounds; empty cells where a rate is undefined."""


def _bounds(name: str, interval: Interval | None) -> dict[str, float | str]:
    if interval is None:
        return {name: "", f"{name}_low": "", f"{name}_high": ""}
    return {name: interval.estimate, f"{name}_low": interval.low, f"{name}_high": interval.high}


def _record(row: ModeRow) -> dict[str, object]:
    return {
        "experiment": row.experiment,
        "agent_kind": row.agent_kind,
        "runs": row.runs,
        "executions": row.executions,
        "plan_valid_runs": "" if row.plan_valid_runs is None else row.plan_valid_runs,
        **_bounds("plan_validity", row.plan_validity),
        "task_passed_runs": row.task_passed_runs,
        "task_checked_runs": row.task_checked_runs,
        **_bounds("task_success", row.task_success),
        "violation_runs": row.violation_runs,
        **_bounds("violation_runs_per_100", row.violation_runs_per_100),
        "findings": row.occurrences,
        **_bounds("findings_per_100_executions", row.occurrences_per_100_executions),
    }


@click.command()
@click.argument("directories", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False), help="Also write the table here.")
def compare(directories: tuple[Path, ...], csv_path: Path | None) -> None:
    """Compare experiments: plan validity, task success and violation rates per agent kind.

    --csv writes every count and rate with its 95 % interval bounds (``_low``/``_high`` columns)."""
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
    report_console().print(table)
    if csv_path is not None:
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(_record(row) for row in rows)
        click.echo(f"wrote {csv_path}")
