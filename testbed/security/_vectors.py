"""The paper's eight threat vectors, as the security probes name them."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Vector"]


class Vector(StrEnum):
    """One threat vector of the paper's security audit."""

    PROMPT_INJECTION = "prompt_injection"
    """Instructions smuggled to the agent in a tool description, a tool output or the image itself."""
    SCHEMA_BYPASS = "schema_bypass"
    """A tool that accepts and acts on arguments (or values) its schema does not declare."""
    REMOTE_CODE_EXECUTION = "remote_code_execution"
    """Arguments reaching a shell."""
    PRIVILEGE_ESCALATION = "privilege_escalation"
    """Lying annotations, reach beyond the grant, or calls made on the agent's behalf."""
    STALE_MEMORY = "stale_memory"
    """Handles and results that outlive their session."""
    CROSS_TOOL_LEAKAGE = "cross_tool_leakage"
    """One server reading another's data through a shared store or a predictable handle."""
    UNTRACKED_PROVENANCE = "untracked_provenance"
    """A result whose origin is laundered."""
    TYPE_COERCION = "type_coercion"
    """Strings coerced into numbers, paths or commands."""
