"""Report files: CSV and Parquet, Markdown, self-contained HTML (catalog text, task success, evidence), PNG plots."""

from __future__ import annotations

import base64
import csv
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from testbed.catalog import CATALOG
from testbed.check import AccuracyTable
from testbed.metrics import OVERALL, GroupKind, Interval, ModeRow, RateRow, Summary
from testbed.report._calibration import calibration_html
from testbed.report._evidence import Evidence, legend_html, path_html
from testbed.report._format import (
    COLUMNS,
    metric_legend,
    row_cells,
    scope_line,
    sources_line,
    title,
    truth_mode_lines,
)
from testbed.report._terminal import task_line

CSV_FILE = "violations.csv"
PARQUET_FILE = "violations.parquet"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
PLOTS_DIR = "plots"

CSV_FIELDS = (
    "experiment_id",
    "id",
    "severity",
    "group_kind",
    "group",
    "runs",
    "runs_affected",
    "runs_affected_per_100",
    "runs_affected_per_100_low",
    "runs_affected_per_100_high",
    "executions",
    "occurrences",
    "per_100_executions",
    "per_100_executions_low",
    "per_100_executions_high",
    "servers_flagged",
    "servers_total",
    "servers_flagged_percent",
    "confidence",
)
"""Columns of ``violations.csv``: one row per violation ID x group; empty cells where a rate is undefined."""


@dataclass(frozen=True)
class ReportFiles:
    """Where :func:`write_report` wrote each file."""

    directory: Path
    csv: Path
    markdown: Path
    html: Path
    plots: tuple[Path, ...]
    parquet: Path | None = None
    """``violations.parquet`` (always written; ``None`` only in a ReportFiles built by hand)."""

    def paths(self) -> tuple[Path, ...]:
        extra = (self.parquet,) if self.parquet is not None else ()
        return (self.csv, *extra, self.markdown, self.html, *self.plots)


def write_report(
    summary: Summary,
    out_dir: Path,
    *,
    mode: ModeRow | None = None,
    evidence: Mapping[str, Sequence[Evidence]] | None = None,
    figures: Mapping[str, bytes] | None = None,
    calibration: Sequence[AccuracyTable] = (),
) -> ReportFiles:
    """Write every report file of ``summary`` under ``out_dir`` (created if needed, files overwritten).

    Args:
        summary: the rates.
        out_dir: where to write.
        mode: task success and plan validity, stated in the Markdown and HTML.
        evidence: per ID, the sampled evidence to show in the HTML (``sampled_evidence``).
        figures: the PNG bytes of each evidence figure by hash (embedded, so the HTML stays one file).
        calibration: the validators' measured accuracy, shown in the HTML beside the rates they produced.

    Returns:
        The paths written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    records = rate_records(summary)
    csv_path = out_dir / CSV_FILE
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(records)
    parquet_path = _write_parquet(records, out_dir / PARQUET_FILE)
    plots = _write_plots(summary, out_dir / PLOTS_DIR)
    markdown_path = out_dir / MARKDOWN_FILE
    markdown_path.write_text(_markdown(summary, mode), encoding="utf-8")
    html_path = out_dir / HTML_FILE
    html_path.write_text(_html(summary, plots, mode, evidence or {}, figures or {}, calibration), encoding="utf-8")
    return ReportFiles(out_dir, csv_path, markdown_path, html_path, tuple(path for _, path in plots), parquet_path)


def rate_records(summary: Summary) -> list[dict[str, Any]]:
    """One dict per rate row, keyed by :data:`CSV_FIELDS` (empty strings where a rate is undefined)."""
    return [_record(summary, row) for row in summary.rows]


def _split(interval: Interval | None) -> tuple[float | str, float | str, float | str]:
    return ("", "", "") if interval is None else (interval.estimate, interval.low, interval.high)


def _record(summary: Summary, row: RateRow) -> dict[str, Any]:
    runs_rate, runs_low, runs_high = _split(row.runs_affected_per_100)
    exec_rate, exec_low, exec_high = _split(row.per_100_executions)
    percent = row.servers_flagged_percent
    return {
        "experiment_id": summary.experiment_id or "",
        "id": row.id,
        "severity": row.severity,
        "group_kind": row.group.kind.value,
        "group": row.group.name,
        "runs": row.runs,
        "runs_affected": row.runs_affected,
        "runs_affected_per_100": runs_rate,
        "runs_affected_per_100_low": runs_low,
        "runs_affected_per_100_high": runs_high,
        "executions": row.executions,
        "occurrences": row.occurrences,
        "per_100_executions": exec_rate,
        "per_100_executions_low": exec_low,
        "per_100_executions_high": exec_high,
        "servers_flagged": row.servers_flagged,
        "servers_total": row.servers_total,
        "servers_flagged_percent": "" if percent is None else percent,
        "confidence": summary.confidence,
    }


def _write_parquet(records: list[dict[str, Any]], path: Path) -> Path:
    import pyarrow as pa  # imported here: it is large, and only report writing needs it
    import pyarrow.parquet as pq

    columns = {name: [None if r[name] == "" else r[name] for r in records] for name in CSV_FIELDS}
    pq.write_table(pa.table(columns), path)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "group"


def _bar_chart(rows: Sequence[RateRow], heading: str, path: Path) -> None:
    rows = [row for row in rows if row.runs_affected_per_100 is not None]
    labels = [row.id for row in rows]
    estimates = [row.runs_affected_per_100.estimate for row in rows if row.runs_affected_per_100 is not None]
    lower = [i.estimate - i.low for row in rows if (i := row.runs_affected_per_100) is not None]
    upper = [i.high - i.estimate for row in rows if (i := row.runs_affected_per_100) is not None]
    figure = Figure(figsize=(8.0, 1.2 + 0.45 * max(len(rows), 1)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(rows)))
    axes.barh(positions, estimates, xerr=[lower, upper], color="#4c72b0", ecolor="#222222", capsize=4)
    axes.set_yticks(positions, labels, fontsize=10)
    axes.invert_yaxis()
    axes.set_xlim(0, 105)
    axes.set_xlabel("runs affected per 100 runs (Wilson 95 % interval)")
    axes.set_title(heading, fontsize=11)
    axes.grid(axis="x", alpha=0.3)
    figure.savefig(path, format="png", dpi=110)


def _write_plots(summary: Summary, directory: Path) -> list[tuple[str, Path]]:
    overall = [row for row in summary.rows if row.group == OVERALL]
    if not overall:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, Path]] = []
    path = directory / "runs_affected_all.png"
    _bar_chart(overall, f"All runs ({summary.runs})", path)
    plots.append(("All runs", path))
    servers = sorted({row.group.name for row in summary.rows if row.group.kind is GroupKind.SERVER})
    for server in servers:
        rows = [r for r in summary.rows if r.group.kind is GroupKind.SERVER and r.group.name == server]
        path = directory / f"runs_affected_server_{_slug(server)}.png"
        _bar_chart(rows, f"Server {server}: occurrences attributed to it", path)
        plots.append((f"Server {server}", path))
    return plots


def _markdown(summary: Summary, mode: ModeRow | None = None) -> str:
    lines = [f"# Violation report: {title(summary)}", ""]
    if summary.experiments:
        lines.append(f"Experiment directories ({len(summary.experiments)}): {', '.join(summary.experiments)}  ")
    elif summary.source:
        lines.append(f"Experiment directory: `{summary.source}`  ")
    lines += [scope_line(summary) + ("  " if mode is not None else ""), *([task_line(mode)] if mode else []), ""]
    lines += [f"> **Note:** {note}" for note in summary.notes]
    if summary.notes:
        lines.append("")
    lines += ["Metrics:", ""] + [f"- {line}" for line in metric_legend(summary)] + [""]
    modes = truth_mode_lines(summary)
    if modes:
        lines += [f"Truth modes: {modes[0]}", ""] + [f"- {line}" for line in modes[1:]] + [""]
    if summary.rows:
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(COLUMNS))) + "|")
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row_cells(row)) + " |" for row in summary.rows]
        lines += ["", "What each ID means:", ""]
        for violation_id in summary.ids:
            found = CATALOG.get(violation_id)
            text = f"{found.behaviour} ({found.severity.value}; source: {found.source})" if found else "not catalogued"
            lines.append(f"- `{violation_id}`: {text}")
    else:
        lines.append("No violations to tabulate.")
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #8a5a00; }
img { max-width: 100%; display: block; margin: 1em 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 16px; }
figure { border: 1px solid #ccc; padding: 8px; margin: 0; max-width: 100%; }
figcaption { font-size: 13px; max-width: 900px; }
ul.legend { list-style: none; padding: 0; font-size: 13px; }
ul.legend li { display: inline-block; margin-right: 12px; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #333; margin-right: 4px; }
.path { display: flex; gap: 6px; flex-wrap: wrap; align-items: stretch; }
.hop { border: 2px solid #888; border-radius: 6px; padding: 4px 10px; }
.hop h4 { margin: 0; font-size: 12px; text-transform: uppercase; color: #666; }
.hop ul { margin: 0; padding-left: 16px; }
.arrow { align-self: center; font-size: 22px; color: #666; }
.missing { color: #b3261e; }
"""


def _catalog_html(summary: Summary) -> str:
    esc = html.escape
    rows = []
    for violation_id in summary.ids:
        found = CATALOG.get(violation_id)
        if found is None:
            rows.append(f"<tr><td>{esc(violation_id)}</td><td>unknown</td><td>not catalogued</td><td></td></tr>")
            continue
        source = esc(found.source)
        if found.source.startswith(("http://", "https://")):
            source = f'<a href="{source}">{source}</a>'
        rows.append(
            f'<tr id="id-{esc(violation_id)}"><td>{esc(violation_id)}</td><td>{esc(found.severity.value)}</td>'
            f"<td>{esc(found.behaviour)}</td><td>{source}</td></tr>"
        )
    head = "<tr><th>ID</th><th>severity</th><th>what it means</th><th>source</th></tr>"
    return f"<h2>What each ID means</h2><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _evidence_html(evidence: Mapping[str, Sequence[Evidence]], figures: Mapping[str, bytes]) -> str:
    esc = html.escape
    parts = []
    for violation_id, items in evidence.items():
        if not any(item.figure is not None or item.hops for item in items):
            continue
        parts.append(f"<h3>{esc(violation_id)}</h3><div class=gallery>")
        for item in items:
            body = ""
            png = figures.get(item.figure) if item.figure is not None else None
            if png is not None:
                data = base64.b64encode(png).decode("ascii")
                body = f'<img src="data:image/png;base64,{data}" alt="{esc(item.title)}">'
            elif item.hops:
                body = path_html(item) + legend_html(item)
            body += "".join(f'<p class="missing">evidence missing: {esc(line)}</p>' for line in item.missing)
            parts.append(
                f"<figure>{body}<figcaption>{esc(item.title)}: {esc(item.violation.detail)}</figcaption></figure>"
            )
        parts.append("</div>")
    if not parts:
        return ""
    intro = (
        "<p>A sample of occurrences per ID (one per run, runs chosen with a fixed seed); "
        "<code>testbed view</code> shows every run.</p>"
    )
    return "<h2>Evidence</h2>" + intro + "".join(parts)


def _html(
    summary: Summary,
    plots: list[tuple[str, Path]],
    mode: ModeRow | None = None,
    evidence: Mapping[str, Sequence[Evidence]] | None = None,
    figures: Mapping[str, bytes] | None = None,
    calibration: Sequence[AccuracyTable] = (),
) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title(summary))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Violation report: {esc(title(summary))}</h1>",
    ]
    if summary.experiments:
        parts.append(f"<p>{esc(sources_line(summary) or '')}</p>")
    elif summary.source:
        parts.append(f"<p>Experiment directory: <code>{esc(summary.source)}</code></p>")
    parts.append(f"<p>{esc(scope_line(summary))}</p>")
    if mode is not None:
        parts.append(f"<p><strong>{esc(task_line(mode))}</strong></p>")
    parts += [f'<p class="note"><strong>Note:</strong> {esc(note)}</p>' for note in summary.notes]
    parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in metric_legend(summary)) + "</ul>")
    modes = truth_mode_lines(summary)
    if modes:
        parts.append(f"<p>Truth modes: {esc(modes[0])}</p>")
        parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in modes[1:]) + "</ul>")
    if summary.rows:
        parts.append("<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>")
        for row in summary.rows:
            cells = row_cells(row)
            parts.append(
                "<tr>"
                + "".join(f"<td{' class=num' if i >= 3 else ''}>{esc(cell)}</td>" for i, cell in enumerate(cells))
                + "</tr>"
            )
        parts.append("</tbody></table>")
        parts.append(_catalog_html(summary))
    else:
        parts.append("<p>No violations to tabulate.</p>")
    if calibration:
        parts.append(calibration_html(calibration))
    parts.append(_evidence_html(evidence or {}, figures or {}))
    for caption, path in plots:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h2>{esc(caption)}</h2>")
        parts.append(f'<img src="data:image/png;base64,{data}" alt="{esc(caption)}: runs affected per 100 runs">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
