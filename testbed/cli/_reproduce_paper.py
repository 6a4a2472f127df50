"""``testbed reproduce paper``: every reproduced table, the calibration beside them, one directory."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from testbed._errors import TestbedError
from testbed.report import report_console
from testbed.reproduce import (
    DEFAULT_SEED,
    FULL_SIZES,
    QUICK_SIZES,
    PaperSizes,
    load_paper_manifest,
    reproduce_paper,
    rich_table,
)


def _settings(quick: bool, seed: int | None, manifest: Path | None) -> tuple[int, PaperSizes]:
    if manifest is None:
        return (DEFAULT_SEED if seed is None else seed), (QUICK_SIZES if quick else FULL_SIZES)
    if quick or seed is not None:
        raise click.UsageError("--manifest gives the seed and sizes: drop --quick and --seed")
    return load_paper_manifest(manifest)


@click.command()
@click.option(
    "--quick",
    is_flag=True,
    help="Small sizes (about two minutes on two cores; a smoke test, every row marked quick): the audit's and every "
    "part's --quick, the attack suite without the embedded LLM agent.",
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help=f"The one seed of every part [{DEFAULT_SEED}].")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Re-run what a paper run's manifest.json records (its seed and sizes); --out defaults to its directory.",
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="[default: paper-out]")
def paper(quick: bool, seed: int | None, manifest: Path | None, out_dir: Path | None) -> None:
    """Run the validators' calibration, the audit, the case studies and the security tables into one directory.

    Writes report.html (every table beside the paper's, input/output marked, plots, the calibration, seeds and
    versions), tables.csv/.parquet, calibration.csv/.parquet and manifest.json. Rerunning with the same --out
    continues an interrupted run. Exits non-zero when a recovery check fails or a part stops, the report written.
    """
    seed_used, sizes = _settings(quick, seed, manifest)
    target = out_dir or (manifest.parent if manifest is not None else Path("paper-out"))
    progress = Console(stderr=True)
    try:
        result = reproduce_paper(
            target,
            seed=seed_used,
            sizes=sizes,
            progress=lambda part, done, planned: progress.log(f"{part}: {done}/{planned}"),
            calibration_progress=progress.log,
        )
    except TestbedError as error:
        raise click.ClickException(str(error)) from None
    console = report_console()
    for section in result.sections:
        if section.rows:
            sized = f" [{section.quick}]" if section.quick else ""
            console.print(rich_table(list(section.rows), f"{section.title} -> {target / section.name}{sized}"))
        console.print(f"{section.name}: {section.status}" + (f" ({section.quick})" if section.quick else ""))
    console.print(f"validator calibration: {result.calibration.goal_line()}")
    for path in result.files:
        console.print(f"wrote {path}")
    problems = [f"{part}: {row.row}" for part, row in result.failed] + result.errors
    if problems:
        raise click.ClickException(f"{len(problems)} check(s) failed: {'; '.join(problems)}")
    console.print("every recovery check passed")
