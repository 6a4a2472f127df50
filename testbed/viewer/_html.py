"""HTML building blocks of the run viewer: the page shell, its stylesheet, keyboard navigation, JSON as HTML."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

from testbed.metrics import Interval

esc = html.escape

STYLE = """
:root { --fg: #1d1d1f; --muted: #6b6b70; --line: #d9d9de; --bg-alt: #f5f5f7; --ok: #1f7a33; --bad: #b3261e;
        --warn: #8a5a00; --link: #0b57d0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 0; }
header.top { background: #20232a; color: #fff; padding: 8px 20px; display: flex; gap: 18px; align-items: baseline;
             flex-wrap: wrap; }
header.top a { color: #cfe0ff; }
header.top .crumbs a + a::before { content: "/"; color: #888; margin: 0 6px; }
main { padding: 12px 20px 40px; max-width: 1400px; }
a { color: var(--link); text-decoration: none; }
a:hover { text-decoration: underline; }
h1 { font-size: 22px; margin: 10px 0 6px; }
h2 { font-size: 18px; margin: 26px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 3px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 8px 0 14px; }
th, td { border: 1px solid var(--line); padding: 3px 7px; vertical-align: top; text-align: left; }
th { background: var(--bg-alt); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fault td { background: #fff6e5; }
.muted { color: var(--muted); }
.note { color: var(--warn); }
.missing { color: var(--bad); }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.badge { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 12px; background: #e8e8ee;
         margin: 1px 2px; }
.badge.violation { background: #fde2e0; color: #8c1d18; }
.badge.warning { background: #fff0c2; color: #6d4c00; }
.badge.fault { background: #ffe1b0; color: #6d3b00; }
.bar { background: #e8e8ee; width: 160px; height: 8px; display: block; position: relative; margin: 3px 0 1px auto; }
.bar > span { position: absolute; left: 0; top: 0; bottom: 0; background: #4c72b0; }
.bar > i { position: absolute; top: -2px; bottom: -2px; border-left: 1px solid #222; border-right: 1px solid #222; }
details { margin: 2px 0; }
details > summary { cursor: pointer; color: var(--link); }
pre.json { background: var(--bg-alt); padding: 6px 8px; margin: 4px 0; max-height: 420px; overflow: auto;
           white-space: pre-wrap; word-break: break-all; font-size: 12px; }
img.thumb { height: 64px; vertical-align: middle; border: 1px solid var(--line); image-rendering: pixelated; }
.scene img { max-width: 480px; border: 1px solid var(--line); }
.gallery { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 6px 0; }
figure.evidence { border: 1px solid var(--line); padding: 8px; background: #fff; max-width: 100%; }
figure.evidence > img { max-width: 100%; display: block; }
figcaption { font-size: 13px; margin-top: 4px; max-width: 900px; }
.overlay-row { display: flex; gap: 12px; align-items: flex-start; flex-wrap: wrap; }
.overlay-row figure.panel { max-width: 240px; font-size: 12px; color: var(--muted); }
.overlay-row figure.panel img { max-height: 240px; max-width: 240px; border: 1px solid var(--line);
                                image-rendering: pixelated; }
ul.legend { list-style: none; padding: 0; margin: 4px 0; font-size: 13px; }
ul.legend li { display: inline-block; margin-right: 14px; }
.swatch { display: inline-block; width: 12px; height: 12px; border: 1px solid #333; margin-right: 4px;
          vertical-align: -1px; }
.path { display: flex; align-items: stretch; gap: 6px; flex-wrap: wrap; margin: 6px 0; }
.hop { border: 2px solid #888; border-radius: 6px; padding: 4px 10px; min-width: 170px; background: #fff; }
.hop h4 { margin: 0 0 2px; font-size: 12px; text-transform: uppercase; color: var(--muted); }
.hop ul { margin: 0; padding-left: 16px; }
.arrow { align-self: center; font-size: 22px; color: var(--muted); }
.pager a, .pager span { margin-right: 6px; }
.runs-inline a { margin-right: 5px; }
.keys { font-size: 12px; color: #bbb; }
ol.timeline { padding-left: 26px; }
ol.timeline > li { margin: 6px 0 10px; }
"""
"""The site's one stylesheet (``assets/style.css``)."""

KEYS_SCRIPT = (
    "<script>document.addEventListener('keydown',function(e){"
    "if(e.altKey||e.ctrlKey||e.metaKey||/^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName))return;"
    "var r={j:'next',ArrowRight:'next',k:'prev',ArrowLeft:'prev',u:'up'}[e.key];"
    "var l=r&&document.querySelector('link[rel=\"'+r+'\"]');"
    "if(l){e.preventDefault();location.href=l.getAttribute('href');}});</script>"
)
"""Keyboard navigation between runs: j or right arrow to the next run, k or left arrow to the previous, u up."""


def page(
    title: str,
    body: str,
    *,
    root: str,
    crumbs: list[tuple[str, str]] | None = None,
    links: dict[str, str] | None = None,
    keys: bool = False,
) -> str:
    """A whole HTML page.

    Args:
        title: the document title and heading context.
        body: the main content (HTML).
        root: the relative path from this page to the site root (``""``, ``"../"``...).
        crumbs: (label, href) pairs shown in the top bar.
        links: ``<link rel=...>`` targets (``prev``, ``next``, ``up``) for keyboard navigation.
        keys: include the keyboard navigation script.
    """
    head_links = "".join(f'<link rel="{esc(rel)}" href="{esc(href)}">' for rel, href in (links or {}).items())
    trail = "".join(f'<a href="{esc(href)}">{esc(label)}</a>' for label, href in (crumbs or []))
    hint = '<span class="keys">keys: j/&#8594; next run, k/&#8592; previous, u up</span>' if keys else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f'<link rel="stylesheet" href="{root}assets/style.css">{head_links}</head>\n<body>'
        f'<header class="top"><strong>testbed viewer</strong><nav class="crumbs">{trail}</nav>{hint}</header>'
        f"<main>\n{body}\n</main>{KEYS_SCRIPT if keys else ''}</body></html>\n"
    )


def _clamp(value: float) -> float:
    return max(0.0, min(100.0, value))


def interval_html(interval: Interval | None, *, scale: float = 1.0, bar: bool = True, suffix: str = "") -> str:
    """``12.3 [4.5–20.1]`` with a small bar (estimate and interval, on 0–100)."""
    if interval is None:
        return f'<span class="muted">n/a</span>{esc(suffix)}'
    estimate, low, high = interval.estimate * scale, interval.low * scale, interval.high * scale
    text = f"{estimate:.1f} [{low:.1f}–{high:.1f}]{esc(suffix)}"
    if not bar:
        return text
    return (
        f'{text}<span class="bar" title="{text}"><span style="width:{_clamp(estimate):.1f}%"></span>'
        f'<i style="left:{_clamp(low):.1f}%;width:{_clamp(high) - _clamp(low):.1f}%"></i></span>'
    )


BlobLink = Callable[[str], tuple[str, str] | None]
"""Given a blob hash: ``(href, kind)`` with kind ``image`` or ``text``, or ``None`` when the blob is missing."""

_MAX_STRING = 2000
_MAX_JSON = 60_000


class _Writer:
    def __init__(self, blob: BlobLink, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.blob = blob
        self.limit = limit
        self.truncated = False

    def add(self, text: str) -> None:
        if self.truncated:
            return
        self.parts.append(text)
        self.size += len(text)
        if self.size > self.limit:
            self.truncated = True

    def value(self, value: Any, indent: int) -> None:
        pad = "  " * indent
        if isinstance(value, dict):
            if set(value) == {"$blob"} and isinstance(value["$blob"], str):
                self.blob_ref(value["$blob"])
                return
            if not value:
                self.add("{}")
                return
            self.add("{\n")
            for index, (key, item) in enumerate(value.items()):
                self.add(f"{pad}  {esc(json.dumps(str(key)))}: ")
                self.value(item, indent + 1)
                self.add(",\n" if index < len(value) - 1 else "\n")
            self.add(f"{pad}}}")
        elif isinstance(value, list):
            if not value:
                self.add("[]")
                return
            if all(isinstance(item, int | float) and not isinstance(item, bool) for item in value) and len(value) <= 16:
                self.add(esc(json.dumps(value)))
                return
            self.add("[\n")
            for index, item in enumerate(value):
                self.add(f"{pad}  ")
                self.value(item, indent + 1)
                self.add(",\n" if index < len(value) - 1 else "\n")
            self.add(f"{pad}]")
        elif isinstance(value, str) and len(value) > _MAX_STRING:
            shown = json.dumps(value[:_MAX_STRING])[:-1]
            self.add(f'{esc(shown)}… <span class="muted">({len(value)} characters)</span>"')
        else:
            self.add(esc(json.dumps(value)))

    def blob_ref(self, digest: str) -> None:
        found = self.blob(digest)
        if found is None:
            self.add(f'<span class="missing">[blob {esc(digest[:12])} missing from blobs/]</span>')
        elif found[1] == "image":
            self.add(
                f'<a href="{esc(found[0])}"><img class="thumb" src="{esc(found[0])}" '
                f'alt="image {esc(digest[:12])}"></a>'
            )
        else:
            self.add(f'<a href="{esc(found[0])}">[text blob {esc(digest[:12])}]</a>')


def json_html(value: Any, blob: BlobLink, *, limit: int = _MAX_JSON) -> str:
    """``value`` as indented JSON in HTML; ``{"$blob": hash}`` references become thumbnails or links."""
    writer = _Writer(blob, limit)
    writer.value(value, 0)
    tail = '\n<span class="muted">… (truncated)</span>' if writer.truncated else ""
    return '<pre class="json">' + "".join(writer.parts) + tail + "</pre>"


def details(summary: str, content: str, *, open_: bool = False) -> str:
    """A collapsible section (``summary`` is HTML)."""
    return f"<details{' open' if open_ else ''}><summary>{summary}</summary>{content}</details>"


def table(head: list[str], rows: list[list[str]], *, numeric: frozenset[int] = frozenset(), cls: str = "") -> str:
    """A table of HTML cells (``head`` is plain text)."""
    header = "".join(f"<th>{esc(cell)}</th>" for cell in head)
    body = []
    for row in rows:
        cells = "".join(f"<td{' class=num' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    attribute = f' class="{cls}"' if cls else ""
    return f"<table{attribute}><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def pager(current: int, total: int, href: Callable[[int], str]) -> str:
    """Links to the pages of a paginated list (1-based), around the current one."""
    if total <= 1:
        return ""
    shown = sorted({1, total, *range(max(1, current - 3), min(total, current + 3) + 1)})
    parts: list[str] = []
    previous = 0
    for number in shown:
        if number - previous > 1:
            parts.append("<span>…</span>")
        parts.append(f"<span>{number}</span>" if number == current else f'<a href="{esc(href(number))}">{number}</a>')
        previous = number
    return '<p class="pager">pages: ' + "".join(parts) + "</p>"
