"""The audit card: what an audit learned about one server, as data.

Its JSON form is published as a JSON Schema (``testbed/audit/card.schema.json``,
written by :func:`card_json_schema`); the terminal and HTML forms render the
same model.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from testbed.audit._ids import SUMMARY_CATEGORIES, category_of, known_ids, severity

__all__ = [
    "CARD_SCHEMA_PATH",
    "CARD_VERSION",
    "AuditCard",
    "CategoryVerdict",
    "Evidence",
    "Finding",
    "Negotiation",
    "ProbeOutcome",
    "ProbeStatus",
    "ToolReport",
    "Verdict",
    "card_json_schema",
    "matches_fail_on",
    "summarize",
]

CARD_VERSION: Final = 1
CARD_SCHEMA_PATH: Final = Path(__file__).resolve().parent / "card.schema.json"

ProbeStatus = Literal["ok", "finding", "not_applicable", "error"]
Verdict = Literal["pass", "warn", "fail", "not_assessed"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Evidence(_Model):
    """The call that showed a finding, and an excerpt of what came back."""

    call: str
    """``tools/list``, ``initialize``, or ``tools/call NAME`` with its arguments shortened."""
    response: str
    """An excerpt of the response (at most a few hundred characters)."""


class Finding(_Model):
    """One thing the audit found wrong or risky."""

    id: str
    """A violation ID (``testbed.catalog`` or the audit's own, ``testbed.audit.AUDIT_ONLY``)."""
    tool: str | None
    """The tool it concerns, or ``None`` for the server as a whole."""
    detail: str
    """One line: what exactly was seen."""
    confidence: float = Field(ge=0.0, le=1.0)
    """1.0 for what the server declared or did outright; lower for inferences from a few probes."""
    evidence: Evidence


class ProbeOutcome(_Model):
    """One probe of one tool (or of the server): what it asked and what it concluded."""

    probe: str
    """``box_convention``, ``mask_encoding``, ``error_style``, ``output_schema``, ``determinism``,
    ``handle_scope``, ``handle_lifetime``, ``handle_growth``, ``robustness``, ``latency``, ``revisions``."""
    tool: str | None
    status: ProbeStatus
    """``not_applicable``: the tools cannot answer this probe (never guessed); ``error``: it failed, bounded."""
    detail: str


class ToolReport(_Model):
    """What the audit learned about one tool."""

    name: str
    schema_style: str
    """``full``, ``loose``, ``text_json`` or ``content`` (``testbed.protocol.SchemaStyle``); for a tool never
    called, read from its ``outputSchema`` alone (``text_json|content`` when it has none)."""
    extension_fields: dict[str, list[str]]
    """Extension keywords declared, by property path (``input.image``, ``output.detections[*].box``)."""
    annotations: dict[str, Any]
    untyped_inputs: list[str]
    image_argument: str | None
    """The argument the probes put the probe image in, or ``None`` when none could be identified."""
    declared_box_convention: str | None = None
    box_convention: str | None = None
    """Inferred from the returned boxes against ground truth, e.g. ``xyxy/per_mille/yx/top_left``."""
    box_convention_confidence: float | None = None
    box_convention_alternatives: list[str] = []
    """Other conventions that explain the boxes equally well (the probe scenes could not tell them apart)."""
    mask_encoding: str | None = None
    mask_resolution: str | None = None
    error_style: str | None = None
    """``is_error``, ``payload``, ``protocol_error`` or ``accepted`` (no error at all)."""
    deterministic: bool | None = None
    memory_scope: str | None = None
    """For a tool whose results another tool takes (a handle): ``session``, ``global``, ``ttl`` or ``file``, as
    the handle probes saw it."""
    latency_ms: dict[str, float] | None = None
    """``median`` and ``max`` over the probe calls that succeeded."""


class Negotiation(_Model):
    """Which protocol revisions the server accepts, and which one the audit used."""

    negotiated: str | None
    revisions: dict[str, str]
    """Per mode the SDK speaks (``legacy`` handshake, or a modern version): ``ok VERSION`` or why not."""


class CategoryVerdict(_Model):
    category: str
    """A key of ``SUMMARY_CATEGORIES`` (``schema``, ``coords``, ``mask``, ``memory``, ``perm``, ``proto``)."""
    title: str
    verdict: Verdict
    findings: int
    detail: str


class AuditCard(_Model):
    """The audit of one server."""

    card_version: int = CARD_VERSION
    target: str
    """What was audited: a registered name, ``command '...'`` or ``url ...``."""
    transport: str
    server_info: dict[str, str]
    negotiation: Negotiation
    instructions: str | None
    tool_count: int
    tool_list_sha256: str | None
    """sha256 of the canonical JSON of every tool's name, description, inputSchema and outputSchema, sorted by
    name, for pinning; ``None`` when the tools were never listed."""
    tools: list[ToolReport]
    findings: list[Finding]
    probes: list[ProbeOutcome]
    summary: list[CategoryVerdict]
    errors: list[str]
    """Classified, bounded errors that cut the audit short (``timeout: ...``, ``crashed: ...``, ...)."""
    complete: bool
    """Whether every planned probe ran; a card is written either way, for what the audit learned."""
    seed: int
    duration_s: float


def summarize(findings: list[Finding], probes: list[ProbeOutcome]) -> list[CategoryVerdict]:
    """A verdict per summary category: fail on a violation, warn on a warning, pass when probed clean."""
    assessed = _assessed_categories(probes)
    verdicts: list[CategoryVerdict] = []
    for category, title in SUMMARY_CATEGORIES.items():
        mine = [finding for finding in findings if category_of(finding.id) == category]
        ids = sorted({finding.id for finding in mine})
        if any(severity(finding.id).value == "violation" for finding in mine):
            verdict: Verdict = "fail"
        elif mine:
            verdict = "warn"
        elif category in assessed:
            verdict = "pass"
        else:
            verdict = "not_assessed"
        detail = ", ".join(ids) if ids else ("nothing found" if verdict == "pass" else "no probe applied")
        verdicts.append(
            CategoryVerdict(category=category, title=title, verdict=verdict, findings=len(mine), detail=detail)
        )
    return verdicts


_PROBE_CATEGORIES: Final[dict[str, str]] = {
    "static": "schema",
    "output_schema": "schema",
    "error_style": "schema",
    "box_convention": "coords",
    "mask_encoding": "mask",
    "handle_scope": "memory",
    "handle_lifetime": "memory",
    "handle_growth": "memory",
    "descriptions": "perm",
    "robustness": "proto",
    "determinism": "proto",
    "revisions": "proto",
}


def _assessed_categories(probes: list[ProbeOutcome]) -> set[str]:
    return {
        _PROBE_CATEGORIES[probe.probe]
        for probe in probes
        if probe.probe in _PROBE_CATEGORIES and probe.status in ("ok", "finding")
    }


def matches_fail_on(finding_id: str, patterns: list[str]) -> bool:
    """Whether ``--fail-on`` patterns (IDs, ``any``, or globs such as ``coords.*``) select an ID."""
    return any(pattern == "any" or fnmatch.fnmatchcase(finding_id, pattern) for pattern in patterns)


def parse_fail_on(text: str) -> list[str]:
    """``--fail-on``'s comma list, each an ID, ``any``, or a glob over known IDs.

    Raises:
        ValueError: an entry selects no known ID.
    """
    patterns = [part.strip() for part in text.split(",") if part.strip()]
    ids = known_ids()
    for pattern in patterns:
        if pattern != "any" and not any(fnmatch.fnmatchcase(known, pattern) for known in ids):
            raise ValueError(
                f"--fail-on: {pattern!r} matches no known finding ID (e.g. coords.*, schema.structured_mismatch, any)"
            )
    return patterns


def card_json_schema() -> dict[str, Any]:
    """The published JSON Schema of an audit card's JSON form."""
    schema = AuditCard.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/mcp-vision-testbed/mcp-vision-testbed/testbed/audit/card.schema.json"
    return schema


def write_card_json_schema(path: Path = CARD_SCHEMA_PATH) -> None:
    path.write_text(json.dumps(card_json_schema(), indent=2, sort_keys=True) + "\n")
