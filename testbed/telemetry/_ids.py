"""Span and trace IDs derived from the call site, so recorded ``traceparent`` values replay exactly."""

from __future__ import annotations

import hashlib
import threading

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from testbed.telemetry._hook import opening_a_call_span
from testbed.transport import current_call

__all__ = ["CallSiteIds"]


class CallSiteIds(IdGenerator):
    """A run's spans share one trace (from the salt and the run); span IDs come from where the span starts.

    The SDK injects the client span's context into each request's ``_meta`` (``traceparent``), which the
    recording keeps, so those IDs must not depend on chance or timing: a call's own span takes its ID from
    the call site (run, node, item, server); a span started under a parent takes it from the parent's ID
    and how many children that parent has opened (the SDK's client span is the call span's only child);
    a parentless span at a call site (a listing's) from the site and how many such spans it has opened.
    Spans outside any call site (a server's own) get random IDs.
    """

    def __init__(self, salt: str) -> None:
        self._salt = salt
        self._random = RandomIdGenerator()
        self._opened: dict[tuple[object, ...], int] = {}
        self._lock = threading.Lock()

    def generate_trace_id(self) -> int:
        site = current_call.get()
        if site is None:
            return self._random.generate_trace_id()
        return _derived(128, self._salt, "trace", str(site.run))

    def generate_span_id(self) -> int:
        site = current_call.get()
        if site is None:
            return self._random.generate_span_id()
        where = (site.run, site.node, site.item, site.server)
        if opening_a_call_span():
            return _derived(64, self._salt, "call", *map(str, where))
        parent = trace.get_current_span().get_span_context()
        key: tuple[object, ...] = (site.run, "child", parent.span_id) if parent.is_valid else (*where, "root")
        with self._lock:
            opened = self._opened[key] = self._opened.get(key, 0) + 1
        return _derived(64, self._salt, *map(str, key), str(opened))

    def forget_all(self) -> None:
        """Drop every counter: the spans opened so far are opened again from the start."""
        with self._lock:
            self._opened.clear()

    def forget_run(self, run: int) -> None:
        """Drop the counters of ``run`` (its spans are written)."""
        with self._lock:
            for key in [key for key in self._opened if key[0] == run]:
                del self._opened[key]


def _derived(bits: int, *parts: str) -> int:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    value = int.from_bytes(digest[: bits // 8], "big")
    return value or 1  # zero is the invalid ID
