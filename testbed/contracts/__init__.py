"""Runtime contracts: values checked against declarations before they cross a workflow edge.

The scenario's ``contracts: {policy, rules}`` (:class:`ContractsSpec`) turns them on. Rules are
declarative checks registered by name (:func:`contract_rule`; the built-ins are ``box_convention`` and
``box_bounds`` (:mod:`._box`), ``mask_encoding`` and ``mask_resolution`` (:mod:`._mask`), ``shape_order``
(:mod:`._shape`) and ``required_fields`` (:mod:`._fields`)); the policy answers a breach by halting the run,
converting the value with a tracked adapter, asking the agent to choose again, or calling the consumer's
declared fallback tool (:mod:`._fallback`). Every finding and decision is a :class:`~testbed.events.ContractEvent`.
"""

# Imported for their registrations: the built-in rules exist before any spec is read.
from testbed.contracts import _box, _fields, _mask, _shape  # noqa: F401
from testbed.contracts._enforce import CONTRACTS_AGENT, MAX_REPLANS, ContractedAgent, with_contracts
from testbed.contracts._fallback import FALLBACK_META_KEY, declared_fallback, resolve_fallback
from testbed.contracts._inserted import (
    INSERTED_SUFFIX,
    describe_inserted,
    inserted_arguments,
    inserted_mask_conversions,
)
from testbed.contracts._rules import ContractRule, EdgeValue, Finding, contract_rule, registered_rules, rule_names
from testbed.contracts._spec import ContractPolicy, ContractsSpec

__all__ = [
    "CONTRACTS_AGENT",
    "FALLBACK_META_KEY",
    "INSERTED_SUFFIX",
    "MAX_REPLANS",
    "ContractPolicy",
    "ContractRule",
    "ContractedAgent",
    "ContractsSpec",
    "EdgeValue",
    "Finding",
    "contract_rule",
    "declared_fallback",
    "describe_inserted",
    "inserted_arguments",
    "inserted_mask_conversions",
    "registered_rules",
    "resolve_fallback",
    "rule_names",
    "with_contracts",
]
