"""Audit one server: connect, read its listing, probe its tools, and write the card for what was learned.

Every step is bounded (startup by the target's bound, each call by
``call_timeout_s``), and a server that fails at any point still gets a card:
the error is classified (``timeout``, ``malformed``, ``crashed``, ``failed``)
and the probes not run are missing from it, with ``complete: false``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from testbed._errors import TestbedError
from testbed._seeding import derive_seed_sequence
from testbed.audit._arguments import ImageArgument, image_argument, other_required
from testbed.audit._calls import MAX_RESPONSE_CHARS, Called, Caller
from testbed.audit._card import (
    AuditCard,
    Evidence,
    Finding,
    Negotiation,
    ProbeOutcome,
    ToolReport,
    summarize,
)
from testbed.audit._handles import find_pair, handle_feed, probe_handles
from testbed.audit._payload import excerpt
from testbed.audit._probes import Feed, ToolFindings, image_feed, probe_tool
from testbed.audit._static import (
    ListedTool,
    extension_fields,
    injection_matches,
    listed_style,
    tool_list_sha256,
    untyped_inputs,
)
from testbed.audit._target import REVISION_MODES, AuditTarget, probe_revision
from testbed.protocol import SchemaStyle
from testbed.scenes import Scene, SceneSpec, generate_scene
from testbed.transport import Connection, connect

__all__ = ["PROBE_SCENE", "AuditOptions", "audit", "probe_scenes"]

PROBE_SCENE: Final = SceneSpec(
    width=320, height=240, min_objects=2, max_objects=3, max_distractors=0, background="gradient", noise_sigma=2.0
)
"""Probe scenes: not square (so swapped axes show), a few separate shapes, no distractors."""


@dataclass(frozen=True)
class AuditOptions:
    seed: int = 0
    scenes: int = 3
    call_timeout_s: float = 30.0
    max_probed_tools: int = 16
    """Tools called at most (a server listing thousands gets its first ones probed, the rest listed)."""
    max_response_chars: int = MAX_RESPONSE_CHARS
    """A result larger than this (as JSON) is flagged ``proto.oversized_response`` and not analysed."""
    revisions: bool = True
    """Also connect once per protocol revision the SDK speaks, to record which the server accepts."""


def probe_scenes(seed: int, count: int) -> list[Scene]:
    return [generate_scene(PROBE_SCENE, derive_seed_sequence(seed, "audit", index)) for index in range(count)]


@dataclass
class _Learned:
    """What the audit has learned so far (a card can be written from it at any point)."""

    server_info: dict[str, str] = field(default_factory=dict)
    instructions: str | None = None
    negotiated: str | None = None
    listed: list[ListedTool] | None = None
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    probes: list[ProbeOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    revisions: dict[str, str] = field(default_factory=dict)
    stopped: bool = False
    """Whether the server stopped answering mid-audit."""
    complete: bool = False

    def merge(self, tool: str | None, found: ToolFindings) -> None:
        if tool is not None:
            self.fields.setdefault(tool, {}).update(found.fields)
        self.findings.extend(found.findings)
        self.probes.extend(found.probes)


async def audit(target: AuditTarget, *, work_dir: Path, options: AuditOptions | None = None) -> AuditCard:
    """Audit ``target``; its logs and probe files go under ``work_dir``. Never raises for the server's faults."""
    options = options or AuditOptions()
    started = time.monotonic()
    learned = _Learned()
    scenes = probe_scenes(options.seed, options.scenes)
    try:
        async with _connect(target, work_dir, "audit") as connection:
            await _audit_connected(connection, target, work_dir, options, scenes, learned)
    except TestbedError as error:
        if learned.listed is not None:
            raise
        _startup_failure(learned, str(error))
    except Exception as error:
        if not learned.stopped:
            raise
        # A server that died mid-audit can break the transport's teardown in any way: what was learned stands.
        learned.errors.append(f"crashed: connection ended with {error.__class__.__name__}: {str(error)[:200]}")
    if options.revisions and learned.listed is not None and target.external is not None:
        for mode in REVISION_MODES:
            learned.revisions[mode] = await probe_revision(target, mode, errlog=work_dir / "logs" / "revisions.log")
        learned.probes.append(
            ProbeOutcome(
                probe="revisions",
                tool=None,
                status="ok",
                detail="; ".join(f"{k}: {v}" for k, v in learned.revisions.items()),
            )
        )
    return _card(target, learned, options, time.monotonic() - started)


def _connect(target: AuditTarget, work_dir: Path, alias: str) -> Any:
    if target.external is None:
        return connect(
            alias,
            target.label,
            "inprocess",
            log_dir=work_dir / "logs",
            sandbox=work_dir / "sandbox",
            in_process_factory=target.in_process,
            startup_timeout_s=target.startup_timeout_s,
        )
    return connect(
        alias,
        target.label,
        target.external.transport,
        log_dir=work_dir / "logs",
        sandbox=work_dir / "sandbox",
        external=target.external,
        startup_timeout_s=target.startup_timeout_s,
    )


async def _audit_connected(
    connection: Connection,
    target: AuditTarget,
    work_dir: Path,
    options: AuditOptions,
    scenes: list[Scene],
    learned: _Learned,
) -> None:
    info = connection.client.server_info
    if info is not None:
        learned.server_info = {"name": info.name, "version": info.version}
    learned.instructions = connection.client.instructions
    learned.negotiated = connection.protocol_version
    learned.listed = [
        ListedTool.from_json(tool.model_dump(by_alias=True, mode="json", exclude_none=True))
        for tool in connection.tools
    ]
    _static(learned, learned.listed)
    caller = Caller(connection, options.call_timeout_s, options.max_response_chars)
    callable_tools = _plan(learned, learned.listed, options)
    produced: dict[str, tuple[Called, dict[str, Any]]] = {}
    feeds: dict[str, Feed] = {}
    folder = work_dir / "sandbox" / "probe-images"
    for tool, argument in callable_tools:
        if caller.closed is not None:
            learned.probes.append(
                ProbeOutcome(probe="functional", tool=tool.name, status="error", detail=f"skipped: {caller.closed}")
            )
            continue
        feeds[tool.name] = image_feed(tool, argument, folder)
        found = await probe_tool(caller, tool, feeds[tool.name], scenes)
        learned.merge(tool.name, found)
        if found.first_ok is not None:
            produced[tool.name] = found.first_ok
    if caller.closed is None:
        await _handles(learned, caller, target, work_dir, options, produced, feeds, scenes)
    for name, latencies in caller.latencies_ms.items():
        ordered = sorted(latencies)
        learned.fields.setdefault(name, {})["latency_ms"] = {
            "median": round(ordered[len(ordered) // 2], 1),
            "max": round(ordered[-1], 1),
        }
    if caller.closed is not None:
        learned.stopped = True
        kind, vid = ("unresponsive", "proto.timeout") if caller.unresponsive else ("crashed", "proto.server_crashed")
        learned.errors.append(f"{kind}: the server stopped answering mid-audit ({caller.closed})")
        evidence = Evidence(call="tools/call or tools/list", response=caller.closed)
        detail = f"stopped answering mid-audit: {caller.closed}"
        learned.findings.append(Finding(id=vid, tool=None, detail=detail, confidence=1.0, evidence=evidence))
        return
    if caller.timed_out:
        learned.errors.append(f"timeout: probes of {', '.join(sorted(caller.timed_out))} cut short by a timeout")
        return
    learned.complete = True


async def _handles(
    learned: _Learned,
    caller: Caller,
    target: AuditTarget,
    work_dir: Path,
    options: AuditOptions,
    produced: dict[str, tuple[Called, dict[str, Any]]],
    feeds: dict[str, Feed],
    scenes: list[Scene],
) -> None:
    """Probe the tool that reads handles (through them) if nothing else fed it, then the handles themselves."""
    assert learned.listed is not None
    pair = find_pair(learned.listed, produced)
    if pair is None:
        for probe in ("handle_scope", "handle_lifetime", "handle_growth"):
            learned.probes.append(
                ProbeOutcome(
                    probe=probe,
                    tool=None,
                    status="not_applicable",
                    detail="no tool returns a value another tool takes (with no other required argument)",
                )
            )
        return
    if pair.consumer.name not in feeds:
        learned.probes = [
            p for p in learned.probes if not (p.tool == pair.consumer.name and p.status == "not_applicable")
        ]
        found = await probe_tool(caller, pair.consumer, handle_feed(caller, pair, feeds[pair.producer.name]), scenes)
        learned.merge(pair.consumer.name, found)
        if caller.closed is not None:
            return
    if target.external is None or target.external.url is None:
        learned.merge(pair.producer.name, await probe_handles(caller, pair, other_session=None))
        return
    try:
        async with _connect(target, work_dir, "audit-second-session") as second:
            other = Caller(second, options.call_timeout_s, options.max_response_chars)
            learned.merge(pair.producer.name, await probe_handles(caller, pair, other_session=other))
    except TestbedError as error:  # no second session: the probes run with the other scope alone
        learned.errors.append(f"failed: a second session could not connect: {error}")
        learned.merge(pair.producer.name, await probe_handles(caller, pair, other_session=None))


def _plan(learned: _Learned, listed: list[ListedTool], options: AuditOptions) -> list[tuple[ListedTool, ImageArgument]]:
    """The tools the probes can call with a probe image alone (the first ``max_probed_tools``)."""
    planned: list[tuple[ListedTool, ImageArgument]] = []
    for tool in listed:
        argument = image_argument(tool)
        learned.fields.setdefault(tool.name, {})["image_argument"] = argument.name if argument else None
        others = other_required(tool, argument)
        reason = None
        if argument is None:
            reason = "no argument takes an image (by semantic_role, base64/image media type, or a usual name)"
        elif others:
            reason = f"required argument(s) {', '.join(others)} have no probe value"
        elif len(planned) >= options.max_probed_tools:
            reason = f"beyond the first {options.max_probed_tools} callable tools"
        if reason is not None:
            learned.probes.append(
                ProbeOutcome(probe="functional", tool=tool.name, status="not_applicable", detail=reason)
            )
            continue
        assert argument is not None
        planned.append((tool, argument))
    return planned


def _static(learned: _Learned, listed: list[ListedTool]) -> None:
    descriptions_flagged = False
    for tool in listed:
        shown = Evidence(
            call="tools/list",
            response=excerpt({"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}),
        )
        for name in untyped_inputs(tool):
            learned.findings.append(
                Finding(
                    id="schema.input_untyped",
                    tool=tool.name,
                    detail=f"input {name!r} has no type",
                    confidence=1.0,
                    evidence=shown,
                )
            )
        if listed_style(tool) is SchemaStyle.LOOSE:
            learned.findings.append(
                Finding(
                    id="schema.output_schema_loose",
                    tool=tool.name,
                    detail="outputSchema declares no properties",
                    confidence=1.0,
                    evidence=shown,
                )
            )
        for pattern, matched, confidence in injection_matches(f"{tool.name}\n{tool.description}"):
            descriptions_flagged = True
            learned.findings.append(
                Finding(
                    id="perm.instruction_in_description",
                    tool=tool.name,
                    detail=f"{pattern}: {matched!r}",
                    confidence=confidence,
                    evidence=shown,
                )
            )
    for pattern, matched, confidence in injection_matches(learned.instructions or ""):
        descriptions_flagged = True
        evidence = Evidence(call="initialize", response=excerpt({"instructions": learned.instructions}))
        learned.findings.append(
            Finding(
                id="perm.instruction_in_description",
                tool=None,
                detail=f"server instructions, {pattern}: {matched!r}",
                confidence=confidence,
                evidence=evidence,
            )
        )
    learned.probes.append(ProbeOutcome(probe="static", tool=None, status="ok", detail=f"{len(listed)} tool(s) listed"))
    learned.probes.append(
        ProbeOutcome(
            probe="descriptions",
            tool=None,
            status="finding" if descriptions_flagged else "ok",
            detail="instruction-like text found" if descriptions_flagged else "no instruction-like text",
        )
    )


def _startup_failure(learned: _Learned, message: str) -> None:
    """Classify why the server could not be audited at all (``connect``'s one-line errors)."""
    if "did not start within" in message:
        kind, vid = "timeout", "proto.timeout"
    elif "other than JSON-RPC" in message:
        kind, vid = "malformed", "proto.malformed_message"
    elif "failed to start" in message:
        kind, vid = "crashed", "proto.server_crashed"
    else:
        kind, vid = "failed", None
    learned.errors.append(f"{kind}: {message}")
    if vid is not None:
        evidence = Evidence(call="initialize, tools/list", response=message[:300])
        learned.findings.append(Finding(id=vid, tool=None, detail=message[:300], confidence=1.0, evidence=evidence))


def _card(target: AuditTarget, learned: _Learned, options: AuditOptions, duration_s: float) -> AuditCard:
    listed = learned.listed or []
    tools = [_tool_report(tool, learned.fields.get(tool.name, {})) for tool in listed]
    return AuditCard(
        target=target.label,
        transport=target.transport,
        server_info=learned.server_info,
        negotiation=Negotiation(negotiated=learned.negotiated, revisions=learned.revisions),
        instructions=learned.instructions,
        tool_count=len(listed),
        tool_list_sha256=tool_list_sha256(listed) if learned.listed is not None else None,
        tools=tools,
        findings=learned.findings,
        probes=learned.probes,
        summary=summarize(learned.findings, learned.probes),
        errors=learned.errors,
        complete=learned.complete and not learned.errors,
        seed=options.seed,
        duration_s=round(duration_s, 2),
    )


def _unprobed_style(tool: ListedTool) -> str:
    """The style of a tool never called: its listing's, or ``text_json|content`` where only a result would tell."""
    style = listed_style(tool)
    return "text_json|content" if style is SchemaStyle.TEXT_JSON else style.value


def _tool_report(tool: ListedTool, learned_fields: dict[str, Any]) -> ToolReport:
    fields = dict(learned_fields)
    return ToolReport(
        name=tool.name,
        schema_style=fields.pop("schema_style", _unprobed_style(tool)),
        extension_fields=extension_fields(tool),
        annotations=dict(tool.annotations),
        untyped_inputs=untyped_inputs(tool),
        **fields,
    )
