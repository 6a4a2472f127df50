"""The shapes every validator shares: catalog entries, violations, and what a validator reads.

Validators are pure functions of one run's recorded events, its ground truth,
the servers' truth manifests and tool schemas (all in ``events.jsonl``), so a
replay recomputes exactly the same violations.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from testbed.events import (
    BlobStore,
    CallEvent,
    Direction,
    Event,
    ExperimentHeader,
    FaultEvent,
    MessageEvent,
    ReadOnceBlobs,
    ReplayBlobs,
    RunStarted,
    ServerRecord,
    blob_files,
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
        memo = self._memo
        value = memo.get(key, _UNSET)
        if value is _UNSET:  # no KeyError raised and caught: a first lookup is as cheap as a later one
            value = memo[key] = compute()
        return value  # type: ignore[no-any-return]

    def remember(self, key: Any, value: Any) -> None:
        """Hold ``value`` as :meth:`memo`'s for ``key`` unless one is held already (a batch over several runs
        computed it as ``memo`` would have)."""
        self._memo.setdefault(key, value)

    def truth(self, alias: str) -> ServerTruth | None:
        """Its truth manifest; without one, what its ``tools/list`` declares (declared-only mode, see
        :mod:`._truth_modes`); ``None`` where nothing is declared either. Once per run and alias."""
        known: dict[str, ServerTruth | None] | None = self._memo.get(_TRUTHS)
        if known is None:
            known = self.memo(_TRUTHS, dict)
        found = known.get(alias, _UNSET)
        if found is _UNSET:
            found = known[alias] = self._truth(alias)
        return found  # type: ignore[no-any-return]

    def _truth(self, alias: str) -> ServerTruth | None:
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
        if type(value) is list and _SCALARS.issuperset(map(type, value)):
            return value  # a box, a list of names: nothing to resolve (as ``_resolved`` finds first)
        cache: dict[int, tuple[Any, Any]] | None = self._memo.get(_INTERNALIZED)
        if cache is None:
            cache = self.memo(_INTERNALIZED, dict)
        found = cache.get(id(value))
        if found is not None and found[0] is value:
            return found[1]
        resolved = _resolved(value, self._reader())
        cache[id(value)] = (value, resolved)  # holding ``value`` keeps its id from being reused
        return resolved

    def internalized_as_is(self, value: Any) -> bool:
        """Whether :meth:`internalize` gave ``value`` back as it is, so it holds no blob reference (``False``: not
        internalized yet, or it holds one)."""
        found = self._memo.get(_INTERNALIZED, _NOTHING).get(id(value))
        return found is not None and found[0] is value and found[1] is value

    def blob_exists(self, digest: str) -> bool:
        """Whether reading blob ``digest`` would find it (without reading it), once per record and digest."""
        listed: dict[str, str] | None = self._memo.get(_LISTED)
        if listed is not None and type(digest) is str and digest in listed:
            return True  # its file was there when the runs' store was listed, so blob_path finds it
        return self.blob_path(digest) is not None

    def blob_file(self, digest: str) -> str | None:
        """``str(self.blob_path(digest))`` where the runs' store was listed holding the blob's file (no path object
        made), else ``None``: ask :meth:`blob_path`."""
        listed: dict[str, str] | None = self._memo.get(_LISTED)
        name = listed.get(digest) if listed is not None and type(digest) is str else None
        return os.path.join(self.blobs.root, name) if name is not None else None

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

    def per_experiment(self, key: str, compute: Callable[[], _T]) -> _T:
        """``compute()``, once per experiment: for what depends only on the run's header (its scenario), its server
        records by alias and its blob store, never on the run's events. Shared by every run: treat it as read-only.
        """
        return per_experiment(self, key, compute)

    def listed_tools(self, alias: str) -> dict[str, dict[str, Any]]:
        """The tools ``alias`` listed when the experiment started, by name (the first of a name), blobs resolved.

        Shared by every run of the experiment: treat it as read-only.
        """
        known: dict[str, dict[str, dict[str, Any]]] | None = self._memo.get(_LISTINGS)
        if known is None:
            known = self.memo(_LISTINGS, dict)
        found = known.get(alias)
        if found is None:
            record = self.servers.get(alias)
            found = known[alias] = listed_by_name(record, self.blobs) if record is not None else {}
        return found

    def calls(self) -> list[tuple[int, CallEvent]]:
        return list(self.call_events())

    def call_events(self) -> tuple[tuple[int, CallEvent], ...]:
        """:meth:`calls`, shared (not copied): read-only."""
        found: tuple[tuple[int, CallEvent], ...] | None = self._memo.get(_CALLS)
        if found is None:
            found = self.memo(_CALLS, lambda: tuple(self._of_kind(CallEvent)))
        return found

    def messages(self) -> list[tuple[int, MessageEvent]]:
        return list(self.message_events())

    def messages_to_client(self) -> tuple[tuple[int, MessageEvent], ...]:
        """:meth:`message_events` whose direction is :attr:`Direction.SERVER_TO_CLIENT`, in order (read-only)."""
        return self._by_direction()[1]

    def messages_to_server(self) -> tuple[tuple[int, MessageEvent], ...]:
        """:meth:`message_events` whose direction is :attr:`Direction.CLIENT_TO_SERVER`, in order (read-only)."""
        return self._by_direction()[0]

    def _by_direction(self) -> tuple[tuple[tuple[int, MessageEvent], ...], tuple[tuple[int, MessageEvent], ...]]:
        found = self._memo.get(_DIRECTIONS)
        if found is None:
            found = self.memo(_DIRECTIONS, self._split_directions)
        return found

    def _split_directions(
        self,
    ) -> tuple[tuple[tuple[int, MessageEvent], ...], tuple[tuple[int, MessageEvent], ...]]:
        to_server: list[tuple[int, MessageEvent]] = []
        to_client: list[tuple[int, MessageEvent]] = []
        for entry in self.message_events():
            direction = entry[1].direction
            if direction is Direction.CLIENT_TO_SERVER:
                to_server.append(entry)
            elif direction is Direction.SERVER_TO_CLIENT:
                to_client.append(entry)
        return tuple(to_server), tuple(to_client)

    def message_events(self) -> tuple[tuple[int, MessageEvent], ...]:
        """:meth:`messages`, shared (not copied): read-only."""
        found: tuple[tuple[int, MessageEvent], ...] | None = self._memo.get(_MESSAGES)
        if found is None:
            found = self.memo(_MESSAGES, lambda: tuple(self._of_kind(MessageEvent)))
        return found

    def faults(self) -> list[tuple[int, FaultEvent]]:
        return list(self.memo(_FAULTS, lambda: tuple(self._of_kind(FaultEvent))))

    def events_of(self, kind: type[_E]) -> tuple[tuple[int, _E], ...]:
        """Each event that is a ``kind`` with its position, in order; once per run and kind (read-only)."""
        known: dict[type, tuple[tuple[int, Any], ...]] | None = self._memo.get(_OF_KIND)
        if known is None:
            known = self.memo(_OF_KIND, dict)
        found = known.get(kind)
        if found is None:
            found = known[kind] = tuple(self._of_kind(kind))
        return found

    def _of_kind(self, kind: type[_E]) -> list[tuple[int, _E]]:
        """Each event that is a ``kind`` (``isinstance``), with its position, in order."""
        by_type: dict[type, list[tuple[int, Any]]] | None = self._memo.get(_BY_TYPE)
        if by_type is None:
            by_type = self.memo(_BY_TYPE, self._events_by_type)
        lists = [found for kind_of, found in by_type.items() if issubclass(kind_of, kind)]
        if len(lists) == 1:
            return list(lists[0])
        return sorted((entry for found in lists for entry in found), key=lambda entry: entry[0])

    def _events_by_type(self) -> dict[type, list[tuple[int, Any]]]:
        """The run's events by their own type, each with its position, in order (one pass for every kind asked)."""
        by_type: dict[type, list[tuple[int, Any]]] = {}
        for entry in enumerate(self.events):
            found = by_type.get(type(entry[1]))
            if found is None:
                by_type[type(entry[1])] = [entry]
            else:
                found.append(entry)
        return by_type


def share_blob_readers(records: Iterable[RunRecord]) -> None:
    """Let runs that share a blob store share one reader of it: each blob read, and the store's folder listed,
    once for all of them rather than once per run (blobs are content-addressed: one digest, one text)."""
    readers: dict[int, tuple[ReadOnceBlobs, dict[str, str] | None]] = {}
    for record in records:
        store = record.blobs
        found = readers.get(id(store))
        if found is None:
            if type(store) is BlobStore:
                found = readers[id(store)] = (ReplayBlobs(store), blob_files(store.root))
            else:
                found = readers[id(store)] = (ReadOnceBlobs(store), None)
        reader, listed = found
        record.remember(_BLOBS, reader)
        if listed is not None:
            record.remember(_LISTED, listed)


"""The suffixes :meth:`BlobStore.path` looks for, in the order it looks for them."""


_resolved = internalized
"""The name this module's tests know :func:`testbed.events.internalized` by."""


_T = TypeVar("_T")
_UNSET: Any = object()
"""What :meth:`RunRecord.memo` finds where nothing is held yet."""
_NOTHING: dict[Any, Any] = {}
_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Types that hold no blob reference."""
_E = TypeVar("_E", bound=Event)
_CALLS, _MESSAGES, _FAULTS = ("record.calls", "record.messages", "record.faults")
_INTERNALIZED, _BLOBS, _PRESENT = ("record.internalized", "record.blobs", "record.blobs_present")
_TRUTHS, _LISTINGS, _DIRECTIONS = "record.truths", "record.listings", "record.messages_by_direction"
_OF_KIND, _BY_TYPE = "record.events_of_kind", "record.events_by_type"
_LISTED = "record.blobs_listed"
"""By digest, the blob files the runs' store held when :func:`share_blob_readers` listed it."""

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


_Experiment = tuple[ExperimentHeader, tuple[tuple[str, ServerRecord], ...], Path]
_per_experiment: dict[tuple[int, str], tuple[_Experiment, Any]] = {}
"""Values derived from one experiment (its header, server records by alias and blob store root), by the header's
identity and a key."""


def per_experiment(record: RunRecord, key: str, compute: Callable[[], _T]) -> _T:
    """``compute()``, once per header object, servers (the same records under the same aliases, in order) and blob
    store root, and ``key`` (shared by every run of an experiment: treat it as read-only)."""
    cached = _per_experiment.get((id(record.header), key))
    if cached is not None and _same_experiment(cached[0], record):
        return cached[1]  # type: ignore[no-any-return]
    value = compute()
    if len(_per_experiment) >= 1024:
        _per_experiment.clear()
    experiment = (record.header, tuple(record.servers.items()), record.blobs.root)  # the header's id stays its own
    _per_experiment[(id(record.header), key)] = (experiment, value)
    return value


def _same_experiment(experiment: _Experiment, record: RunRecord) -> bool:
    """Whether ``record`` has the experiment's header object, server records (by alias, in order) and blob root."""
    header, servers, root = experiment
    if header is not record.header or len(servers) != len(record.servers):
        return False
    if root is not record.blobs.root and root != record.blobs.root:
        return False
    return all(
        alias == other_alias and server is other
        for (alias, server), (other_alias, other) in zip(servers, record.servers.items(), strict=True)
    )


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
