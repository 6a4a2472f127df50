"""Span sessions and their switches (imports the OpenTelemetry SDK; import it only to export spans)."""

from testbed.telemetry._otlp_json import otlp_json, parse_otlp_json
from testbed.telemetry._scenario import scenario_spans, spans_setting
from testbed.telemetry._session import SpanSession, span_session

__all__ = ["SpanSession", "otlp_json", "parse_otlp_json", "scenario_spans", "span_session", "spans_setting"]
