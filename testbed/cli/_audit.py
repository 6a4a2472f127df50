"""``testbed audit``: audit any MCP server and print its audit card."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import click

from testbed._errors import TestbedError
from testbed.audit import (
    AuditCard,
    AuditOptions,
    AuditTarget,
    audit,
    command_target,
    matches_fail_on,
    parse_fail_on,
    registered_target,
    render_html,
    render_text,
    url_target,
)
from testbed.report import report_console


@click.command(name="audit")
@click.argument("target", nargs=-1)
@click.option(
    "--command",
    "is_command",
    is_flag=True,
    help="TARGET is a command to start over stdio (use -- before its own options).",
)
@click.option("--url", default=None, help="Audit the streamable HTTP server at URL instead.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write card.json, card.html and the server's logs here.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "html"]),
    default="text",
    show_default=True,
    help="What is printed on stdout.",
)
@click.option(
    "--fail-on", default=None, help="Exit 1 when a finding matches: IDs, globs (coords.*) or 'any', comma-separated."
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the probe scenes.")
@click.option(
    "--call-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Bound on each probe call, in seconds.",
)
@click.option("--device", default="cpu", show_default=True, help="Device of a registered server's models.")
def audit_command(
    target: tuple[str, ...],
    is_command: bool,
    url: str | None,
    out: Path | None,
    output_format: str,
    fail_on: str | None,
    seed: int,
    call_timeout: float,
    device: str,
) -> None:
    """Audit an MCP server: static checks of its listing, then probes with seeded scenes of known ground truth.

    \b
    testbed audit detect-yxyx                          a registered server (over stdio)
    testbed audit --command python my_server.py        any command speaking MCP over stdio
    testbed audit --command -- node server.js --flag   (-- before the command's own options)
    testbed audit --url http://127.0.0.1:8000/mcp      a streamable HTTP server

    The card is printed (and written with --out) whatever happens. Exit status: 1 when --fail-on
    matches a finding, else 2 when the server never listed its tools, else 0.
    """
    try:
        patterns = parse_fail_on(fail_on) if fail_on else []
    except ValueError as error:
        raise TestbedError(str(error)) from None
    with tempfile.TemporaryDirectory(prefix="testbed-audit-") as scratch:
        work_dir = out if out is not None else Path(scratch)
        work_dir.mkdir(parents=True, exist_ok=True)
        chosen = _target(target, is_command, url, work_dir=work_dir, device=device)
        options = AuditOptions(seed=seed, call_timeout_s=call_timeout)
        card = anyio.run(_audit, chosen, work_dir, options)
    if out is not None:
        (out / "card.json").write_text(card.model_dump_json(indent=2) + "\n")
        (out / "card.html").write_text(render_html(card))
    if output_format == "json":
        click.echo(card.model_dump_json(indent=2))
    elif output_format == "html":
        click.echo(render_html(card), nl=False)
    else:
        render_text(card, report_console())
    failing = sorted({finding.id for finding in card.findings if matches_fail_on(finding.id, patterns)})
    if failing:
        click.echo(f"--fail-on: found {', '.join(failing)}", err=True)
        raise SystemExit(1)
    if card.tool_list_sha256 is None:
        click.echo(
            f"audit: the server's tools were never listed ({card.errors[0] if card.errors else 'no answer'})", err=True
        )
        raise SystemExit(2)


async def _audit(target: AuditTarget, work_dir: Path, options: AuditOptions) -> AuditCard:
    return await audit(target, work_dir=work_dir, options=options)


def _target(target: tuple[str, ...], is_command: bool, url: str | None, *, work_dir: Path, device: str) -> AuditTarget:
    if url is not None:
        if target or is_command:
            raise TestbedError("audit: give a NAME, --command CMD... or --url URL, not several")
        return url_target(url)
    if is_command:
        if not target:
            raise TestbedError("audit --command: give the command to start, e.g. --command python server.py")
        return command_target(target)
    if len(target) != 1:
        raise TestbedError("audit: give one registered server NAME (or --command CMD... or --url URL)")
    return registered_target(target[0], sandbox=work_dir / "sandbox", device=device)
