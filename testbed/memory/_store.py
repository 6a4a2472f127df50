"""The context store: versioned, namespaced, run-contained entries with lifetimes, provenance and a GC."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from testbed.memory._model import Entry, EntryRef, MemoryAccessError, Namespace, Provenance

__all__ = ["ContextStore", "Listener"]

Listener = Callable[[Entry], None]
"""Called with each new entry version (after the store's lock is released); must not raise."""


class ContextStore:
    """Entries per run: each run's entries are readable from that run only (its sandbox), never from another.

    Versions count up per (namespace, key) from 1. Lifetimes run on the run's logical clock: an entry with a
    TTL reads as expired from ``created_at + ttl`` on, and :meth:`gc` drops it (a late read still says
    "expired", not "unknown"). To bound memory, the ``max_runs`` most recently written runs are kept; an
    evicted run's references read as unknown. Safe to use from several threads.
    """

    def __init__(self, *, max_runs: int = 256) -> None:
        self._runs: OrderedDict[str, dict[EntryRef, Entry]] = OrderedDict()
        self._versions: dict[tuple[Namespace, str], int] = {}
        self._expired: dict[str, set[EntryRef]] = {}
        self._listeners: dict[object, Listener] = {}
        self._max_runs = max_runs
        self._lock = threading.Lock()

    def put(
        self,
        namespace: Namespace,
        key: str,
        value: Any,
        *,
        clock: float,
        provenance: Provenance,
        ttl_s: float | None = None,
        idempotent: bool = False,
    ) -> Entry:
        """Write the next version of ``key`` in ``namespace`` at ``clock``; return the entry written.

        ``idempotent``: the key names the content (a digest of the value), so a write whose provenance is the
        latest live version's writes nothing and returns that version: the same value from the same call, written
        by concurrent calls in any order, is one entry, and versions do not depend on that order.
        """
        if ttl_s is not None and not ttl_s > 0:
            raise MemoryAccessError(f"ttl_s: must be positive, got {ttl_s!r}")
        with self._lock:
            version = self._versions.get((namespace, key), 0)
            held = self._runs.get(namespace.run, {}).get(EntryRef(namespace, key, version)) if version else None
            if idempotent and held is not None and held.provenance == provenance and not held.expired(clock):
                return held
            version += 1
            ref = EntryRef(namespace, key, version)
            entry = Entry(ref, value, clock, None if ttl_s is None else clock + ttl_s, provenance)
            self._versions[(namespace, key)] = version
            entries = self._runs.setdefault(namespace.run, {})
            self._runs.move_to_end(namespace.run)
            entries[ref] = entry
            self._evict_runs()
            listeners = list(self._listeners.values())
        for listener in listeners:
            listener(entry)
        return entry

    def get(self, uri: str, *, run: str, clock: float, argument: str = "reference") -> Entry:
        """The entry ``uri`` names, read from ``run`` at ``clock``.

        Raises:
            MemoryAccessError: malformed, written by another run, unknown (or evicted), or expired at ``clock``;
                the message names ``argument`` and the reference.
        """
        ref = EntryRef.parse(uri, argument=argument)
        if ref.namespace.run != run:
            raise MemoryAccessError(f"{argument}: {uri!r} belongs to {ref.namespace.run!r}, not to this run ({run!r})")
        with self._lock:
            entry = self._runs.get(run, {}).get(ref)
            dropped = ref in self._expired.get(run, ())
        if entry is None:
            why = "expired (dropped by the GC)" if dropped else "unknown in this run"
            raise MemoryAccessError(f"{argument}: {uri!r} is {why}")
        if entry.expired(clock):
            raise MemoryAccessError(f"{argument}: {uri!r} expired at {entry.expires_at:g} s (now {clock:g} s)")
        return entry

    def peek(self, uri: str) -> Entry | None:
        """The entry ``uri`` names whatever its run and lifetime (for inspection and resource reads), or ``None``."""
        ref = EntryRef.parse(uri)
        with self._lock:
            return self._runs.get(ref.namespace.run, {}).get(ref)

    def latest(self, namespace: Namespace, key: str) -> Entry | None:
        """The newest version of ``key`` still held, or ``None``."""
        with self._lock:
            version = self._versions.get((namespace, key))
            if version is None:
                return None
            return self._runs.get(namespace.run, {}).get(EntryRef(namespace, key, version))

    def entries(self, run: str | None = None) -> list[Entry]:
        """The entries held (of one run, or of all), in reference order."""
        with self._lock:
            runs = [run] if run is not None else list(self._runs)
            found = [entry for name in runs for entry in self._runs.get(name, {}).values()]
        return sorted(found, key=lambda entry: entry.ref)

    def gc(self, clock: float, *, run: str | None = None) -> list[EntryRef]:
        """Drop the entries expired at ``clock`` (of one run, or of all); return their references, sorted."""
        dropped: list[EntryRef] = []
        with self._lock:
            for name in [run] if run is not None else list(self._runs):
                entries = self._runs.get(name, {})
                gone = [ref for ref, entry in entries.items() if entry.expired(clock)]
                for ref in gone:
                    del entries[ref]
                self._expired.setdefault(name, set()).update(gone)
                dropped += gone
        return sorted(dropped)

    def drop_run(self, run: str) -> int:
        """Forget everything ``run`` wrote; return how many entries were dropped."""
        with self._lock:
            entries = self._runs.pop(run, {})
            self._expired.pop(run, None)
            for namespace, key in [k for k in self._versions if k[0].run == run]:
                del self._versions[(namespace, key)]
        return len(entries)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every entry written from now on; return an idempotent unsubscribe."""
        token = object()
        with self._lock:
            self._listeners[token] = listener

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.pop(token, None)

        return unsubscribe

    def __len__(self) -> int:
        with self._lock:
            return sum(len(entries) for entries in self._runs.values())

    def _evict_runs(self) -> None:
        while len(self._runs) > self._max_runs:
            run, _ = self._runs.popitem(last=False)
            self._expired.pop(run, None)
            for namespace, key in [k for k in self._versions if k[0].run == run]:
                del self._versions[(namespace, key)]
