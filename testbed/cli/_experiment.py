"""``testbed experiment``: a paired factorial design, run cell by cell, compared with significance."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from testbed.experiment import (
    CELLS_DIR,
    QUICK_RUNS,
    Plan,
    analyse,
    load_design,
    plan_experiment,
    plan_from_manifest,
    render_table,
    run_cells,
    write_manifest,
    write_results,
)
from testbed.report import report_console
from testbed.scenario import MAX_RUNS


@click.command()
@click.argument("design_file", metavar="FILE.yaml", required=False, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Experiment directory.")
@click.option(
    "--quick", is_flag=True, help=f"The design's quick_runs per cell (default {QUICK_RUNS}), at most its runs."
)
@click.option("--runs", type=click.IntRange(min=1, max=MAX_RUNS), default=None, help="Runs per cell.")
@click.option("--force", is_flag=True, help="Run a design of more than 10,000 cells.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the experiment in this directory, from its design.json alone.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def experiment(
    design_file: Path | None,
    out_dir: Path | None,
    quick: bool,
    runs: int | None,
    force: bool,
    resume_dir: Path | None,
    device: str,
) -> None:
    """Run FILE.yaml's factorial design: every cell an experiment with the same seed, then each contrast
    compared run by run (difference with interval, paired test, Holm-adjusted p).

    Rerunning the same file with the same --out, or --resume OUT, continues an interrupted
    experiment: finished cells are kept, an unfinished one continues where it stopped.
    """
    if resume_dir is not None:
        if design_file is not None or runs is not None or quick:
            raise click.UsageError("--resume OUT reads the design, runs and seed from OUT/design.json: give no others")
        plan, text = plan_from_manifest(resume_dir)
        directory = resume_dir
    else:
        if design_file is None:
            raise click.UsageError("give a design FILE.yaml, or --resume OUT")
        loaded = load_design(design_file)
        per_cell = runs if runs is not None else (min(loaded.design.quick_runs, loaded.design.runs) if quick else None)
        plan = plan_experiment(loaded, runs=per_cell, force=force)
        text = design_file.read_text(encoding="utf-8")
        directory = out_dir or Path("runs") / f"{loaded.design.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    write_manifest(plan, directory, text=text)
    _run(plan, directory, device)
    results = analyse(plan, directory)
    files = write_results(results, directory)
    render_table(results, report_console())
    click.echo(f"cells: {directory / CELLS_DIR} (each one: testbed report / replay / view)")
    click.echo(f"tables, effect plot and report: {', '.join(str(path) for path in files.paths())}")


def _run(plan: Plan, directory: Path, device: str) -> None:
    console = Console(stderr=True)
    total = plan.runs * len(plan.cells)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task_id = progress.add_task(f"{plan.loaded.design.name}: {len(plan.cells)} cells", total=total)
        cell_runs = anyio.run(
            lambda: run_cells(
                plan, directory, progress=lambda done, _: progress.update(task_id, completed=done), device=device
            )
        )
    for cell_run in cell_runs:
        if cell_run.note:
            console.print(f"{cell_run.cell}: {cell_run.note}")
    resumed = sum(1 for cell_run in cell_runs if cell_run.resumed)
    if resumed:
        console.print(f"{resumed} cell(s) continued from runs an earlier process recorded")
