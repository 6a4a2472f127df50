"""The audit card as a terminal table (rich) and as one self-contained HTML page."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from testbed.audit._card import AuditCard, ToolReport
from testbed.viewer._html import STYLE, esc, table

__all__ = ["render_html", "render_text"]

_VERDICT_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "not_assessed": "dim"}


def _convention(tool: ToolReport) -> str:
    if tool.box_convention is None:
        return "-"
    text = f"{tool.box_convention} ({tool.box_convention_confidence:.2f})"
    if tool.box_convention_alternatives:
        text += f" or {', '.join(tool.box_convention_alternatives)}"
    return text


def _mask(tool: ToolReport) -> str:
    return f"{tool.mask_encoding} @ {tool.mask_resolution}" if tool.mask_encoding else "-"


def _latency(tool: ToolReport) -> str:
    return f"{tool.latency_ms['median']:.0f} / {tool.latency_ms['max']:.0f}" if tool.latency_ms else "-"


def _tool_row(tool: ToolReport) -> list[str]:
    deterministic = "-" if tool.deterministic is None else ("yes" if tool.deterministic else "no")
    return [
        tool.name,
        tool.schema_style,
        tool.declared_box_convention or "-",
        _convention(tool),
        _mask(tool),
        tool.error_style or "-",
        deterministic,
        _latency(tool),
    ]


_TOOL_HEAD = [
    "tool",
    "schema",
    "declared boxes",
    "inferred boxes (confidence)",
    "masks",
    "errors",
    "deterministic",
    "ms median / max",
]
_SHOWN_TOOLS = 40


def render_text(card: AuditCard, console: Console) -> None:
    """Print the card: header, summary verdicts, tools, findings, and what was not applicable."""
    info = " ".join(card.server_info.values()) or "(no serverInfo)"
    console.print(f"[bold]audit of {card.target}[/bold]  {info}  over {card.transport}")
    revisions = ", ".join(f"{mode}: {answer}" for mode, answer in card.negotiation.revisions.items())
    console.print(
        f"protocol: negotiated {card.negotiation.negotiated or '-'}" + (f"; {revisions}" if revisions else "")
    )
    console.print(f"tools: {card.tool_count}, tool-list sha256 {card.tool_list_sha256 or '-'}")
    summary = Table(title="summary", title_justify="left")
    for column in ("category", "verdict", "findings", "detail"):
        summary.add_column(column)
    for row in card.summary:
        style = _VERDICT_STYLE[row.verdict]
        summary.add_row(row.title, f"[{style}]{row.verdict}[/{style}]", str(row.findings), row.detail)
    console.print(summary)
    tools = Table(title="tools", title_justify="left")
    for column in _TOOL_HEAD:
        tools.add_column(column)
    for tool in card.tools[:_SHOWN_TOOLS]:
        tools.add_row(*_tool_row(tool))
    console.print(tools)
    if len(card.tools) > _SHOWN_TOOLS:
        console.print(f"... and {len(card.tools) - _SHOWN_TOOLS} more tools (see the JSON card)")
    findings = Table(title=f"findings ({len(card.findings)})", title_justify="left")
    for column in ("ID", "tool", "confidence", "detail", "evidence"):
        findings.add_column(column, overflow="fold")
    for finding in card.findings:
        evidence = f"{finding.evidence.call} -> {finding.evidence.response[:120]}"
        findings.add_row(finding.id, finding.tool or "-", f"{finding.confidence:.2f}", finding.detail, evidence)
    console.print(findings)
    skipped = [probe for probe in card.probes if probe.status in ("not_applicable", "error")]
    if skipped:
        probes = Table(title="probes not applicable or failed", title_justify="left")
        for column in ("probe", "tool", "status", "detail"):
            probes.add_column(column, overflow="fold")
        for probe in skipped[:_SHOWN_TOOLS]:
            probes.add_row(probe.probe, probe.tool or "-", probe.status, probe.detail)
        console.print(probes)
    for error in card.errors:
        console.print(f"[bold red]error[/bold red] {error}")
    console.print(f"{'complete' if card.complete else 'INCOMPLETE'} audit in {card.duration_s:.1f}s (seed {card.seed})")


def render_html(card: AuditCard) -> str:
    """One self-contained page (its stylesheet inline)."""
    summary = table(
        ["category", "verdict", "findings", "detail"],
        [
            [
                esc(r.title),
                f'<span class="{_html_class(r.verdict)}">{esc(r.verdict)}</span>',
                str(r.findings),
                esc(r.detail),
            ]
            for r in card.summary
        ],
    )
    tools = table(_TOOL_HEAD, [[esc(cell) for cell in _tool_row(tool)] for tool in card.tools])
    findings = table(
        ["ID", "tool", "confidence", "detail", "call", "response"],
        [
            [
                esc(f.id),
                esc(f.tool or "-"),
                f"{f.confidence:.2f}",
                esc(f.detail),
                f"<code>{esc(f.evidence.call)}</code>",
                f"<code>{esc(f.evidence.response)}</code>",
            ]
            for f in card.findings
        ],
    )
    probes = table(
        ["probe", "tool", "status", "detail"],
        [[esc(p.probe), esc(p.tool or "-"), esc(p.status), esc(p.detail)] for p in card.probes],
    )
    revisions = "".join(f"<li>{esc(mode)}: {esc(answer)}</li>" for mode, answer in card.negotiation.revisions.items())
    errors = "".join(f'<p class="bad">{esc(error)}</p>' for error in card.errors)
    body = (
        f"<h1>Audit of {esc(card.target)}</h1>"
        f"<p>{esc(' '.join(card.server_info.values()))} over {esc(card.transport)}; negotiated "
        f"{esc(card.negotiation.negotiated or '-')}; {card.tool_count} tools; tool-list sha256 "
        f"<code>{esc(card.tool_list_sha256 or '-')}</code>; {'complete' if card.complete else 'incomplete'} "
        f"in {card.duration_s:.1f}s, seed {card.seed}</p><ul>{revisions}</ul>{errors}"
        f"<h2>Summary</h2>{summary}<h2>Tools</h2>{tools}<h2>Findings</h2>{findings}<h2>Probes</h2>{probes}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>audit: {esc(card.target)}</title><style>{STYLE}</style></head>\n"
        f"<body><main>\n{body}\n</main></body></html>\n"
    )


def _html_class(verdict: str) -> str:
    return {"pass": "ok", "fail": "bad", "warn": "note"}.get(verdict, "muted")
