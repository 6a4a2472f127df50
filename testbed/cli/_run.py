"""``testbed run``: run a scenario's experiment with a progress bar, a summary and its violation table."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import anyio
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from testbed.metrics import summarize
from testbed.orchestrator import ExperimentSummary, RayExecutor, outcome_counts, run_experiment
from testbed.report import render_terminal, report_console
from testbed.scenario import MAX_RUNS, load_scenario
from testbed.telemetry.export import spans_setting
from testbed.transport import TRANSPORT_KINDS
from testbed.validators import validate_experiment


@click.command()
@click.argument("scenario_file", metavar="SCENARIO", type=click.Path(path_type=Path))
@click.option(
    "--runs", type=click.IntRange(min=1, max=MAX_RUNS), default=None, help="Override the scenario's run count."
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Override the scenario's seed.")
@click.option(
    "--transport",
    type=click.Choice(TRANSPORT_KINDS),
    default=None,
    help="Override every server's transport.",
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Experiment directory.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Workers, each with its own servers [default: the CPUs this process may use, at most one per 50 runs left; "
    "with --executor ray, one per CPU of the cluster].",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where workers run: processes on this machine, or Ray actors (pip install 'mcp-vision-testbed[ray]').",
)
@click.option(
    "--address",
    default=None,
    help="With --executor ray: an existing cluster (HOST:PORT, ray://HOST:PORT or auto) [default: start a local one].",
)
@click.option("--violations/--no-violations", default=True, show_default=True, help="Validate and print the rates.")
@click.option(
    "--spans",
    is_flag=True,
    default=False,
    help="Write an OpenTelemetry span per call to DIR/spans.otlp.jsonl (OTLP JSON), as observability: {spans: true} "
    "in the scenario does; the runs then execute in this process.",
)
def run(
    scenario_file: Path,
    runs: int | None,
    seed: int | None,
    transport: str | None,
    out_dir: Path | None,
    device: str,
    workers: int | None,
    executor: str,
    address: str | None,
    violations: bool,
    spans: bool,
) -> None:
    """Run SCENARIO's runs against its servers and record every message.

    With --out naming a directory this scenario and seed started, continue it: runs already
    recorded are kept, a torn last line or an unfinished run is dropped and reported.

    With --workers N, N processes execute the runs, each with its own servers; this process
    alone writes the directory, run by run in run order, so the events do not depend on N.

    With --executor ray, the workers are Ray actors (default: one per CPU of the cluster) and
    each run is a Ray task; this process still writes the directory alone.
    """
    if workers is not None and workers < 1:
        raise click.ClickException(f"--workers must be at least 1, not {workers}")
    if address is not None and executor != "ray":
        raise click.ClickException("--address names a Ray cluster: use it with --executor ray")
    scenario = load_scenario(scenario_file)
    updates: dict[str, int] = {}
    if runs is not None:
        updates["runs"] = runs
    if seed is not None:
        updates["seed"] = seed
    if updates:
        scenario = scenario.model_copy(update=updates)
    directory = out_dir or Path("runs") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    scenario, workers, exporting = spans_setting(scenario, directory, spans=spans, workers=workers, executor=executor)
    console = Console(stderr=True)
    cluster: contextlib.AbstractContextManager[RayExecutor | None] = (
        RayExecutor(address) if executor == "ray" else contextlib.nullcontext()
    )
    with (
        exporting,
        cluster as chosen,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as progress,
    ):
        task_id = progress.add_task(f"{scenario.name} (starting servers)", total=scenario.runs)

        def advance(done: int, total: int) -> None:
            progress.update(task_id, completed=done, total=total, description=scenario.name)

        summary = anyio.run(
            lambda: run_experiment(
                scenario,
                out_dir=directory,
                scenario_path=scenario_file,
                transport=transport,  # type: ignore[arg-type]
                device=device,
                progress=advance,
                workers=workers,
                executor=chosen,
            )
        )
    if summary.resume_note:
        console.print(f"{directory}: {summary.resume_note}")
    if summary.workers_note:
        console.print(summary.workers_note)
    out = report_console()
    print_summary(summary, out)
    if violations:
        result = validate_experiment(directory)
        if result.runs:
            render_terminal(summarize(result, source=str(directory)), out, groups=False)
            click.echo(f"by server, fault and agent, with plots: testbed report {directory}")
            click.echo(f"every run, with the evidence of each violation: testbed view {directory}")


def print_summary(summary: ExperimentSummary, console: Console) -> None:
    table = Table(title=f"{summary.directory}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("runs", str(summary.runs))
    if summary.resumed_runs:
        table.add_row("  resumed (already recorded)", str(summary.resumed_runs))
    table.add_row("tool calls", str(summary.calls))
    for kind, count in outcome_counts(summary).items():
        if count:
            table.add_row(f"  {kind}", str(count))
    for kind, count in sorted(summary.faults.items()):
        table.add_row(f"fault injected: {kind}", str(count))
    if summary.tasks_checked:
        rate = summary.tasks_passed / summary.tasks_checked
        table.add_row("task success", f"{summary.tasks_passed}/{summary.tasks_checked} ({rate:.0%})")
    if summary.workers > 1:
        table.add_row("workers", str(summary.workers))
    table.add_row("wall time", f"{summary.duration_s:.1f} s ({summary.duration_s / max(summary.runs, 1):.2f} s/run)")
    console.print(table)
