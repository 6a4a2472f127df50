"""Validators and the violation catalog.

Each validator is a pure function of one recorded run (:class:`RunRecord`) and
emits catalogued :class:`Violation` objects. The built-ins register with the
testbed's registry like any plug-in validator, which checks that every ID a
validator may emit is in :data:`CATALOG`. Two memory checks need several runs
at once (:func:`check_out_of_scope`, :func:`check_unbounded_store`), and so does
the coordinate convention's consistency across runs (``coords.inconsistent_convention``).
"""

from __future__ import annotations

from pathlib import Path

from testbed.catalog import CATALOG, CATEGORIES, CatalogEntry, Severity, entry
from testbed.registry import registry, validator
from testbed.validators import (
    _bridging,
    _connection,
    _contract,
    _coords,
    _coords_free,
    _coords_pseudo,
    _cross_agent,
    _defense,
    _mask,
    _memory,
    _payload,
    _permission,
    _protocol,
    _provenance,
    _scale,
    _schema,
    _security,
)
from testbed.validators._apply import ValidationResult, ValidatorFailure, indistinguishable, split_runs, validate_runs
from testbed.validators._apply import validate_experiment as _validate_experiment
from testbed.validators._memory import check_out_of_scope, check_unbounded_store
from testbed.validators._model import RunRecord, Validator, ValidatorSpec, Violation
from testbed.validators._truth_modes import MODE_MEANINGS, TRUTH_READERS, ServerMode, server_modes, truth_mode

VALIDATORS: tuple[ValidatorSpec, ...] = (
    *_protocol.VALIDATORS,
    *_schema.VALIDATORS,
    *_connection.VALIDATORS,
    *_bridging.VALIDATORS,
    *_permission.VALIDATORS,
    *_coords.VALIDATORS,
    *_coords_free.VALIDATORS,
    *_coords_pseudo.VALIDATORS,
    *_mask.VALIDATORS,
    *_memory.VALIDATORS,
    *_cross_agent.VALIDATORS,
    *_scale.VALIDATORS,
    *_payload.VALIDATORS,
    *_defense.VALIDATORS,
    *_provenance.VALIDATORS,
    *_security.VALIDATORS,
    *_contract.VALIDATORS,
)
"""Every built-in per-run validator, in a fixed order."""

for _spec in VALIDATORS:
    validator(_spec.name, emits=_spec.emits)(_spec.check)


def registered_validators() -> tuple[ValidatorSpec, ...]:
    """Every registered validator: the built-ins, then the plug-ins'."""
    return registry().validator_list()


def validate_experiment(directory: Path) -> ValidationResult:
    """Validate every complete run of an experiment directory with every registered validator."""
    return _validate_experiment(directory, registered_validators())


__all__ = [
    "CATALOG",
    "CATEGORIES",
    "MODE_MEANINGS",
    "TRUTH_READERS",
    "VALIDATORS",
    "CatalogEntry",
    "RunRecord",
    "ServerMode",
    "Severity",
    "ValidationResult",
    "Validator",
    "ValidatorFailure",
    "ValidatorSpec",
    "Violation",
    "check_out_of_scope",
    "check_unbounded_store",
    "entry",
    "indistinguishable",
    "registered_validators",
    "server_modes",
    "split_runs",
    "truth_mode",
    "validate_experiment",
    "validate_runs",
]
