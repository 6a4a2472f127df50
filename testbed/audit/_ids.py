# ruff: noqa: E501  (a table: one entry per line reads best)
"""What an audit can find: the violation catalog's IDs, plus observations only a live audit makes.

An audit reuses :data:`testbed.catalog.CATALOG` IDs wherever one means the
same thing. The entries below are behaviours a recorded run never shows (a
description's wording, a repeated identical call), so no validator emits them;
they keep the catalog's ``<category>.<name>`` form, so ``--fail-on coords.*``
and the summary's categories treat both alike.
"""

from __future__ import annotations

from typing import Final

from testbed.catalog import CATALOG, CatalogEntry, Severity

__all__ = ["AUDIT_ONLY", "SUMMARY_CATEGORIES", "behaviour", "category_of", "known_ids", "severity"]

_PROJECT = "mcp-vision-testbed (testbed audit)"
_SPEC = "https://modelcontextprotocol.io/specification/2025-11-25"
V, W = Severity.VIOLATION, Severity.WARNING

AUDIT_ONLY: Final[dict[str, CatalogEntry]] = {
    entry.id: entry
    for entry in (
        CatalogEntry("perm.instruction_in_description", "A tool or server text addresses the model with instructions (a prompt-injection pattern).", W, "arXiv 2509.22814 §5 (tool poisoning)"),
        CatalogEntry("schema.input_untyped", "A tool's input property declares no JSON type.", W, "arXiv 2509.22814 §4 (untyped tool connections)"),
        CatalogEntry("schema.bad_input_accepted", "A tool answers a call with an invalid argument as if it succeeded.", W, f"{_SPEC}/server/tools#error-handling"),
        CatalogEntry("coords.declared_mismatch", "A tool's boxes follow a convention other than the one it declares.", V, "arXiv 2509.22814 §6 (semantic schema fields)"),
        CatalogEntry("mask.declared_mismatch", "A tool's masks use an encoding or resolution other than the one it declares.", V, "arXiv 2509.22814 §6 (semantic schema fields)"),
        CatalogEntry("proto.nondeterministic", "A tool answers identical calls with different results.", W, _PROJECT),
        CatalogEntry("proto.oversized_response", "A response exceeds the audit's size bound.", W, _PROJECT),
        CatalogEntry("proto.server_crashed", "The server stopped answering during the audit.", V, f"{_SPEC}/basic/lifecycle"),
    )
}  # fmt: skip

SUMMARY_CATEGORIES: Final[dict[str, str]] = {
    "schema": "schema format",
    "coords": "coordinate convention",
    "mask": "mask-image consistency",
    "memory": "memory scope",
    "perm": "permission",
    "proto": "protocol",
}
"""The card's summary rows: the paper's five categories, then protocol behaviour."""


def known_ids() -> frozenset[str]:
    """Every ID an audit may report."""
    return frozenset(CATALOG) | frozenset(AUDIT_ONLY)


def _entry(violation_id: str) -> CatalogEntry:
    found = CATALOG.get(violation_id) or AUDIT_ONLY.get(violation_id)
    if found is None:
        raise KeyError(f"unknown audit finding ID {violation_id!r}")
    return found


def behaviour(violation_id: str) -> str:
    """The one-sentence behaviour an ID names."""
    return _entry(violation_id).behaviour


def severity(violation_id: str) -> Severity:
    return _entry(violation_id).severity


def category_of(violation_id: str) -> str:
    """The summary category of an ID (``conn.*`` findings count as schema format)."""
    prefix = violation_id.split(".", 1)[0]
    return "schema" if prefix == "conn" else prefix
