"""The scenario's ``contracts`` section: which policy answers a broken contract, and which rules are checked."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator

from testbed.contracts._rules import rule_names

__all__ = ["ContractPolicy", "ContractsSpec"]


class ContractPolicy(StrEnum):
    """What the orchestrator does when a value about to cross a workflow edge breaks a contract."""

    HALT = "halt"
    """The run stops with a recorded contract violation."""
    CONVERT = "convert"
    """A tracked adapter, derived from the two sides' declarations, converts the value (recorded on the call)."""
    REPLAN = "replan"
    """The agent is told why its call was refused and chooses again (agents that cannot: halt)."""
    FALLBACK = "fallback"
    """The consumer's declared fallback tool is called instead (none declared, or it breaks too: halt)."""


class ContractsSpec(BaseModel):
    """Runtime contracts: every value crossing a workflow edge is checked before the call is made."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    policy: ContractPolicy
    """``halt``, ``convert``, ``replan`` or ``fallback``."""
    rules: tuple[str, ...] | None = None
    """The registered rules to check (``None``: every registered rule)."""

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, rules: tuple[str, ...] | None) -> tuple[str, ...] | None:
        known = rule_names()
        for name in rules or ():
            if name not in known:
                raise ValueError(f"unknown contract rule {name!r}; known: {', '.join(known)}")
        return rules
