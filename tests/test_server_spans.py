"""The MCP SDK's server span per message is started only when someone records it."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from servers._tools import spans_recorded
from testbed.telemetry.export import span_session


def test_no_server_span_is_started_when_no_tracer_provider_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    assert not spans_recorded()


def test_a_tracer_provider_a_user_installed_gets_the_server_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    assert spans_recorded()


def test_server_spans_are_recorded_only_inside_a_testbed_span_session(tmp_path: Path) -> None:
    with span_session(tmp_path / "spans.jsonl", salt="server-spans"):
        assert spans_recorded()
    assert not spans_recorded()  # the testbed's provider stays installed, recording nothing between sessions
