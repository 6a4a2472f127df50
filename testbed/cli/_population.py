"""``testbed population sample``: draw a population of server profiles from a prevalence file."""

from __future__ import annotations

from pathlib import Path

import click

from testbed.population import MIN_MEMBERS, load_prevalence, sample_population, write_population
from testbed.reproduce import AUDIT_PREVALENCE


@click.group()
def population() -> None:
    """Populations of parametric servers sampled from published prevalences."""


@population.command()
@click.option(
    "--n", "members", type=click.IntRange(min=MIN_MEMBERS), default=None, help="Servers (default: the file's)."
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Sampling seed.")
@click.option(
    "--prevalence",
    "prevalence_file",
    type=click.Path(path_type=Path),
    default=AUDIT_PREVALENCE,
    show_default="the audit's (scenarios/populations/audit-2025.yaml)",
    help="Prevalence file.",
)
@click.option("--out", "out_file", type=click.Path(path_type=Path), required=True, help="Population file to write.")
def sample(members: int | None, seed: int, prevalence_file: Path, out_file: Path) -> None:
    """Draw servers' convention profiles (each property independently, with its share) and compose workflows."""
    prevalence = load_prevalence(prevalence_file)
    drawn = sample_population(prevalence, n=members or prevalence.population_size.value, seed=seed)
    write_population(drawn, out_file)
    click.echo(f"{out_file}: {len(drawn.members)} servers, {len(drawn.workflows)} workflows (seed {seed})")
