"""``testbed view``: write the run viewer (a static HTML site) of one or more experiments, and open it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from testbed.viewer import build_site, open_site


@click.command()
@click.argument("directories", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Site folder (default: RUN_DIR/viewer for one experiment, viewer/ beside several).",
)
@click.option("--open/--no-open", "open_browser", default=True, show_default=True, help="Open it in a browser.")
@click.option("--per-id", type=click.IntRange(min=1), default=8, show_default=True, help="Evidence figures per ID.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the figure sample.")
@click.option("--page-size", type=click.IntRange(min=10), default=100, show_default=True, help="Runs per list page.")
def view(
    directories: tuple[Path, ...], out_dir: Path | None, open_browser: bool, per_id: int, seed: int, page_size: int
) -> None:
    """Write a static, self-contained HTML viewer of RUN_DIR(s): overview, violation, run and comparison pages.

    It opens from the file system (no server, no network). With several experiments a comparison page
    is added. The browser is opened only on a terminal and where one is available (--no-open: never).
    """
    result = build_site(
        list(directories),
        out_dir,
        per_id=per_id,
        seed=seed,
        page_size=page_size,
        progress=(lambda line: click.echo(line, err=True)) if sys.stderr.isatty() else None,
    )
    click.echo(
        f"viewer: {result.pages} pages over {result.runs} runs in {result.seconds:.1f} s "
        f"(reading and validating {result.load_seconds:.1f} s)",
        err=True,
    )
    opened = open_browser and sys.stdout.isatty() and open_site(result.index)
    click.echo(f"{'opened' if opened else 'open'} {result.index.resolve().as_uri()}")
