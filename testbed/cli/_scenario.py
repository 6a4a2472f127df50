"""``testbed scenario``: the scenario file format."""

from __future__ import annotations

import json
from pathlib import Path

import click

from testbed._errors import TestbedError
from testbed.scenario import load_scenario, scenario_json_schema


@click.group()
def scenario() -> None:
    """Inspect and check scenario files."""


@scenario.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (for editors)."""
    click.echo(json.dumps(scenario_json_schema(), indent=2))


@scenario.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def check(files: tuple[Path, ...]) -> None:
    """Load each FILE and report the first error, one line per file."""
    failed = 0
    for file in files:
        try:
            loaded = load_scenario(file)
        except TestbedError as error:  # report every file, then fail once
            click.echo(str(error), err=True)
            failed += 1
            continue
        shape = f"{len(loaded.workflow.nodes)} nodes" if loaded.workflow else "plans at run time"
        click.echo(f"{file}: ok ({loaded.name} v{loaded.version}, {loaded.agent.kind} agent, {shape})")
    if failed:
        raise click.ClickException(f"{failed} of {len(files)} scenario file(s) are invalid")
