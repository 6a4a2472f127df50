"""``testbed audit``: audit any MCP vision server as a black box and write its audit card.

Static checks read ``initialize`` and ``tools/list``; dynamic probes call its
tools with seeded probe scenes whose ground truth is exact, and with bad
input. See :func:`audit` and :class:`AuditCard`.
"""

from testbed.audit._card import (
    CARD_SCHEMA_PATH,
    AuditCard,
    CategoryVerdict,
    Evidence,
    Finding,
    ProbeOutcome,
    ToolReport,
    card_json_schema,
    matches_fail_on,
    parse_fail_on,
    write_card_json_schema,
)
from testbed.audit._ids import AUDIT_ONLY, SUMMARY_CATEGORIES, known_ids
from testbed.audit._render import render_html, render_text
from testbed.audit._run import PROBE_SCENE, AuditOptions, audit, probe_scenes
from testbed.audit._static import INJECTION_PATTERNS, injection_matches, tool_list_sha256
from testbed.audit._target import (
    REVISION_MODES,
    AuditTarget,
    command_target,
    in_process_target,
    registered_target,
    url_target,
)

__all__ = [
    "AUDIT_ONLY",
    "CARD_SCHEMA_PATH",
    "INJECTION_PATTERNS",
    "PROBE_SCENE",
    "REVISION_MODES",
    "SUMMARY_CATEGORIES",
    "AuditCard",
    "AuditOptions",
    "AuditTarget",
    "CategoryVerdict",
    "Evidence",
    "Finding",
    "ProbeOutcome",
    "ToolReport",
    "audit",
    "card_json_schema",
    "command_target",
    "in_process_target",
    "injection_matches",
    "known_ids",
    "matches_fail_on",
    "parse_fail_on",
    "probe_scenes",
    "registered_target",
    "render_html",
    "render_text",
    "tool_list_sha256",
    "url_target",
    "write_card_json_schema",
]
