"""OpenTelemetry spans per tool call, exported as OTLP JSON to ``DIR/spans.otlp.jsonl``.

Off by default: without an active session (:func:`testbed.telemetry.export.span_session`)
every span is the OpenTelemetry API's no-op, and :func:`call_span` returns a
shared no-op; the SDK is not even imported. With one (``testbed run --spans``,
or ``observability: {spans: true}`` in a scenario), each tool call gets a span
with its run, node, item, server, tool and outcome, the MCP SDK's own client
and (in-process) server spans nest under it, and each run's spans are one line
of the file: an ``ExportTraceServiceRequest`` in the JSON form the
OpenTelemetry collector's ``otlpjsonfile`` receiver reads (OTLP JSON: hex
trace and span IDs, integer enums; ``export.parse_otlp_json`` reads a line
back). ``run_experiment`` and ``replay_experiment`` open the session of a
scenario that asks for spans themselves (:func:`scenario_spans`), so a traced
recording replays with the same ``traceparent`` values.
"""

from testbed.telemetry._hook import (
    ITEM,
    NODE,
    OUTCOME,
    RUN,
    SERVER,
    SPANS_FILE,
    TOOL,
    CallSpan,
    active_session,
    call_span,
)
from testbed.telemetry._scenario import scenario_spans

__all__ = [
    "ITEM",
    "NODE",
    "OUTCOME",
    "RUN",
    "SERVER",
    "SPANS_FILE",
    "TOOL",
    "CallSpan",
    "active_session",
    "call_span",
    "scenario_spans",
]
