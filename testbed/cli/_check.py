"""``testbed check``: the self-check of scenario files (expect lists, fault detectability, accuracy)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from testbed._errors import TestbedError
from testbed.check import (
    CALIBRATION_FIELDS,
    RECALL_GOAL,
    AccuracyTable,
    CheckReport,
    calibration_records,
    check_suite,
    hits_needed,
    measure_accuracy,
    scenario_paths,
)
from testbed.report import calibration_legend, calibration_rich, report_console
from testbed.scenario import load_scenario


def _ids(ids: frozenset[str]) -> str:
    return ", ".join(sorted(ids)) or "-"


def _print_report(console: Console, report: CheckReport) -> None:
    for scenario in report.scenarios:
        table = Table(title=f"{scenario.name} ({scenario.path}, {scenario.runs} fault-free runs)", title_justify="left")
        table.add_column("violation ID")
        table.add_column("expected")
        table.add_column("found")
        table.add_column("status")
        for violation_id in sorted(scenario.expected | scenario.found):
            expected = violation_id in scenario.expected
            found = violation_id in scenario.found
            status = "OK" if expected == found else ("FAIL: missing" if expected else "FAIL: unexpected")
            if scenario.measured:
                expected, status = False, "measured"
            table.add_row(violation_id, "yes" if expected else "no", "yes" if found else "no", status)
        if scenario.measured:
            replayed = "OK" if scenario.replay == "reproduced" else f"FAIL: {scenario.replay}"
            table.add_row("(replay without models)", "", "", replayed)
        for failure in scenario.validator_failures:
            table.add_row(failure, "", "", "FAIL: validator raised")
        if not (scenario.expected or scenario.found or scenario.validator_failures):
            table.add_row("(none)", "", "", "OK")
        console.print(table)
        console.print(f"{scenario.name}: {'OK' if scenario.ok else 'FAIL'}")
    if report.faults:
        table = Table(title="every configured fault alone, at probability 1", title_justify="left")
        for column in ("scenario", "#", "kind", "expected", "applied", "status"):
            table.add_column(column)
        for fault in report.faults:
            status = "OK" if fault.ok else ("FAIL: never applied" if not fault.applied else f"FAIL: {fault.missed[0]}")
            table.add_row(
                fault.scenario, str(fault.index), fault.kind, ", ".join(fault.expected), str(fault.applied), status
            )
        console.print(table)


def _print_accuracy(console: Console, tables: list[AccuracyTable], output_format: str) -> None:
    if output_format == "json":
        document = {
            "recall_goal": RECALL_GOAL,
            "hits_needed_for_goal": hits_needed(RECALL_GOAL),
            "rows": calibration_records(tables),
        }
        click.echo(json.dumps(document, indent=2))
    elif output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=CALIBRATION_FIELDS, lineterminator="\n")
        writer.writeheader()
        for record in calibration_records(tables):
            writer.writerow({**record, "missed_runs": ";".join(str(run) for run in record["missed_runs"])})
    else:
        for table in tables:
            console.print(calibration_rich(table))
        for line in calibration_legend(tables[0].confidence if tables else 0.95):
            console.print(f"[dim]{line}[/dim]", highlight=False)


@click.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per scenario and fault.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--accuracy",
    is_flag=True,
    help="Also measure recall and false positives per fault kind on each scenario that configures faults.",
)
@click.option(
    "--accuracy-runs",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help=f"Runs per fault kind for --accuracy (--runs is the self-check's). A recall lower bound of {RECALL_GOAL} "
    f"(Wilson 95 %) needs at least {hits_needed(RECALL_GOAL)} applied runs with no miss; a fault applies in about "
    "half of its runs or more at p=0.5, so that goal needs about 800.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="How to print the --accuracy calibration: a table, or JSON or CSV with every count and bound "
    "(the self-check tables then go to stderr).",
)
def check(
    paths: tuple[Path, ...], runs: int, device: str, accuracy: bool, accuracy_runs: int, output_format: str
) -> None:
    """Self-check scenario files (or folders of *.yaml): fault-free runs must produce exactly each
    scenario's `expect` IDs, and every configured fault must be detected. Exits 1 on any failure.

    With --accuracy, also print each validator's calibration: per fault kind, hits/applied runs
    (recall) and false flags/runs not applied (false positives), with Wilson intervals."""
    if output_format != "table" and not accuracy:
        raise click.UsageError(f"--format {output_format} formats the --accuracy calibration: add --accuracy")
    console = report_console(stderr=output_format != "table")
    progress = Console(stderr=True)
    try:
        report = check_suite(list(paths), runs=runs, device=device, progress=progress.log)
        _print_report(console, report)
        if accuracy:
            tables = [
                measure_accuracy(scenario, runs=accuracy_runs, device=device, progress=progress.log)
                for scenario in map(load_scenario, scenario_paths(list(paths)))
                if any(fault.expected for fault in scenario.faults)
            ]
            _print_accuracy(report_console(), tables, output_format)
    except TestbedError as error:
        raise click.ClickException(str(error)) from None
    if not report.ok:
        failed = [s.name for s in report.scenarios if not s.ok] + [
            f"{f.scenario} fault {f.index} ({f.kind})" for f in report.faults if not f.ok
        ]
        raise click.ClickException(f"check failed: {'; '.join(failed)}")
