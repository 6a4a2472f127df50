# ruff: noqa: E501  (a table: one catalog entry per line reads best)
"""The violation catalog: stable IDs, one-sentence behaviours, severities and sources.

A leaf module: the registry checks plug-ins' IDs against it, and validators emit them.

Tests cite these IDs; a coverage test proves every ID has a test and every
validator test names a known ID. Never rename or reuse an ID: published rates
cite them. Add new ones instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CATALOG", "CATEGORIES", "CatalogEntry", "Severity", "entry"]


class Severity(StrEnum):
    VIOLATION = "violation"
    """The protocol or a declared contract is broken."""
    WARNING = "warning"
    """Risky but not forbidden (memory-scope warnings are counted per 100 executions)."""


@dataclass(frozen=True)
class CatalogEntry:
    """One stable violation ID."""

    id: str
    """Stable ID, ``<category>.<name>`` (category: schema, coords, mask, memory, perm, conn, proto)."""
    behaviour: str
    """One sentence: what is flagged."""
    severity: Severity
    source: str
    """Where the rule comes from: an MCP spec section URL, the paper (arXiv 2509.22814 §...), or this project."""


_SPEC = "https://modelcontextprotocol.io/specification/2025-11-25"
_PAPER = "arXiv 2509.22814"
_PROJECT = "mcp-vision-testbed"

V, W = Severity.VIOLATION, Severity.WARNING

CATALOG: dict[str, CatalogEntry] = {
    entry.id: entry
    for entry in (
        # Schema format (the paper's schema-format misalignment).
        CatalogEntry("schema.output_schema_missing", "A tool returns structured results but lists no outputSchema.", V, f"{_SPEC}/server/tools#output-schema"),
        CatalogEntry("schema.output_schema_loose", "A tool's outputSchema is an object with no declared properties.", V, f"{_PAPER} §4 (schema format)"),
        CatalogEntry("schema.structured_mismatch", "structuredContent does not validate against the tool's outputSchema.", V, f"{_SPEC}/server/tools#output-schema"),
        CatalogEntry("schema.text_json_without_schema", "A tool returns JSON inside a text block with no outputSchema describing it.", V, f"{_SPEC}/server/tools#structured-content"),
        CatalogEntry("schema.arguments_invalid", "A call's arguments do not validate against the tool's inputSchema.", V, f"{_SPEC}/server/tools#tool"),
        CatalogEntry("schema.error_in_payload", "A tool reports a failure as an error payload instead of a result with isError.", V, f"{_SPEC}/server/tools#error-handling"),
        CatalogEntry("schema.field_name_divergence", "Servers in one workflow use different field names for the same semantic role.", W, f"{_PAPER} §4 (schema format)"),
        # Coordinate conventions.
        CatalogEntry("coords.undeclared", "A box property declares no coordinate_system.", V, f"{_PAPER} §6 (semantic schema fields)"),
        CatalogEntry("coords.out_of_bounds", "A box lies outside the image or has no area under its server's convention.", V, _PROJECT),
        CatalogEntry("coords.mismatch", "A box crosses an edge in a convention other than the one its consumer reads.", V, f"{_PAPER} §4 (coordinate conventions)"),
        CatalogEntry("coords.crop_misses_object", "A crop meant for an object does not contain it.", V, _PROJECT),
        CatalogEntry("coords.inconsistent_convention", "Without ground truth: a tool's boxes agree with its earlier call's on the same image only when read in another convention (its convention changed).", V, _PROJECT),
        CatalogEntry("coords.producers_disagree", "Without ground truth: a producer's boxes agree with another producer's on the same image only when read in another convention than its own.", V, _PROJECT),
        CatalogEntry("coords.implausible_boxes", "Without ground truth: most of a call's boxes lie off the image or are implausibly small in its convention, and all fit in another.", V, _PROJECT),
        CatalogEntry("coords.edge_disagrees", "Without ground truth: a box crossing an edge is read by its consumer as another box than its producer meant.", V, _PROJECT),
        CatalogEntry("coords.pseudo_mismatch", "Without ground truth: a call's boxes match a reference model's (pseudo ground truth, shared classes) far better in another convention than in its own.", V, _PROJECT),
        CatalogEntry("coords.scale_mismatch", "A measurement is made at another pixel spacing (mm per pixel) than the image it measures declares.", V, f"{_PAPER} §7 (FHIR case study: undocumented pixel spacing)"),
        # Mask-image consistency.
        CatalogEntry("mask.size_mismatch", "A mask's size or channels differ from its image's (or from its declared resolution).", V, f"{_PAPER} §4 (mask-image mismatch)"),
        CatalogEntry("mask.encoding_mismatch", "A mask crosses an edge in an encoding other than the one its consumer reads.", V, f"{_PAPER} §4 (mask-image mismatch)"),
        CatalogEntry("mask.outside_box", "A mask has pixels outside the box reported with it.", V, _PROJECT),
        # Memory scope (warnings, counted per 100 executions).
        CatalogEntry("memory.handle_out_of_scope", "A handle is used outside the scope (run or session) that created it.", W, f"{_PAPER} §4 (memory scope)"),
        CatalogEntry("memory.handle_expired", "A handle is used after its declared or actual lifetime ended.", W, f"{_PAPER} §4 (memory scope)"),
        CatalogEntry("memory.handle_unknown", "A handle is used that its server never issued (or has evicted).", W, f"{_PAPER} §4 (memory scope)"),
        CatalogEntry("memory.cross_agent", "A handle created by one agent is read by another.", W, f"{_PAPER} §5 (multi-agent leakage)"),
        CatalogEntry("memory.retention_exceeded", "A server keeps data longer than its declared scope allows.", W, f"{_PAPER} §6 (declared memory scope)"),
        CatalogEntry("memory.unbounded_store", "A shared store keeps growing across runs with nothing ever evicted.", W, f"{_PAPER} §4 (memory scope)"),
        # Permission verification.
        CatalogEntry("perm.tool_not_granted", "An agent calls a tool outside the set its scenario grants it.", V, f"{_PAPER} §5 (privilege escalation)"),
        CatalogEntry("perm.path_outside_sandbox", "A call reads or writes a file outside the run's sandbox.", V, f"{_PAPER} §5 (path traversal)"),
        # Connection typing.
        CatalogEntry("conn.untyped_edge", "A workflow edge connects an output or input that has no schema.", V, f"{_PAPER} §4 (untyped tool connections)"),
        CatalogEntry("conn.type_incompatible", "A workflow edge passes a value whose JSON type the consumer's schema rejects.", V, f"{_PAPER} §4 (untyped tool connections)"),
        CatalogEntry("conn.untracked_bridging", "A value is converted between conventions outside any declared adapter.", V, f"{_PAPER} §4 (bridging scripts)"),
        CatalogEntry("conn.binary_unparseable", "An image argument holds binary data that is no encoded image, such as a raw texture nested in JSON.", V, f"{_PAPER} §7 (ParaView case study: binary payloads in nested JSON)"),
        # Provenance (the paper's §6 observability hooks and provenance).
        CatalogEntry("provenance.untracked", "A value is consumed that no scene or earlier call of the run produced (or laundered through an undeclared conversion), or an image is returned from nothing the call was given.", V, f"{_PAPER} §6 (provenance)"),
        # Protocol.
        CatalogEntry("proto.id_mismatch", "A response's JSON-RPC id answers no outstanding request, or answers one twice.", V, f"{_SPEC}/basic#responses"),
        CatalogEntry("proto.timeout", "A call gets no response before its deadline.", V, f"{_SPEC}/basic/lifecycle#timeouts"),
        CatalogEntry("proto.malformed_message", "A frame from the server is not a valid JSON-RPC message.", V, f"{_SPEC}/basic#messages"),
        CatalogEntry("proto.error_misclassified", "A tool failure arrives as a JSON-RPC protocol error instead of a result with isError.", V, f"{_SPEC}/server/tools#error-handling"),
        CatalogEntry("proto.tool_list_changed", "A server's tool list, a tool's description or its schema changes mid-experiment.", V, f"{_SPEC}/server/tools#list-changed-notification"),
        CatalogEntry("proto.transport_closed", "A server's transport closes with a call in flight.", V, f"{_SPEC}/basic/transports"),
        # Security: attacks judged from the recorded trace (AgentDojo's injection tasks).
        CatalogEntry("security.attack_succeeded", "A run's recorded trace shows its scenario's attack goal met (a canary reached, a forbidden tool called, a foreign handle read, or an injected instruction followed).", V, f"{_PAPER} §5 (security audit); AgentDojo (arXiv 2406.13352)"),
        # Defenses: calls a defense refused before they went out (testbed.defenses).
        CatalogEntry("defense.tool_unpinned", "A call to a tool listed with another description or schema than at its first listing was refused (tool pinning).", V, _PROJECT),
        CatalogEntry("defense.privilege_exceeded", "A call to a tool above the agent's role (its highest privilege level) was refused (role-based tool binding).", V, f"{_PAPER} §5 (privilege escalation: role-based tool binding)"),
        CatalogEntry("defense.handle_unscoped", "A call passing a handle not issued to its run and agent, or past its lifetime, was refused (scoped memory).", V, f"{_PAPER} §5 (stale memory: TTL plus garbage collection)"),
        CatalogEntry("defense.provenance_untagged", "A call passing an image, path, handle or mask that is neither the run's scene nor returned by a call of the run was refused (provenance tagging).", V, f"{_PAPER} §5 (untracked provenance: output tagging)"),
        # Runtime contracts: values checked against declarations before they cross a workflow edge (testbed.contracts).
        CatalogEntry("contract.violation", "A value about to cross a workflow edge broke a runtime contract (box convention or bounds against the declarations), and the scenario's policy could not remedy it: the run halted.", V, f"{_PAPER} §6 (runtime validator contracts)"),
        CatalogEntry("contract.unevaluable", "A runtime contract rule could not be evaluated on a workflow edge (a path missing from the producer's declarations or result, or a value rewritten outside any tracked adapter).", V, f"{_PAPER} §6 (runtime validator contracts)"),
    )
}  # fmt: skip

CATEGORIES = (
    "schema",
    "coords",
    "mask",
    "memory",
    "perm",
    "conn",
    "proto",
    "provenance",
    "security",
    "defense",
    "contract",
)


def entry(violation_id: str) -> CatalogEntry:
    """The catalog entry of an ID.

    Raises:
        KeyError: the ID is not catalogued.
    """
    return CATALOG[violation_id]
