"""Validators and the violation catalog.

Each validator is a pure function of one recorded run (:class:`RunRecord`) and
emits catalogued :class:`Violation` objects; registration checks that every ID
a validator may emit is in :data:`CATALOG`. Two memory checks need several runs
at once (:func:`check_out_of_scope`, :func:`check_unbounded_store`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from testbed.validators import (
    _bridging,
    _connection,
    _coords,
    _cross_agent,
    _mask,
    _memory,
    _permission,
    _protocol,
    _schema,
)
from testbed.validators._apply import ValidationResult, ValidatorFailure, split_runs, validate_runs
from testbed.validators._apply import validate_experiment as _validate_experiment
from testbed.validators._catalog import CATALOG, CATEGORIES, entry
from testbed.validators._memory import check_out_of_scope, check_unbounded_store
from testbed.validators._model import CatalogEntry, RunRecord, Severity, Validator, ValidatorSpec, Violation


def _registered(specs: Iterable[ValidatorSpec]) -> tuple[ValidatorSpec, ...]:
    checked = []
    for spec in specs:
        unknown = [violation_id for violation_id in spec.emits if violation_id not in CATALOG]
        if unknown:
            raise ValueError(f"validator {spec.name!r} emits uncatalogued IDs {unknown}; add them to the catalog")
        checked.append(spec)
    return tuple(checked)


VALIDATORS: tuple[ValidatorSpec, ...] = _registered(
    (
        *_protocol.VALIDATORS,
        *_schema.VALIDATORS,
        *_connection.VALIDATORS,
        *_bridging.VALIDATORS,
        *_permission.VALIDATORS,
        *_coords.VALIDATORS,
        *_mask.VALIDATORS,
        *_memory.VALIDATORS,
        *_cross_agent.VALIDATORS,
    )
)
"""Every per-run validator, in a fixed order."""


def validate_experiment(directory: Path) -> ValidationResult:
    """Validate every complete run of an experiment directory with every registered validator."""
    return _validate_experiment(directory, VALIDATORS)


__all__ = [
    "CATALOG",
    "CATEGORIES",
    "VALIDATORS",
    "CatalogEntry",
    "RunRecord",
    "Severity",
    "ValidationResult",
    "Validator",
    "ValidatorFailure",
    "ValidatorSpec",
    "Violation",
    "check_out_of_scope",
    "check_unbounded_store",
    "entry",
    "split_runs",
    "validate_experiment",
    "validate_runs",
]
