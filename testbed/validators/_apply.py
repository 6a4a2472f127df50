"""Apply every validator to a recorded experiment: runs cut from the events, failures isolated."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed._gc import kept_objects_unscanned, leave_kept_objects_unscanned
from testbed.events import (
    BLOBS_DIR,
    WALL_CLOCK_FIELDS,
    BlobStore,
    Event,
    ExperimentHeader,
    FaultEvent,
    MessageEvent,
    RunFinished,
    RunStarted,
    read_events,
)
from testbed.validators._coords import (
    check_crop_misses_object,
    check_mismatch,
    check_out_of_bounds,
    read_edges_of_runs,
    read_values_of_runs,
)
from testbed.validators._coords_free import check_across_runs
from testbed.validators._mask import check_outside_box, count_outside_of_runs
from testbed.validators._memory import check_out_of_scope, check_unbounded_store
from testbed.validators._model import RunRecord, ValidatorSpec, Violation, share_blob_readers


@dataclass(frozen=True)
class ValidatorFailure:
    """A validator that raised on a run: reported on its own, the other validators still ran."""

    validator: str
    run: int | None
    error: str


@dataclass(frozen=True)
class ValidationResult:
    violations: tuple[Violation, ...]
    failures: tuple[ValidatorFailure, ...]
    runs: tuple[RunRecord, ...]


def split_runs(events: Iterable[Event], blobs: BlobStore) -> list[RunRecord]:
    """Cut an experiment's events into complete runs (RunStarted .. RunFinished)."""
    header: ExperimentHeader | None = None
    records: list[RunRecord] = []
    current: list[Event] | None = None
    for event in events:
        if isinstance(event, ExperimentHeader):
            header = event
        elif isinstance(event, RunStarted):
            current = [event]
        elif current is not None:
            current.append(event)
            if isinstance(event, RunFinished) and header is not None and isinstance(current[0], RunStarted):
                records.append(
                    RunRecord(
                        header=header,
                        started=current[0],
                        events=tuple(current),
                        blobs=blobs,
                        servers={server.alias: server for server in header.servers},
                    )
                )
                current = None
    return records


def validate_runs(records: Sequence[RunRecord], validators: Sequence[ValidatorSpec]) -> ValidationResult:
    """Run every validator on every run, and the cross-run checks (memory, coordinate convention) on all of them."""
    with kept_objects_unscanned():  # the runs' events, read before
        return _validate_runs(records, validators)


def _validate_runs(records: Sequence[RunRecord], validators: Sequence[ValidatorSpec]) -> ValidationResult:
    found: list[Violation] = []
    failures: list[ValidatorFailure] = []
    checks = {spec.check for spec in validators}
    share_blob_readers(records)
    if checks & _READ_EDGES:  # batched numpy across runs; each run's readings as it alone would give
        read_edges_of_runs(records)
    if check_out_of_bounds in checks:
        read_values_of_runs(records)
    if check_outside_box in checks:
        count_outside_of_runs(records)
    leave_kept_objects_unscanned()  # what the batches derived, kept with the runs until the job ends
    named = [(spec.name, spec.check) for spec in validators]
    extend = found.extend
    for record in records:
        for name, check in named:
            try:
                extend(check(record))
            except Exception as error:  # one broken validator must not hide the others' findings
                failures.append(ValidatorFailure(name, record.started.run, f"{error.__class__.__name__}: {error}"))
    cross_run = (
        ("memory.out_of_scope", check_out_of_scope),
        ("memory.unbounded_store", check_unbounded_store),
        ("coords.across_runs", check_across_runs),
    )
    for name, check in cross_run:
        try:
            found.extend(check(records))
        except Exception as error:  # as above
            failures.append(ValidatorFailure(name, None, f"{error.__class__.__name__}: {error}"))
    found.sort(key=lambda v: (v.run, v.id, v.server or "", v.node or "", v.item if v.item is not None else -1))
    return ValidationResult(violations=tuple(found), failures=tuple(failures), runs=tuple(records))


_READ_EDGES: frozenset[Callable[..., object]] = frozenset({check_mismatch, check_crop_misses_object})
"""Validators that read every box edge of a run in every convention (:func:`read_edges_of_runs`)."""


def validate_experiment(directory: Path, validators: Sequence[ValidatorSpec]) -> ValidationResult:
    """Read an experiment directory and validate its complete runs."""
    with kept_objects_unscanned():
        log = read_events(directory)
        leave_kept_objects_unscanned()
        return validate_runs(split_runs(log.events, BlobStore(directory / BLOBS_DIR)), validators)


_FAULT_FIELDS = ("event", "run", "node", "item", "server", "index", "kind")
"""What a fault event says that a validator may read: which fault was decided where (not how it was applied)."""


def indistinguishable(first: Sequence[RunRecord], second: Sequence[RunRecord]) -> bool:
    """Whether every validator must find the same violations in two lists of runs (a recording and its replay).

    Validators are pure functions of a run's events, its header (the scenario, the servers' listings and truth
    manifests) and its blobs, which are content-addressed (equal references, equal content); none reads a
    wall-clock field, how a fault was applied (a fault event's layer, expected IDs, detail) or the reason a
    cancellation gives (it names the deadline, which replay shortens). Runs whose events and headers are equal
    but for those fields therefore give equal violations: validating one list answers for both. Anything else
    that differs (a JSON-RPC id, a header field) answers ``False``.
    """
    if len(first) != len(second):
        return False
    for left, right in zip(first, second, strict=True):
        if left.header is not right.header and _visible(left.header) != _visible(right.header):
            return False
        if left.servers != right.servers or len(left.events) != len(right.events):
            return False
        for one, other in zip(left.events, right.events, strict=True):
            if one is not other and (type(one) is not type(other) or _visible(one) != _visible(other)):
                return False
    return True


def _visible(event: Event) -> dict[str, Any]:
    """An event's fields as a validator may read them."""
    fields = event.__dict__
    if isinstance(event, FaultEvent):
        return {name: fields[name] for name in _FAULT_FIELDS}
    visible = {name: value for name, value in fields.items() if name not in WALL_CLOCK_FIELDS}
    if isinstance(event, MessageEvent) and event.message.get("method") == "notifications/cancelled":
        params = event.message.get("params")
        if isinstance(params, dict) and "reason" in params:  # names the deadline, which replay shortens
            visible["message"] = {**event.message, "params": {k: v for k, v in params.items() if k != "reason"}}
    return visible
