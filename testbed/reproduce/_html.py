"""The reproduce reports as self-contained HTML: the audit's page and the paper's, with the calibration beside them.

Built from the shared pieces: the viewer's stylesheet, the report's calibration table, the audit's row cells.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from testbed.report import calibration_html
from testbed.reproduce._calibration import Calibration
from testbed.reproduce._outputs import HEADERS, LEGEND, calibration_text, display_cells
from testbed.reproduce._tables import Row
from testbed.viewer._html import STYLE

__all__ = [
    "CALIBRATION_ANCHOR",
    "Figure",
    "PartSection",
    "audit_page",
    "calibration_section",
    "page",
    "paper_page",
    "part_page",
]

esc = html.escape

CALIBRATION_ANCHOR: Final = "calibration"
_EXTRA_STYLE: Final = "tr.input td { color: #777; } tr.failed td { background: #fde2e0; } main { max-width: none; }"


@dataclass(frozen=True)
class Figure:
    caption: str
    png: bytes


@dataclass(frozen=True)
class PartSection:
    """One part of the paper run as its report shows it."""

    name: str
    title: str
    status: str
    """``ran``, or why it did not (not available in this build, or the one-line error it stopped with)."""
    rows: Sequence[Row] = ()
    figure: Figure | None = None
    quick: str = ""
    """``quick sizes: ...`` (how small) when the part ran at quick sizes; empty at the full sizes."""


def page(title: str, body: str) -> str:
    """A whole self-contained page in the viewer's style."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}{_EXTRA_STYLE}</style></head>\n<body>"
        f'<header class="top"><strong>testbed reproduce</strong></header><main>\n{body}\n</main></body></html>\n'
    )


def _figure_html(figure: Figure | None) -> str:
    if figure is None:
        return ""
    data = base64.b64encode(figure.png).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(figure.caption)}"><figcaption>' \
        f"{esc(figure.caption)}</figcaption></figure>"  # fmt: skip


def rows_table(rows: Sequence[Row], calibration: Calibration | None) -> str:
    """The rows beside the paper's values, inputs greyed, failed recovery checks marked, each output linked to the
    calibration of the validator family that produced it."""
    head = "".join(f"<th>{esc(name)}</th>" for name in (*HEADERS, "note", "validator calibration"))
    body = []
    for row in rows:
        css = "input" if row.marking == "input" else ("failed" if row.recovered == "NO" else "")
        link = calibration_text(row, calibration)
        linked = f'<a href="#{CALIBRATION_ANCHOR}">{esc(link)}</a>' if link else ""
        cells = "".join(f"<td>{esc(cell)}</td>" for cell in (*display_cells(row), row.note))
        body.append(f'<tr class="{css}">{cells}<td>{linked}</td></tr>' if css else f"<tr>{cells}<td>{linked}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def calibration_section(calibration: Calibration | None, report_dir: Path, figure: Figure | None = None) -> str:
    """The validators' calibration (hits/applied, false flags/not applied, Wilson intervals), anchored for links;
    where it is recorded is given relative to ``report_dir``, the report's own directory."""
    if calibration is None:
        return f'<h2 id="{CALIBRATION_ANCHOR}">Validator calibration</h2><p>Not measured in this run.</p>'
    where = esc(os.path.relpath(calibration.directory.resolve(), report_dir.resolve()))
    return (
        f'<section id="{CALIBRATION_ANCHOR}">{calibration_html([calibration.table])}'
        f"<p>{esc(calibration.goal_line())}. Recorded under <code>{where}</code> "
        "(each fault kind an ordinary experiment directory).</p>"
        f"{_figure_html(figure)}</section>"
    )


def _legend() -> str:
    return "".join(f"<p>{esc(line)}</p>" for line in LEGEND)


def _settings(document: dict[str, Any]) -> str:
    return f"<h2>Seeds and versions</h2><pre>{esc(json.dumps(document, indent=2, sort_keys=True))}</pre>"


def audit_page(rows: Sequence[Row], manifest: dict[str, Any], calibration: Calibration | None, report_dir: Path) -> str:
    """``testbed reproduce audit``'s report: the tables, the marking legend, the calibration, seeds and versions."""
    settings = {key: manifest[key] for key in ("seed", "runs_per_workflow", "population_hash", "versions")}
    body = (
        "<h1>The audit, reproduced over a sampled population</h1>"
        + _legend()
        + rows_table(rows, calibration)
        + calibration_section(calibration, report_dir)
        + _settings(settings)
    )
    return page("testbed reproduce audit", body)


def part_page(
    title: str,
    legend: Sequence[str],
    rows: Sequence[Row],
    calibration: Calibration | None,
    settings: dict[str, Any],
    report_dir: Path,
) -> str:
    """A reproduce part's own report (``cases``, ``security``): its rows beside the paper's, each output linked to
    the calibration of the validators that produced it, then the calibration, seeds and sizes."""
    body = (
        f"<h1>{esc(title)}</h1>"
        + "".join(f"<p>{esc(line)}</p>" for line in legend)
        + rows_table(rows, calibration)
        + calibration_section(calibration, report_dir)
        + _settings(settings)
    )
    return page(title, body)


def _part_html(part: PartSection, calibration: Calibration | None) -> str:
    heading = f'<h2 id="part-{esc(part.name)}">{esc(part.title)}</h2>'
    if part.quick:
        heading += f'<p class="bad">{esc(part.quick)}: a smoke test of the pipeline, not the paper\'s sizes</p>'
    if part.status != "ran":
        return f'{heading}<p class="note">{esc(part.status)}</p>'
    failed = sum(row.recovered == "NO" for row in part.rows)
    verdict = (
        f'<p class="bad">{failed} recovery check(s) failed</p>'
        if failed
        else ('<p class="ok">every recovery check passed</p>' if any(row.recovered for row in part.rows) else "")
    )
    return heading + verdict + rows_table(part.rows, calibration) + _figure_html(part.figure)


def paper_page(
    parts: Sequence[PartSection],
    calibration: Calibration | None,
    calibration_figure: Figure | None,
    settings: dict[str, Any],
    report_dir: Path,
) -> str:
    """``testbed reproduce paper``'s report: every part's tables beside the paper's, plots, calibration, settings."""
    contents = "".join(f'<li><a href="#part-{esc(p.name)}">{esc(p.title)}</a>: {esc(p.status)}</li>' for p in parts)
    quick = any(part.quick for part in parts)
    banner = (
        '<p class="bad">A quick run: every part ran at the small sizes stated under its heading. Its rows are '
        "executed and measured, but only the full run's tables stand beside the paper's.</p>"
        if quick
        else ""
    )
    body = (
        f"<h1>The paper, reproduced{' (quick sizes)' if quick else ''}</h1>"
        + banner
        + f'<ul>{contents}<li><a href="#{CALIBRATION_ANCHOR}">Validator calibration</a></li></ul>'
        + _legend()
        + "".join(_part_html(part, calibration) for part in parts)
        + calibration_section(calibration, report_dir, calibration_figure)
        + _settings(settings)
    )
    return page("testbed reproduce paper", body)
