"""The terminal view of a summary: rich tables, then each ID's one-sentence description."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

from rich.console import Console
from rich.table import Table

from testbed.catalog import CATALOG
from testbed.metrics import OVERALL, ModeRow, RateRow, Summary
from testbed.report._format import (
    COLUMNS,
    metric_legend,
    row_cells,
    scope_line,
    sources_line,
    title,
    truth_mode_lines,
)

NON_TERMINAL_WIDTH = 160
"""Console width when output is not a terminal (a pipe, a file, CI): wide enough that every column stays."""


def report_console(*, stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A console for report tables: the terminal's width on a terminal, else :data:`NON_TERMINAL_WIDTH`.

    Off a terminal rich would otherwise assume 80 columns and squeeze the tables.
    """
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    if stream.isatty():
        return Console(file=file, stderr=stderr)
    return Console(file=file, stderr=stderr, width=NON_TERMINAL_WIDTH)


def render_terminal(summary: Summary, console: Console, *, groups: bool = True, mode: ModeRow | None = None) -> None:
    """Print the overall rates per ID, then (with ``groups``) the per-group rows, then each ID's description.

    Args:
        summary: what to print.
        console: where to print it.
        groups: also print one table of per-server, per-fault and per-agent rows.
        mode: the experiment's task success (and plan validity), printed under the scope line.
    """
    console.print(f"[bold]{title(summary)}[/bold]")
    if summary.experiments:
        console.print(sources_line(summary), highlight=False)
    elif summary.source:
        console.print(f"source: {summary.source}")
    console.print(scope_line(summary))
    if mode is not None:
        console.print(task_line(mode))
    for note in summary.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    for index, line in enumerate(truth_mode_lines(summary)):
        console.print(line if index == 0 else f"  {line}", highlight=False)
    if not summary.rows:
        return
    console.print(_table("violation rates (all runs)", [r for r in summary.rows if r.group == OVERALL], grouped=False))
    others = [r for r in summary.rows if r.group != OVERALL]
    if groups and others:
        console.print(_table("by server, fault kind and agent kind", others, grouped=True))
    for violation_id in summary.ids:
        found = CATALOG.get(violation_id)
        text = f"{found.behaviour} [dim]({found.severity.value}; {found.source})[/dim]" if found else "not catalogued"
        console.print(f"[bold]{violation_id}[/bold]: {text}", highlight=False)
    for line in metric_legend(summary):
        console.print(f"[dim]{line}[/dim]")


def task_line(mode: ModeRow) -> str:
    """``task success: 2/6 runs (33 %, Wilson 95 % 10–70 %)``, and plan validity where the agent plans."""
    parts = []
    success = mode.task_success
    if success is not None:
        parts.append(
            f"task success: {mode.task_passed_runs}/{mode.task_checked_runs} runs ({100 * success.estimate:.0f} %, "
            f"Wilson 95 % {100 * success.low:.0f}–{100 * success.high:.0f} %)"
        )
    else:
        parts.append("task success: not checked (task none)")
    validity = mode.plan_validity
    if validity is not None and mode.plan_valid_runs is not None:
        parts.append(f"plans valid: {mode.plan_valid_runs}/{mode.runs} runs ({100 * validity.estimate:.0f} %)")
    return "; ".join(parts)


def _table(caption: str, rows: Sequence[RateRow], *, grouped: bool) -> Table:
    table = Table(title=caption, title_justify="left")
    widths = {"ID": max(len(row.id) for row in rows), "group": max(len(row.group.label) for row in rows)}
    for name in COLUMNS:
        if name == "group" and not grouped:
            continue
        if name in widths:  # names stay whole and searchable; the numbers wrap instead
            table.add_column(name, min_width=widths[name], no_wrap=True)
        else:  # every other column folds inside its cells rather than being dropped
            table.add_column(name, justify="left" if name == "severity" else "right", overflow="fold", min_width=6)
    for row in rows:
        cells = row_cells(row)
        table.add_row(*(cells if grouped else cells[:2] + cells[3:]))
    return table
