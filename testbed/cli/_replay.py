"""``testbed replay``: reproduce a recorded experiment and name the first event that differs."""

from __future__ import annotations

from pathlib import Path

import anyio
import click

from testbed.orchestrator import replay_experiment


@click.command()
@click.argument("directory", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option("--live", is_flag=True, help="Re-run against live servers with the same seeds (a determinism check).")
@click.option("--device", default="auto", show_default=True, help="For --live: auto, cpu, cuda or cuda:N.")
def replay(directory: Path, live: bool, device: str) -> None:
    """Replay RUN_DIR against its recorded responses (no servers, models or LLMs) and compare the events."""
    report = anyio.run(lambda: replay_experiment(directory, live=live, device=device))
    served = "served directly" if report.direct else "over MCP sessions"
    mode = "live servers" if live else f"recorded responses ({served})"
    # One line each, never wrapped: scripts grep these.
    if report.divergence is not None:
        click.echo(f"{directory}: {report.divergence}")
        raise click.exceptions.Exit(1)
    click.echo(
        f"{directory}: reproduced {report.runs} runs ({report.events} events, {report.violations} violations) "
        f"against {mode} "
        f"in {report.seconds:.1f} s ({report.runs / max(report.seconds, 1e-9):.1f} runs/s)"
    )
