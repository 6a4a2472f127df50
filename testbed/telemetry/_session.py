"""A span session: one OpenTelemetry tracer provider collecting an experiment's spans, written as OTLP JSON.

While a session is active, the process's global tracer provider (installed once, see :func:`_install`)
hands the MCP SDK's spans to it; when none is, every span is the API's no-op span, as if OpenTelemetry were
not configured, so nothing is recorded and no ``traceparent`` is sent.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from testbed import __version__
from testbed.telemetry._hook import RUN, active_session, set_active
from testbed.telemetry._ids import CallSiteIds
from testbed.telemetry._otlp_json import otlp_json

__all__ = ["SpanSession", "span_session"]

SCOPE_NAME: Final = "mcp-vision-testbed"
_install_lock = threading.Lock()
_installed = False


class _Collector(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def take(self) -> list[ReadableSpan]:
        with self._lock:
            taken, self.spans = self.spans, []
        return taken


class SpanSession:
    """Collects the spans of one experiment and appends them to ``path``, one line per run (per trace)."""

    def __init__(self, path: Path, *, salt: str) -> None:
        self.path = path
        self.ids = CallSiteIds(salt)
        self._collector = _Collector()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": SCOPE_NAME, "service.version": __version__}),
            id_generator=self.ids,
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self._collector))
        self.tracer = self.provider.get_tracer(SCOPE_NAME, __version__)

    def discard(self) -> None:
        """Drop the spans ended so far and restart every span ID's count, for work that is about to be done again
        (a replay that falls back from the direct path to MCP sessions): its spans then get the same IDs."""
        self._collector.take()
        self.ids.forget_all()

    def write(self) -> int:
        """Append the spans ended so far: one ``ExportTraceServiceRequest`` per run (a run is one trace), then one
        with the spans outside any run (servers' handshakes and listings); return how many lines."""
        by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
        for span in self._collector.take():
            by_trace[span.context.trace_id].append(span)
        by_run: dict[int, list[ReadableSpan]] = defaultdict(list)
        for spans in by_trace.values():
            by_run[_run_of(spans)].extend(spans)
        if not by_run:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        order = sorted(by_run, key=lambda run: (run == _NO_RUN, run))
        with self.path.open("a", encoding="utf-8") as out:
            for run in order:
                out.write(otlp_json(encode_spans(by_run[run])) + "\n")
                self.ids.forget_run(run)
        return len(order)


_NO_RUN: Final = -1


def _run_of(spans: Sequence[ReadableSpan]) -> int:
    """The run a trace's spans belong to (the testbed's call spans name it), or ``_NO_RUN``."""
    for span in spans:
        run = span.attributes.get(RUN) if span.attributes else None
        if isinstance(run, int):
            return run
    return _NO_RUN


@contextmanager
def span_session(path: Path, *, salt: str) -> Iterator[SpanSession]:
    """Collect every call's span (and the MCP SDK's) while inside; append them to ``path`` on the way out.

    Raises:
        RuntimeError: a session is already active in this process.
    """
    _install()
    active = active_session()
    if active is not None:
        raise RuntimeError(f"a span session is already writing {active.path}")
    session = SpanSession(path, salt=salt)
    set_active(session)
    try:
        yield session
    finally:
        set_active(None)
        session.write()
        session.provider.shutdown()


def _install() -> None:
    """Make the switching provider the process's global one (once), so the MCP SDK's tracer reaches sessions."""
    global _installed
    with _install_lock:
        if not _installed:
            trace.set_tracer_provider(_SwitchingProvider())
            _installed = True


class _SwitchingTracer(trace.Tracer):
    """A tracer that is the active session's while one is active, else the no-op tracer."""

    def __init__(self, name: str, version: str | None) -> None:
        self._name = name
        self._version = version
        self._noop = trace.NoOpTracer()

    def _target(self) -> trace.Tracer:
        session = active_session()
        return self._noop if session is None else session.provider.get_tracer(self._name, self._version)

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._target().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().start_as_current_span(*args, **kwargs)


class _SwitchingProvider(trace.TracerProvider):
    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return _SwitchingTracer(instrumenting_module_name, instrumenting_library_version)
