"""OpenTelemetry spans per call: off by default, one OTLP JSON request per run, read back with the OTLP classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from testbed._errors import TestbedError
from testbed.events import CallEvent, CallOutcomeKind, MessageEvent, read_events
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.scenario import Scenario, load_scenario
from testbed.telemetry import SPANS_FILE, active_session, call_span
from testbed.telemetry.export import otlp_json, parse_otlp_json, span_session, spans_setting

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"


def _scenario(runs: int = 2, **updates: Any) -> Scenario:
    return load_scenario(V1 / "detect_crop.yaml").model_copy(update={"runs": runs, **updates})


def _requests(path: Path) -> list[ExportTraceServiceRequest]:
    return [parse_otlp_json(line) for line in path.read_text().splitlines()]


def _traced_scenario(runs: int = 2) -> Scenario:
    """The v1 scenario asking for spans itself (``observability: {spans: true}``), not through a caller's session."""
    return Scenario.model_validate(_scenario(runs).model_dump(mode="json") | {"observability": {"spans": True}})


def _spans(request: ExportTraceServiceRequest) -> list[tuple[str, Span]]:
    return [
        (scope.scope.name, span) for rs in request.resource_spans for scope in rs.scope_spans for span in scope.spans
    ]


def _attributes(span: Span) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("traced") / "exp"
    with span_session(out / SPANS_FILE, salt="detect_crop/seed-0"):
        anyio.run(lambda: run_experiment(_scenario(), out_dir=out, workers=1))
    return out


@pytest.mark.slow
def test_every_call_has_one_span_with_its_run_node_item_tool_and_outcome(traced: Path) -> None:
    calls = [
        e for e in read_events(traced).events if isinstance(e, CallEvent) and e.outcome is not CallOutcomeKind.SKIPPED
    ]
    requests = _requests(traced / SPANS_FILE)
    ours = [
        _attributes(span) | {"trace": span.trace_id}
        for request in requests
        for scope, span in _spans(request)
        if scope == "mcp-vision-testbed"
    ]

    assert len(requests) == 3  # one ExportTraceServiceRequest per run, then the spans outside any run
    assert sorted(
        (a["testbed.run"], a["testbed.node"], a["testbed.item"], a["gen_ai.tool.name"], a["testbed.outcome"])
        for a in ours
    ) == sorted((c.run, c.node, c.item, c.tool, c.outcome.value) for c in calls)
    assert {a["testbed.server"] for a in ours} == {c.server for c in calls}
    assert len({a["trace"] for a in ours if a["testbed.run"] == 0}) == 1  # a run is one trace
    assert len({a["trace"] for a in ours}) == 2


@pytest.mark.slow
def test_the_sdk_client_and_server_spans_nest_under_the_call_span(traced: Path) -> None:
    first = _requests(traced / SPANS_FILE)[0]
    spans = _spans(first)
    by_id = {span.span_id: (scope, span) for scope, span in spans}
    sends = [span for scope, span in spans if span.name.startswith("MCP send tools/call")]
    served = [span for scope, span in spans if span.name.startswith("tools/call")]

    assert sends
    assert len(sends) == len(served)
    assert all(by_id[send.parent_span_id][1].name.startswith("testbed call") for send in sends)
    assert all(by_id[serve.parent_span_id][1].name.startswith("MCP send tools/call") for serve in served)
    assert {span.trace_id for _, span in spans} == {sends[0].trace_id}


@pytest.mark.slow
def test_a_traced_recording_replays_exactly_with_spans_on(traced: Path, tmp_path: Path) -> None:
    with span_session(tmp_path / SPANS_FILE, salt="detect_crop/seed-0"):
        report = anyio.run(lambda: replay_experiment(traced))

    assert report.divergence is None
    assert len(_requests(tmp_path / SPANS_FILE)) >= 2


@pytest.mark.slow
def test_an_experiment_asking_for_spans_records_them_and_replays_exactly_without_a_callers_session(
    tmp_path: Path,
) -> None:
    out = tmp_path / "exp"
    anyio.run(lambda: run_experiment(_traced_scenario(), out_dir=out, workers=4))
    sent = [
        e.message["params"]["_meta"]["traceparent"]
        for e in read_events(out).events
        if isinstance(e, MessageEvent) and e.run is not None and "_meta" in e.message.get("params", {})
    ]
    lines = [json.loads(line) for line in (out / SPANS_FILE).read_text().splitlines()]
    spans = [span for line in lines for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]
    report = anyio.run(lambda: replay_experiment(out))

    assert active_session() is None
    assert sent
    assert report.divergence is None
    assert report.events > len(sent)
    assert all(len(span["traceId"]) == 32 and len(span["spanId"]) == 16 for span in spans)  # OTLP JSON: hex IDs
    assert all(isinstance(span["kind"], int) for span in spans)  # and integer enums
    assert {f"00-{span['traceId']}-{span['spanId']}-01" for span in spans} >= set(sent)


def test_otlp_json_round_trips_with_hex_ids_and_rejects_base64_ones() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name, span.kind = bytes(range(16)), bytes(range(8)), "s", Span.SPAN_KIND_CLIENT
    line = otlp_json(request)
    document = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]

    assert document["traceId"] == bytes(range(16)).hex()
    assert document["kind"] == Span.SPAN_KIND_CLIENT
    assert parse_otlp_json(line) == request
    with pytest.raises(ValueError, match="IDs are hex strings"):
        parse_otlp_json(line.replace(document["traceId"], "AAECAwQFBgcICQoLDA0ODw=="))


@pytest.mark.slow
def test_spans_are_off_by_default_and_then_nothing_is_sent_or_written(tmp_path: Path) -> None:
    anyio.run(lambda: run_experiment(_scenario(runs=1), out_dir=tmp_path, workers=1))
    messages = [e for e in read_events(tmp_path).events if isinstance(e, MessageEvent)]

    assert active_session() is None
    assert not (tmp_path / SPANS_FILE).exists()
    assert messages
    assert not any("traceparent" in json.dumps(m.message) for m in messages)


def test_the_call_hook_is_a_shared_no_op_without_a_session() -> None:
    assert call_span("detect") is call_span("crop")


def test_run_spans_turn_on_from_the_flag_or_the_scenario_and_force_one_local_worker(tmp_path: Path) -> None:
    flagged, workers, session = spans_setting(_scenario(), tmp_path, spans=True, workers=None, executor="local")
    document = _scenario().model_dump(mode="json") | {"observability": {"spans": True}}
    keyed = Scenario.model_validate(document)
    from_key = spans_setting(keyed, tmp_path, spans=False, workers=1, executor="local")
    off = spans_setting(_scenario(), tmp_path, spans=False, workers=4, executor="local")

    assert flagged.observability.spans
    assert workers == 1
    assert session is not None
    assert from_key[0].observability.spans
    assert from_key[1] == 1
    assert not off[0].observability.spans
    assert off[1] == 4
    with pytest.raises(TestbedError, match=r"^--spans: .* use --workers 1, not 3$"):
        spans_setting(_scenario(), tmp_path, spans=True, workers=3, executor="local")
    with pytest.raises(TestbedError, match="use --executor local"):
        spans_setting(_scenario(), tmp_path, spans=True, workers=None, executor="ray")


@pytest.mark.slow
def test_testbed_run_spans_writes_the_file(tmp_path: Path) -> None:
    from testbed.cli import main

    scenario = tmp_path / "s.yaml"
    scenario.write_text((V1 / "detect_crop.yaml").read_text())
    result = CliRunner().invoke(
        main, ["run", str(scenario), "--runs", "1", "--out", str(tmp_path / "exp"), "--spans", "--no-violations"]
    )

    assert result.exit_code == 0, result.output
    assert len(_requests(tmp_path / "exp" / SPANS_FILE)) >= 1
