"""``testbed check``: the self-check of scenario files (expect lists, fault detectability, accuracy)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from testbed._errors import TestbedError
from testbed.check import AccuracyTable, CheckReport, check_suite, measure_accuracy, scenario_paths
from testbed.scenario import load_scenario


def _ids(ids: frozenset[str]) -> str:
    return ", ".join(sorted(ids)) or "-"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


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


def _print_accuracy(console: Console, accuracy: AccuracyTable) -> None:
    table = Table(
        title=f"accuracy on {accuracy.scenario}: {accuracy.runs} runs per kind at p={accuracy.probability}",
        title_justify="left",
    )
    for column in ("fault kind", "violation ID", "applied", "recall", "not applied", "false positives"):
        table.add_column(column)
    for row in accuracy.rows:
        table.add_row(
            row.kind,
            row.violation_id,
            str(row.applied_runs),
            _rate(row.recall),
            str(row.clean_runs),
            _rate(row.false_positive_rate),
        )
    console.print(table)


@click.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per scenario and fault.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--accuracy",
    is_flag=True,
    help="Also measure recall and false positives per fault kind on each scenario that configures faults.",
)
@click.option("--accuracy-runs", type=click.IntRange(min=1), default=20, show_default=True, help="Runs per fault kind.")
def check(paths: tuple[Path, ...], runs: int, device: str, accuracy: bool, accuracy_runs: int) -> None:
    """Self-check scenario files (or folders of *.yaml): fault-free runs must produce exactly each
    scenario's `expect` IDs, and every configured fault must be detected. Exits 1 on any failure."""
    console = Console()
    progress = Console(stderr=True)
    try:
        report = check_suite(list(paths), runs=runs, device=device, progress=progress.log)
        _print_report(console, report)
        if accuracy:
            for path in scenario_paths(list(paths)):
                scenario = load_scenario(path)
                if any(fault.expected for fault in scenario.faults):
                    _print_accuracy(
                        console, measure_accuracy(scenario, runs=accuracy_runs, device=device, progress=progress.log)
                    )
    except TestbedError as error:
        raise click.ClickException(str(error)) from None
    if not report.ok:
        failed = [s.name for s in report.scenarios if not s.ok] + [
            f"{f.scenario} fault {f.index} ({f.kind})" for f in report.faults if not f.ok
        ]
        raise click.ClickException(f"check failed: {'; '.join(failed)}")
