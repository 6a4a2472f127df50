"""``testbed fuzz``: malformed arguments against every tool of the registered servers, and what came back."""

from __future__ import annotations

import click
from hypothesis.configuration import set_hypothesis_home_dir
from rich.console import Console
from rich.table import Table

from testbed.fuzz import fuzz_servers
from testbed.vision import testbed_home

_COLUMNS = ("ok", "classified", "generic", "unhelpful", "crash", "hang")
_TABLE_WIDTH = 110


@click.command()
@click.argument("servers", nargs=-1)
@click.option("--calls", type=click.IntRange(min=1), default=1000, show_default=True, help="Calls per server.")
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="The same seed sends the same calls."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds before an unanswered call counts as a hang.",
)
def fuzz(servers: tuple[str, ...], calls: int, seed: int, timeout_s: float) -> None:
    """Fuzz SERVERS (default: every registered server, plug-ins included) with malformed arguments.

    Exits non-zero when any call ends in a generic internal error, an unhelpful error
    (one naming no argument, or an exception class instead of the problem), a crash or a hang.
    """
    # Hypothesis keeps a cache of constants it mines from the code; in the testbed's folder, not the current one.
    set_hypothesis_home_dir(str(testbed_home() / "hypothesis"))
    tallies = fuzz_servers(servers, calls=calls, seed=seed, timeout_s=timeout_s)
    console = Console()
    console.width = max(console.width, _TABLE_WIDTH)  # the column names are the legend: never cut them
    table = Table(title=f"fuzzing, seed {seed}", title_justify="left")
    for column in ("server", "calls", *_COLUMNS, "seconds"):
        table.add_column(column, justify="left" if column == "server" else "right", no_wrap=column == "server")
    for tally in tallies:
        counts = {outcome.value: count for outcome, count in tally.counts.items()}
        cells = (str(counts.get(column, 0)) for column in _COLUMNS)
        table.add_row(tally.server, str(tally.calls), *cells, f"{tally.seconds:.1f}")
    console.print(table)
    failures = [(tally.server, failure) for tally in tallies for failure in tally.failures]
    for server, failure in failures:
        cause = f" [{failure.cause}]" if failure.cause else ""
        console.print(f"{failure.outcome.value}: {server} {failure.tool}: {failure.message}{cause}", markup=False)
        console.print(f"    arguments: {failure.arguments}", markup=False)
    if failures:
        raise SystemExit(1)
