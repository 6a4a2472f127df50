"""The calibration table rendered for people: a rich table for the terminal and an HTML table for reports."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from rich.table import Table

from testbed.check import AccuracyRow, AccuracyTable
from testbed.check._calibration import RECALL_GOAL, hits_needed, meets_recall_goal
from testbed.metrics import Interval

CALIBRATION_COLUMNS = (
    "fault kind",
    "violation ID",
    "recall: hits/applied",
    "false positives: flags/not applied",
    f"recall low >= {RECALL_GOAL:g}",
)

_DIGITS = 3


def _fraction(value: float) -> str:
    """``value`` with three decimals, more where three would round a rate strictly inside (0, 1) to 0 or 1."""
    for digits in range(_DIGITS, 10):
        text = f"{value:.{digits}f}"
        if value in (0.0, 1.0) or float(text) not in (0.0, 1.0):
            return text
    return f"{value:.10f}"


def _outward(low: float, high: float) -> tuple[str, str]:
    """Bounds rounded away from the estimate, so a printed bound never claims more than was measured."""
    scale = 10**_DIGITS
    return f"{math.floor(low * scale) / scale:.{_DIGITS}f}", f"{math.ceil(high * scale) / scale:.{_DIGITS}f}"


def proportion_text(count: int, total: int, interval: Interval | None) -> str:
    """``383/384 = 0.997 [0.985–1.000]``, or ``0/0 (n/a)`` where nothing was observed."""
    if interval is None:
        return f"{count}/{total} (n/a)"
    low, high = _outward(interval.low, interval.high)
    return f"{count}/{total} = {_fraction(interval.estimate)} [{low}–{high}]"


def calibration_cells(row: AccuracyRow, confidence: float, goal: float = RECALL_GOAL) -> tuple[str, ...]:
    """One row's cells, in the order of :data:`CALIBRATION_COLUMNS`."""
    meets = meets_recall_goal(row, goal, confidence)
    return (
        row.kind,
        row.violation_id,
        proportion_text(row.detected_runs, row.applied_runs, row.recall_interval(confidence)),
        proportion_text(row.false_positive_runs, row.clean_runs, row.false_positive_interval(confidence)),
        "n/a" if meets is None else ("yes" if meets else "no"),
    )


def calibration_caption(table: AccuracyTable) -> str:
    return (
        f"validator calibration on {table.scenario}: {table.runs} runs per fault kind at p={table.probability}, "
        f"Wilson {table.confidence * 100:g} % intervals"
    )


def calibration_legend(confidence: float = 0.95, goal: float = RECALL_GOAL) -> tuple[str, ...]:
    """One line per column saying what it counts, and what the recall goal needs."""
    level = f"{confidence * 100:g} %"
    return (
        "recall: runs where the injected fault altered a message and the expected ID appeared beyond the same run "
        f"of a fault-free baseline / runs where the fault applied (Wilson {level} interval).",
        "false positives: runs where the fault did not apply but the ID appeared beyond the baseline "
        f"/ runs where it did not apply (Wilson {level} interval).",
        f"goal: recall lower bound >= {goal:g}; with no miss it needs at least {hits_needed(goal, confidence)} "
        "applied runs.",
    )


def calibration_rich(table: AccuracyTable, goal: float = RECALL_GOAL) -> Table:
    """``table`` as a rich table whose cells never wrap away a digit."""
    rendered = Table(title=calibration_caption(table), title_justify="left")
    for name in CALIBRATION_COLUMNS:
        rendered.add_column(name, no_wrap=True)
    for row in table.rows:
        rendered.add_row(*calibration_cells(row, table.confidence, goal))
    return rendered


def calibration_html(tables: Sequence[AccuracyTable], goal: float = RECALL_GOAL) -> str:
    """An HTML section (heading, legend, one table per scenario) to embed in a report."""
    esc = html.escape
    confidence = tables[0].confidence if tables else 0.95
    parts = ["<h2>Validator calibration</h2>"]
    parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in calibration_legend(confidence, goal)) + "</ul>")
    if not tables:
        parts.append("<p>No calibration was measured.</p>")
    head = "".join(f"<th>{esc(name)}</th>" for name in CALIBRATION_COLUMNS)
    for table in tables:
        body = "".join(
            "<tr>"
            + "".join(
                f"<td{' class=num' if i >= 2 else ''}>{esc(cell)}</td>"
                for i, cell in enumerate(calibration_cells(row, table.confidence, goal))
            )
            + "</tr>"
            for row in table.rows
        )
        parts.append(
            f"<table><caption>{esc(calibration_caption(table))}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )
    return "\n".join(parts)
