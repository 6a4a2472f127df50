"""Contract rules: declarative checks of one value crossing one workflow edge, registered by name.

A rule reads what the producer declares at the edge's source path, what the consumer declares
on the argument, and the value itself; it finds nothing, a breach (with the tracked adapter that
would fix it, where the declarations say how), or that it cannot be evaluated. Plug-ins add rules
with :func:`contract_rule` exactly as the built-ins do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testbed._errors import TestbedError
from testbed.conventions import ImageSize
from testbed.workflow import Adapter

__all__ = ["ContractRule", "EdgeValue", "Finding", "contract_rule", "registered_rules", "rule_names"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_./-]*$")


@dataclass(frozen=True)
class EdgeValue:
    """One value about to cross one workflow edge into one call."""

    producer: str
    """The producing call, ``alias.tool`` (node ``source_node``)."""
    source_node: str
    source_path: str
    """Where the value lies in the producer's result, e.g. ``detections[*].bbox``."""
    argument: str
    """The consumer's argument it fills, e.g. ``box``."""
    produced: dict[str, Any] | None
    """The producer's output-schema property at ``source_path`` (``None``: the schema has no such path)."""
    expected: dict[str, Any]
    """The consumer's input-schema property of ``argument`` (``{}``: none)."""
    source: Any
    """The value as the producer returned it."""
    sent: Any
    """The value as it is about to be sent (after any tracked adapter)."""
    adapter: Adapter | None
    """The tracked adapter on the argument (declared in the workflow, or inserted by a contract)."""
    image_size: ImageSize
    consumer_schema: dict[str, Any] | None = None
    """The consumer's whole input schema (``$ref`` targets included), ``None`` when it lists none."""

    @property
    def where(self) -> str:
        """The edge as findings name it: ``node.path -> argument``."""
        return f"{self.source_node}.{self.source_path} -> {self.argument}"


@dataclass(frozen=True)
class Finding:
    """A rule's verdict on one edge value: a breach, or that it cannot be evaluated."""

    rule: str
    detail: str
    """One line: what is wrong, naming the edge."""
    unevaluable: bool = False
    remedy: Adapter | None = None
    """The tracked adapter that converts the producer's value into what the consumer reads, when declared."""


RuleCheck = Callable[[EdgeValue], Finding | None]


@dataclass(frozen=True)
class ContractRule:
    """A registered rule: it applies to edges whose consumer declares ``keyword`` on the argument."""

    name: str
    keyword: str | None
    """The extension keyword the consumer's argument must declare for the rule to apply (``None``: any schema)."""
    check: RuleCheck

    def applies(self, edge: EdgeValue) -> bool:
        if self.keyword is None:
            return bool(edge.expected)
        return self.keyword in edge.expected


_RULES: dict[str, ContractRule] = {}


def contract_rule(name: str, *, keyword: str | None) -> Callable[[RuleCheck], RuleCheck]:
    """Register ``check`` as the contract rule ``name``, applied where the consumer declares ``keyword``
    (``None``: wherever the consumer's input schema says anything about the argument).

    Raises:
        TestbedError: the name is malformed or already registered by another check.
    """

    def register(check: RuleCheck) -> RuleCheck:
        if not _NAME.match(name):
            raise TestbedError(f"contract rule {name!r}: use lowercase letters, digits, '_', '.', '/' and '-'")
        existing = _RULES.get(name)
        if existing is not None and existing.check is not check:
            raise TestbedError(f"contract rule {name!r} is already registered; choose another name")
        _RULES[name] = ContractRule(name=name, keyword=keyword, check=check)
        return check

    return register


def registered_rules(names: tuple[str, ...] | None = None) -> tuple[ContractRule, ...]:
    """The rules named (every registered one for ``None``), in registration order."""
    if names is None:
        return tuple(_RULES.values())
    return tuple(rule for name, rule in _RULES.items() if name in names)


def rule_names() -> tuple[str, ...]:
    return tuple(_RULES)


def rewritten_untracked(rule: str, edge: EdgeValue, value: str, declaration: str) -> Finding:
    """The value was changed on its way (``sent`` differs from ``source``) by no tracked adapter: what the
    producer declared no longer describes it, so the rule cannot be evaluated."""
    return Finding(
        rule,
        f"{edge.where}: {value} was rewritten outside any tracked adapter; its {declaration} is undeclared",
        unevaluable=True,
    )
