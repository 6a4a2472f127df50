"""``testbed reproduce``: the paper's tables from recorded runs, beside the paper's figures."""

from __future__ import annotations

from pathlib import Path

import click

from testbed.population import MIN_MEMBERS
from testbed.report import report_console
from testbed.reproduce import (
    AUDIT_PREVALENCE,
    DEFAULT_SEED,
    LEGEND,
    QUICK_MEMBERS,
    QUICK_RUNS,
    reproduce_audit,
    rich_table,
)


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
@click.option("--quick", is_flag=True, help=f"{QUICK_MEMBERS} servers, {QUICK_RUNS} runs per workflow.")
def audit(
    population_file: Path | None,
    prevalence_file: Path,
    members: int | None,
    seed: int,
    runs: int | None,
    out_dir: Path,
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
    result = reproduce_audit(
        out_dir,
        population_file=population_file,
        prevalence_file=prevalence_file,
        members=members,
        seed=seed,
        runs=runs or 3,
    )
    console = report_console()
    console.print(rich_table(result.rows, f"testbed reproduce audit -> {out_dir}"))
    for line in LEGEND:
        console.print(line, style="dim")
    for row in result.rows:
        if row.recovered:
            console.print(f"recovery {row.row.split(':')[0]}: {row.recovered} ({row.note})")
    for path in result.files:
        console.print(f"wrote {path}")
    if result.failed:
        names = ", ".join(row.row.split(":")[0] for row in result.failed)
        raise click.ClickException(f"recovery check failed for: {names} (measured outside the realised interval)")
    console.print("recovery check passed for every measurable property")
