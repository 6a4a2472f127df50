"""A forest plot per contrast: each yes/no outcome's difference with its interval, and the latency ratio."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from testbed.experiment._analyse import Results

__all__ = ["FOREST_DIR", "forest_file_name", "forest_plot"]

FOREST_DIR: Final = "forest"
"""The folder of the per-contrast forest plots, inside the experiment directory."""
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9]+")
_SIGNIFICANT: Final = 0.05


def forest_file_name(index: int, contrast: str) -> str:
    """``03-extensions-all-vs-none.png``: the contrast's position, then its name made safe for a file name."""
    return f"{index:02d}-{_UNSAFE.sub('-', contrast).strip('-').lower()[:60]}.png"


def forest_plot(results: Results, contrast: str) -> bytes:
    """One contrast: the difference (percentage points) with its interval per yes/no outcome, and, beside it,
    the latency cost as a ratio with its interval. Red: Holm-adjusted p < 0.05."""
    rows = results.contrasts[results.contrasts["contrast"] == contrast]
    proportions = rows[rows["measure"] == "proportion"]
    ratios = rows[rows["measure"] == "ratio"]
    height = 1.2 + 0.35 * max(len(proportions), 1)
    figure = Figure(figsize=(9.0, height), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(3, 1.3))
    _interval_panel(
        left,
        labels=[str(outcome).replace("_", " ") for outcome in proportions["outcome"]],
        estimate=proportions["difference"].to_numpy(dtype=float) * 100,
        low=proportions["low"].to_numpy(dtype=float) * 100,
        high=proportions["high"].to_numpy(dtype=float) * 100,
        p_holm=proportions["p_holm"].to_numpy(dtype=float),
        reference=0.0,
    )
    left.set_xlim(-105, 105)
    left.set_xlabel("treatment - baseline (percentage points)", fontsize=8)
    _interval_panel(
        right,
        labels=[str(outcome).replace("_", " ") for outcome in ratios["outcome"]],
        estimate=ratios["difference"].to_numpy(dtype=float),
        low=ratios["low"].to_numpy(dtype=float),
        high=ratios["high"].to_numpy(dtype=float),
        p_holm=ratios["p_holm"].to_numpy(dtype=float),
        reference=1.0,
    )
    right.set_xlabel("treatment / baseline", fontsize=8)
    confidence = results.plan.loaded.design.confidence
    figure.suptitle(f"{contrast}: {confidence:.0%} intervals (red: Holm p < {_SIGNIFICANT})", fontsize=10)
    FigureCanvasAgg(figure)  # attaches the Agg canvas savefig draws on
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _interval_panel(
    axes: Axes,
    *,
    labels: list[str],
    estimate: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    high: npt.NDArray[np.float64],
    p_holm: npt.NDArray[np.float64],
    reference: float,
) -> None:
    ys = list(range(len(labels)))
    colours = ["tab:red" if p < _SIGNIFICANT else "0.2" for p in p_holm]
    axes.errorbar(estimate, ys, xerr=[estimate - low, high - estimate], fmt="none", ecolor="0.4", capsize=3)
    axes.scatter(estimate, ys, c=colours, zorder=3)
    axes.axvline(reference, color="0.6", linewidth=0.8, linestyle="--")
    axes.set_yticks(ys, labels, fontsize=8)
    axes.set_ylim(len(labels) - 0.5, -0.5)
    axes.tick_params(axis="x", labelsize=8)
