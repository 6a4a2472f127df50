"""The shapes every validator shares: catalog entries, violations, and what a validator reads.

Validators are pure functions of one run's recorded events, its ground truth,
the servers' truth manifests and tool schemas (all in ``events.jsonl``), so a
replay recomputes exactly the same violations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from testbed.events import (
    BlobStore,
    CallEvent,
    Event,
    ExperimentHeader,
    FaultEvent,
    MessageEvent,
    ReadOnceBlobs,
    ReplayBlobs,
    RunStarted,
    ServerRecord,
    internalize,
    internalized,
)
from testbed.protocol import ServerTruth
from testbed.registry import RECORDED_CONTEXT, ValidatorPlugin
from testbed.scenario import Scenario
from testbed.validators._truth_modes import declared_of


@dataclass(frozen=True)
class Violation:
    """One occurrence of a catalogued violation in one run."""

    id: str
    run: int
    server: str | None
    """Server alias it is attributed to (None for run-level findings)."""
    node: str | None
    item: int | None
    detail: str
    """One line explaining this occurrence."""
    evidence: tuple[int, ...] = ()
    """Positions (in the run's event list) of the events that caused it."""

    @classmethod
    def at_call(cls, violation_id: str, run: int, position: int, call: CallEvent, detail: str) -> Violation:
        """A violation attributed to one recorded call (its server, node and item), with the call as evidence."""
        return cls(
            id=violation_id,
            run=run,
            server=call.server,
            node=call.node,
            item=call.item,
            detail=detail,
            evidence=(position,),
        )


_parsed: dict[int, tuple[ExperimentHeader, Scenario]] = {}
"""Recently parsed headers by identity (every run of an experiment shares its header object)."""


def recorded_scenario(header: ExperimentHeader) -> Scenario:
    """The scenario a run header recorded, parsed once per header."""
    cached = _parsed.get(id(header))
    if cached is not None and cached[0] is header:
        return cached[1]
    scenario = Scenario.model_validate(header.scenario, context={RECORDED_CONTEXT: True})
    if len(_parsed) >= 8:
        _parsed.clear()
    _parsed[id(header)] = (header, scenario)
    return scenario


@dataclass(frozen=True)
class RunRecord:
    """Everything a validator may read about one run (all from the experiment directory)."""

    header: ExperimentHeader
    started: RunStarted
    events: tuple[Event, ...]
    """The run's events in recorded (deterministic) order, RunStarted first."""
    blobs: BlobStore
    servers: dict[str, ServerRecord] = field(default_factory=dict)
    """By alias: what each server listed (tools, schemas) and its truth manifest as recorded."""

    @property
    def scenario(self) -> Scenario:
        """The resolved scenario the run's header recorded (kinds this install lacks read as recorded)."""
        return recorded_scenario(self.header)

    _memo: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Values derived from this record, computed once (see :meth:`memo`)."""

    def memo(self, key: Any, compute: Callable[[], _T]) -> _T:
        """``compute()``, once per record and ``key``: validators are pure functions of the record.

        What it returns is shared by every caller: treat it as read-only.
        """
        try:
            return self._memo[key]  # type: ignore[no-any-return]
        except KeyError:
            value = self._memo[key] = compute()
            return value

    def remember(self, key: Any, value: Any) -> None:
        """Hold ``value`` as :meth:`memo`'s for ``key`` unless one is held already (a batch over several runs
        computed it as ``memo`` would have)."""
        self._memo.setdefault(key, value)

    def truth(self, alias: str) -> ServerTruth | None:
        """Its truth manifest; without one, what its ``tools/list`` declares (declared-only mode, see
        :mod:`._truth_modes`); ``None`` where nothing is declared either."""
        record = self.servers.get(alias)
        if record is None:
            return None
        return parsed_truth(record) if record.truth else declared_of(record)

    def tools(self, alias: str) -> list[dict[str, Any]]:
        record = self.servers.get(alias)
        return list(record.tools) if record is not None else []

    def internalize(self, value: Any) -> Any:
        """``value`` (a part of one of this record's events) with blob references resolved, once per object.

        The result is shared: treat it as read-only.
        """
        cache: dict[int, tuple[Any, Any]] = self.memo(_INTERNALIZED, dict)
        found = cache.get(id(value))
        if found is not None and found[0] is value:
            return found[1]
        resolved = _resolved(value, self._reader())
        cache[id(value)] = (value, resolved)  # holding ``value`` keeps its id from being reused
        return resolved

    def blob_exists(self, digest: str) -> bool:
        """Whether reading blob ``digest`` would find it (without reading it), once per record and digest."""
        return self.blob_path(digest) is not None

    def blob_path(self, digest: str) -> Path | None:
        """The file reading blob ``digest`` would read (``None``: it is missing), once per record and digest."""
        known: dict[str, Path | None] = self.memo(_PRESENT, dict)
        try:
            return known[digest]
        except KeyError:
            found = known[digest] = self._reader().path(digest)
            return found

    def _reader(self) -> ReadOnceBlobs:
        """The blobs, each read and looked up once (shared by the runs :func:`share_blob_readers` was given)."""
        return self.memo(_BLOBS, lambda: ReadOnceBlobs(self.blobs))

    def per_server(self, alias: str, key: str, compute: Callable[[list[dict[str, Any]]], _T]) -> _T:
        """``compute(self.tools(alias))``, once per server record of the experiment (``alias`` unknown: every time).

        For what depends only on the server's recorded listing; shared by every run: treat it as read-only.
        """
        record = self.servers.get(alias)
        if record is None:
            return compute([])
        return per_server(record, self.blobs, key, lambda: compute(list(record.tools)))

    def listed_tools(self, alias: str) -> dict[str, dict[str, Any]]:
        """The tools ``alias`` listed when the experiment started, by name (the first of a name), blobs resolved.

        Shared by every run of the experiment: treat it as read-only.
        """
        record = self.servers.get(alias)
        return listed_by_name(record, self.blobs) if record is not None else {}

    def calls(self) -> list[tuple[int, CallEvent]]:
        return list(self.memo(_CALLS, lambda: tuple(self._of_kind(CallEvent))))

    def messages(self) -> list[tuple[int, MessageEvent]]:
        return list(self.memo(_MESSAGES, lambda: tuple(self._of_kind(MessageEvent))))

    def faults(self) -> list[tuple[int, FaultEvent]]:
        return list(self.memo(_FAULTS, lambda: tuple(self._of_kind(FaultEvent))))

    def _of_kind(self, kind: type[_E]) -> list[tuple[int, _E]]:
        return [(i, e) for i, e in enumerate(self.events) if isinstance(e, kind)]


def share_blob_readers(records: Iterable[RunRecord]) -> None:
    """Let runs that share a blob store share one reader of it: each blob read, and the store's folder listed,
    once for all of them rather than once per run (blobs are content-addressed: one digest, one text)."""
    readers: dict[int, ReadOnceBlobs] = {}
    for record in records:
        store = record.blobs
        reader = readers.get(id(store))
        if reader is None:
            reader = readers[id(store)] = ReplayBlobs(store) if type(store) is BlobStore else ReadOnceBlobs(store)
        record.remember(_BLOBS, reader)


_resolved = internalized
"""The name this module's tests know :func:`testbed.events.internalized` by."""


_T = TypeVar("_T")
_E = TypeVar("_E", bound=Event)
_CALLS, _MESSAGES, _FAULTS = ("record.calls", "record.messages", "record.faults")
_INTERNALIZED, _BLOBS, _PRESENT = ("record.internalized", "record.blobs", "record.blobs_present")

_truths: dict[int, tuple[ServerRecord, ServerTruth]] = {}
"""Parsed truth manifests by server record identity (every run of an experiment shares its header's records)."""


def parsed_truth(record: ServerRecord) -> ServerTruth:
    """The truth manifest a server record holds, parsed once per record object."""
    cached = _truths.get(id(record))
    if cached is not None and cached[0] is record:
        return cached[1]
    truth = ServerTruth.model_validate(record.truth)
    if len(_truths) >= 256:
        _truths.clear()
    _truths[id(record)] = (record, truth)
    return truth


Validator = Callable[[RunRecord], Iterable[Violation]]
"""A validator: a pure function from one run to the violations it finds."""


ValidatorSpec = ValidatorPlugin
"""A registered validator and the IDs it may emit (checked against the catalog when it registers)."""


_per_server: dict[tuple[int, str], tuple[ServerRecord, Path, Any]] = {}
"""Values derived from one server record (and blobs, content-addressed: one root, one meaning), by identity."""


def per_server(record: ServerRecord, blobs: BlobStore, key: str, compute: Callable[[], _T]) -> _T:
    """``compute()``, once per server record object, blob store root and ``key`` (shared by every run of an
    experiment: treat it as read-only)."""
    cached = _per_server.get((id(record), key))
    if cached is not None and cached[0] is record and (cached[1] is blobs.root or cached[1] == blobs.root):
        return cached[2]  # type: ignore[no-any-return]
    value = compute()
    if len(_per_server) >= 1024:
        _per_server.clear()
    _per_server[(id(record), key)] = (record, blobs.root, value)
    return value


def listed_by_name(record: ServerRecord, blobs: BlobStore) -> dict[str, dict[str, Any]]:
    """A server record's listed tools by name (the first of each name), blob references resolved, once per record."""
    return per_server(record, blobs, "listed_by_name", lambda: _listed_by_name(record, blobs))


def _listed_by_name(record: ServerRecord, blobs: BlobStore) -> dict[str, dict[str, Any]]:
    by_name: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for listed in record.tools:
        name = listed.get("name")
        if isinstance(name, str) and name not in seen:
            seen.add(name)
            resolved = internalize(listed, blobs)
            if isinstance(resolved, dict):
                by_name[name] = resolved
    return by_name
