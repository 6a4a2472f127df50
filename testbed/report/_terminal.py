"""The terminal view of a summary: rich tables."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from testbed.metrics import OVERALL, RateRow, Summary
from testbed.report._format import COLUMNS, metric_legend, row_cells, scope_line, title


def render_terminal(summary: Summary, console: Console, *, groups: bool = True) -> None:
    """Print the overall rates per ID, then (with ``groups``) the per-group rows.

    Args:
        summary: what to print.
        console: where to print it.
        groups: also print one table of per-server, per-fault and per-agent rows.
    """
    console.print(f"[bold]{title(summary)}[/bold]")
    if summary.source:
        console.print(f"source: {summary.source}")
    console.print(scope_line(summary))
    for note in summary.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if not summary.rows:
        return
    console.print(_table("violation rates (all runs)", [r for r in summary.rows if r.group == OVERALL], grouped=False))
    others = [r for r in summary.rows if r.group != OVERALL]
    if groups and others:
        console.print(_table("by server, fault kind and agent kind", others, grouped=True))
    for line in metric_legend(summary):
        console.print(f"[dim]{line}[/dim]")


def _table(caption: str, rows: Sequence[RateRow], *, grouped: bool) -> Table:
    table = Table(title=caption, title_justify="left")
    widths = {"ID": max(len(row.id) for row in rows), "group": max(len(row.group.label) for row in rows)}
    for name in COLUMNS:
        if name == "group" and not grouped:
            continue
        if name in widths:  # names stay whole and searchable; the numbers wrap instead
            table.add_column(name, min_width=widths[name], no_wrap=True)
        else:
            table.add_column(name, justify="left" if name == "severity" else "right", overflow="fold")
    for row in rows:
        cells = row_cells(row)
        table.add_row(*(cells if grouped else cells[:2] + cells[3:]))
    return table
