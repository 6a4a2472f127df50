"""The reproduce report's plots as PNG bytes: ours beside the paper's figures, and the validators' calibration."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from testbed.check import AccuracyTable
from testbed.reproduce._tables import Row

__all__ = ["calibration_png", "comparison_png"]

_OURS = "#4c72b0"
_PAPER = "#c44e52"


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)  # attaches the Agg canvas savefig draws on
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def comparison_png(rows: list[Row], title: str) -> bytes | None:
    """Each measured figure that the paper also gives: ours and the paper's, each with its interval."""
    shown = [row for row in rows if row.marking == "output" and row.paper is not None and row.value is not None]
    if not shown:
        return None
    figure = Figure(figsize=(8.0, 1.4 + 0.55 * len(shown)), layout="constrained")
    axes = figure.add_subplot()
    ours = [row.value for row in shown if row.value is not None]
    paper = [row.paper for row in shown if row.paper is not None]
    for offset, (label, colour, intervals) in enumerate((("ours (output)", _OURS, ours), ("paper", _PAPER, paper))):
        estimates = [interval.estimate for interval in intervals]
        errors = [
            [interval.estimate - interval.low for interval in intervals],
            [interval.high - interval.estimate for interval in intervals],
        ]
        positions = [index + 0.18 * (offset * 2 - 1) for index in range(len(shown))]
        axes.errorbar(estimates, positions, xerr=errors, fmt="o", color=colour, capsize=3, label=label)
    axes.set_yticks(range(len(shown)), [f"{row.row} ({row.unit})" for row in shown], fontsize=9)
    axes.invert_yaxis()
    axes.set_xlim(0, max(105.0, *(interval.high * 1.05 for interval in (*ours, *paper))))
    axes.set_xlabel("value, 95 % interval (Wilson: shares; exact Poisson: per 100)")
    axes.set_title(title, fontsize=11)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right", fontsize=9)
    return _png(figure)


def calibration_png(table: AccuracyTable) -> bytes | None:
    """Per fault kind: recall and false-positive rate with their Wilson intervals."""
    rows = [row for row in table.rows if row.applied_runs or row.clean_runs]
    if not rows:
        return None
    figure = Figure(figsize=(9.0, 1.4 + 0.4 * len(rows)), layout="constrained")
    labels = [f"{row.kind} -> {row.violation_id}" for row in rows]
    for position, (heading, intervals) in enumerate(
        (
            ("recall: hits / applied", [row.recall_interval(table.confidence) for row in rows]),
            ("false positives: flags / not applied", [row.false_positive_interval(table.confidence) for row in rows]),
        )
    ):
        axes = figure.add_subplot(1, 2, position + 1)
        ys = [index for index, interval in enumerate(intervals) if interval is not None]
        present = [interval for interval in intervals if interval is not None]
        axes.errorbar(
            [interval.estimate for interval in present],
            ys,
            xerr=[
                [interval.estimate - interval.low for interval in present],
                [interval.high - interval.estimate for interval in present],
            ],
            fmt="o",
            color=_OURS,
            capsize=3,
        )
        axes.set_yticks(range(len(rows)), labels if position == 0 else [""] * len(rows), fontsize=8)
        axes.invert_yaxis()
        axes.set_xlim(-0.02, 1.02)
        axes.set_title(heading, fontsize=10)
        axes.grid(axis="x", alpha=0.3)
    figure.suptitle(f"validator calibration: {table.runs} runs per fault kind, Wilson 95 % intervals", fontsize=10)
    return _png(figure)
