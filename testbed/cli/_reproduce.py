"""``testbed reproduce``: the paper's tables from recorded runs, beside the paper's figures."""

from __future__ import annotations

from pathlib import Path

import click

from testbed.cli._calibration_option import calibration_runs_option
from testbed.cli._reproduce_cases import cases
from testbed.cli._reproduce_paper import paper
from testbed.population import MIN_MEMBERS
from testbed.report import report_console
from testbed.reproduce import (
    AUDIT_PREVALENCE,
    DEFAULT_SEED,
    FULL_CALIBRATION_RUNS,
    LEGEND,
    QUICK_CALIBRATION_RUNS,
    QUICK_MEMBERS,
    QUICK_RUNS,
    reproduce_audit,
    rich_table,
)
from testbed.reproduce._security import DEFAULT_SECURITY_SEED, reproduce_security


@click.group()
def reproduce() -> None:
    """Reproduce the paper's tables over sampled servers, every figure marked input or output."""


@reproduce.command()
@click.option(
    "--population", "population_file", type=click.Path(path_type=Path), default=None, help="Population file to run."
)
@click.option(
    "--prevalence",
    "prevalence_file",
    type=click.Path(path_type=Path),
    default=AUDIT_PREVALENCE,
    show_default="the audit's",
    help="Prevalence file (the configured shares).",
)
@click.option("--n", "members", type=click.IntRange(min=MIN_MEMBERS), default=None, help="Servers to sample.")
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SEED, show_default=True, help="Sampling seed.")
@click.option("--runs-per-workflow", "runs", type=click.IntRange(min=2), default=None, help="Runs of each workflow.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("audit-out"), show_default=True)
@calibration_runs_option
@click.option(
    "--quick",
    is_flag=True,
    help=f"{QUICK_MEMBERS} servers, {QUICK_RUNS} runs per workflow, {QUICK_CALIBRATION_RUNS} calibration runs.",
)
def audit(
    population_file: Path | None,
    prevalence_file: Path,
    members: int | None,
    seed: int,
    runs: int | None,
    out_dir: Path,
    calibration_runs: int | None,
    quick: bool,
) -> None:
    """Run a population's workflows and print the audit's tables beside the paper's.

    Without --population, samples one from the prevalence file at --seed. Exits non-zero when the recovery
    check fails: a measured property rate outside the Wilson interval of its realised prevalence. Rerunning
    with the same --out continues an interrupted run.
    """
    if quick:
        members = members or QUICK_MEMBERS
        runs = runs or QUICK_RUNS
        calibration_runs = calibration_runs or QUICK_CALIBRATION_RUNS
    result = reproduce_audit(
        out_dir,
        population_file=population_file,
        prevalence_file=prevalence_file,
        members=members,
        seed=seed,
        runs=runs or 3,
        calibration_runs=calibration_runs or FULL_CALIBRATION_RUNS,
    )
    console = report_console()
    console.print(rich_table(result.rows, f"testbed reproduce audit -> {out_dir}"))
    for line in LEGEND:
        console.print(line, style="dim")
    for row in result.rows:
        if row.recovered:
            console.print(f"recovery {row.row.split(':')[0]}: {row.recovered} ({row.note})")
    console.print(f"validator calibration: {result.calibration.goal_line()} (in report.html and calibration.csv)")
    for path in result.files:
        console.print(f"wrote {path}")
    if result.failed:
        names = ", ".join(row.row.split(":")[0] for row in result.failed)
        raise click.ClickException(f"recovery check failed for: {names} (measured outside the realised interval)")
    console.print("recovery check passed for every measurable property")


@reproduce.command()
@click.option("--quick", is_flag=True, help="2 runs per cell and a 12-server population (a few minutes).")
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SECURITY_SEED, show_default=True, help="Seed.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("security-out"), show_default=True)
@calibration_runs_option
def security(quick: bool, seed: int, out_dir: Path, calibration_runs: int | None) -> None:
    """Run every attack scenario with every agent, under attack and as its no-attack twin, and print the attack
    table (utility, utility under attack, attack success, share flagged; Wilson intervals) and table B over the
    population's security subset beside the paper's figures. Rerunning with the same --out continues.
    Exits non-zero when a canary changed or a cell could not run.
    """
    console = report_console()
    with console.status("running the attack suite") as status:
        result = reproduce_security(
            out_dir,
            quick=quick,
            seed=seed,
            progress=lambda done, total: status.update(f"experiments {done}/{total}"),
            calibration_runs=calibration_runs,
        )
    console.print(rich_table(result.rows, f"testbed reproduce security -> {out_dir}"))
    for line in LEGEND[:2]:
        console.print(line, style="dim")
    for path in result.files:
        console.print(f"wrote {path}")
    if result.failed:
        failed = "; ".join(row.row for row in result.failed)
        raise click.ClickException(f"{len(result.failed)} check(s) failed: {failed}")


reproduce.add_command(paper)
reproduce.add_command(cases)
