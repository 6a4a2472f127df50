"""An experiment's results as files (CSV, Parquet, an effect plot, one self-contained HTML page) and a table."""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from testbed.experiment._analyse import Results
from testbed.experiment._forest import FOREST_DIR, forest_file_name, forest_plot
from testbed.experiment._outcomes import NUMERIC, RATIO
from testbed.experiment._tables import cell_table, contrast_table, latex, markdown

__all__ = ["ResultFiles", "render_table", "write_results"]

CELLS_CSV: Final = "cells.csv"
CONTRASTS_CSV: Final = "contrasts.csv"
EFFECTS_PNG: Final = "effects.png"
REPORT_HTML: Final = "report.html"
TABLES: Final = {"contrasts": "table-contrasts", "cells": "table-cells"}
"""The paper tables' file stems; each is written as ``.csv``, ``.md`` and ``.tex``."""


@dataclass(frozen=True)
class ResultFiles:
    """Where :func:`write_results` wrote each file."""

    cells: Path
    contrasts: Path
    plot: Path
    html: Path
    forest: tuple[Path, ...]
    """One forest plot per contrast, in contrast order."""
    tables: tuple[Path, ...]
    """The paper tables: contrasts and cells, each as CSV, Markdown and LaTeX."""

    def paths(self) -> tuple[Path, ...]:
        parquet = (self.cells.with_suffix(".parquet"), self.contrasts.with_suffix(".parquet"))
        return (self.cells, self.contrasts, *parquet, self.plot, self.html, *self.tables, *self.forest)


def write_results(results: Results, out_dir: Path) -> ResultFiles:
    """Write ``cells.csv``/``.parquet``, ``contrasts.csv``/``.parquet``, ``effects.png``, a forest plot per
    contrast under ``forest/``, the paper tables (``table-contrasts``, ``table-cells``: ``.csv``, ``.md``,
    ``.tex``) and ``report.html``."""
    for frame, path in ((results.cells, out_dir / CELLS_CSV), (results.contrasts, out_dir / CONTRASTS_CSV)):
        frame.to_csv(path, index=False)
        frame.to_parquet(path.with_suffix(".parquet"), index=False)
    png = effect_plot(results)
    (out_dir / EFFECTS_PNG).write_bytes(png)
    forest = _write_forest(results, out_dir / FOREST_DIR)
    tables = _write_tables(results, out_dir)
    (out_dir / REPORT_HTML).write_text(_html(results, png, forest), encoding="utf-8")
    return ResultFiles(
        out_dir / CELLS_CSV, out_dir / CONTRASTS_CSV, out_dir / EFFECTS_PNG, out_dir / REPORT_HTML, forest, tables
    )


def _write_forest(results: Results, directory: Path) -> tuple[Path, ...]:
    directory.mkdir(exist_ok=True)
    paths = []
    for index, contrast in enumerate(dict.fromkeys(results.contrasts["contrast"])):
        path = directory / forest_file_name(index, contrast)
        path.write_bytes(forest_plot(results, contrast))
        paths.append(path)
    return tuple(paths)


def _write_tables(results: Results, out_dir: Path) -> tuple[Path, ...]:
    design = results.plan.loaded.design
    paths = []
    for kind, table in (("contrasts", contrast_table(results)), ("cells", cell_table(results))):
        stem = out_dir / TABLES[kind]
        caption = f"{design.name}: {kind} ({len(results.plan.cells)} cells, {results.plan.runs} runs each)"
        table.to_csv(stem.with_suffix(".csv"), index=False)
        stem.with_suffix(".md").write_text(markdown(table), encoding="utf-8")
        stem.with_suffix(".tex").write_text(latex(table, caption=caption), encoding="utf-8")
        paths += [stem.with_suffix(suffix) for suffix in (".csv", ".md", ".tex")]
    return tuple(paths)


def effect_plot(results: Results) -> bytes:
    """One panel per yes/no outcome: each contrast's difference in percentage points with its interval."""
    frame = results.contrasts[results.contrasts["measure"] == "proportion"]
    outcomes = list(dict.fromkeys(frame["outcome"])) or ["(none)"]
    contrasts = list(dict.fromkeys(results.contrasts["contrast"]))
    columns = min(3, len(outcomes))
    rows = math.ceil(len(outcomes) / columns)
    figure = Figure(figsize=(4.2 * columns, 0.5 + rows * (0.45 * len(contrasts) + 1.0)), layout="constrained")
    for position, outcome in enumerate(outcomes):
        axes = figure.add_subplot(rows, columns, position + 1)
        shown = frame[frame["outcome"] == outcome].set_index("contrast").reindex(contrasts)
        ys = list(range(len(contrasts)))
        difference = shown["difference"].to_numpy(dtype=float) * 100
        errors = [
            difference - shown["low"].to_numpy(dtype=float) * 100,
            shown["high"].to_numpy(dtype=float) * 100 - difference,
        ]
        significant = shown["p_holm"].to_numpy(dtype=float) < 0.05
        axes.errorbar(difference, ys, xerr=errors, fmt="none", ecolor="0.4", capsize=3)
        axes.scatter(difference, ys, c=["tab:red" if flag else "0.2" for flag in significant], zorder=3)
        axes.axvline(0.0, color="0.6", linewidth=0.8, linestyle="--")
        axes.set_yticks(ys, contrasts if position % columns == 0 else [""] * len(ys), fontsize=8)
        axes.invert_yaxis()
        axes.set_xlim(-105, 105)
        axes.set_title(outcome, fontsize=10)
        axes.set_xlabel("difference (percentage points)", fontsize=8)
    figure.suptitle(
        f"{results.plan.loaded.design.name}: treatment - baseline, {results.plan.loaded.design.confidence:.0%} "
        "intervals (red: Holm p < 0.05)",
        fontsize=10,
    )
    FigureCanvasAgg(figure)  # attaches the Agg canvas savefig draws on
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _p(value: float) -> str:
    return "" if math.isnan(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def render_table(results: Results, console: Console) -> None:
    """Print the contrasts: each outcome's values, difference with interval, paired p and Holm p."""
    table = Table(title=f"{results.plan.loaded.design.name}: contrasts ({len(results.plan.cells)} cells, "
                  f"{results.plan.runs} runs each, seed {results.plan.seed})")  # fmt: skip
    for name in ("contrast", "outcome"):
        table.add_column(name)
    for name in ("pairs", "baseline", "treatment", "difference [CI]", "p", "p (Holm)"):
        table.add_column(name, justify="right")
    previous = None
    for row in results.contrasts.itertuples(index=False):
        scale, unit = (100.0, " pp") if row.measure == "proportion" else (1.0, "")
        value_scale = 100.0 if row.measure == "proportion" else 1.0
        effect = (
            f"x{row.difference:.3f} [{row.low:.3f}, {row.high:.3f}]"
            if row.measure == "ratio"
            else f"{row.difference * scale:+.3g}{unit} [{row.low * scale:+.3g}, {row.high * scale:+.3g}]"
        )
        table.add_row(
            row.contrast if row.contrast != previous else "",
            row.outcome + (" %" if row.measure == "proportion" else ""),
            str(row.pairs),
            f"{row.baseline * value_scale:.3g}",
            f"{row.treatment * value_scale:.3g}",
            effect,
            _p(row.p_value),
            _p(row.p_holm),
            end_section=False,
        )
        previous = row.contrast
    console.print(table)
    console.print(
        "proportions: Newcombe interval, McNemar exact test; "
        f"{', '.join(NUMERIC)}: paired bootstrap interval, paired permutation test; {', '.join(RATIO)}: treatment / "
        "baseline mean, paired bootstrap interval, permutation test of the log ratio; Holm across contrasts per outcome"
    )


def _html(results: Results, png: bytes, forest: tuple[Path, ...]) -> str:
    design = results.plan.loaded.design
    contrasts = results.contrasts.copy()
    for column in ("difference", "low", "high", "treatment", "baseline"):
        contrasts[column] = [
            value * 100 if measure == "proportion" else value
            for value, measure in zip(contrasts[column], contrasts["measure"], strict=True)
        ]
    image = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(design.name)}: experiment</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}
td:first-child{{text-align:left}}</style>
</head><body>
<h1>{html.escape(design.name)}</h1>
<p>{html.escape(design.description)}</p>
<p>{len(results.plan.cells)} cells, {results.plan.runs} runs each, seed {results.plan.seed}; every cell shares the
seed, so run <i>i</i> sees the same scene and the same fault decisions in each cell, and contrasts compare runs pair
by pair. Proportions are in percent; differences are treatment minus baseline, in percentage points for proportions.
Proportions: Newcombe hybrid score interval (unpaired, so conservative for pairs) and McNemar's exact test on the
discordant pairs. Calls per run and mean call latency (ms): paired bootstrap interval and paired permutation test.
Latency ratio: the treatment's mean call latency over the baseline's (per-run means, paired), with a paired
bootstrap interval and a permutation test of the log ratio. Per cell, the median and p90 of every call's recorded
duration carry distribution-free order-statistic intervals.
p (Holm): Holm's adjustment across the contrasts of each outcome. Each cell starts with a cold inference
cache; the cells run one after another, so a latency difference also holds any change in machine load between them.
{design.confidence:.0%} intervals.</p>
<h2>Effects</h2>
<img alt="effect plot" src="data:image/png;base64,{image}">
<h2>Per contrast</h2>
{"".join(f'<p><img alt="forest plot" src="{FOREST_DIR}/{path.name}"></p>' for path in forest)}
<h2>Contrasts</h2>
{contrasts.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")}
<h2>Cells</h2>
{results.cells.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")}
</body></html>
"""
