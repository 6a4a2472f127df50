"""Experiments end to end: every v1 scenario runs, every message is recorded, runs are deterministic."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from testbed.cli import main
from testbed.events import (
    WALL_CLOCK_FIELDS,
    BlobStore,
    CallEvent,
    ExperimentHeader,
    MessageEvent,
    RunFinished,
    RunStarted,
    internalize,
    read_events,
)
from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"
V1_SCENARIOS = sorted(V1.glob("*.yaml"))
SLOW_V1 = {"faults", "llm_detect_crop", "llm_detect_segment_crop"}
"""v1 scenarios that take well over 5 s to run three times (stdio servers, the embedded LLM)."""


def _run(name: str, out: Path, *, runs: int = 3, transport: str | None = None, seed: int | None = None) -> None:
    scenario = load_scenario(V1 / f"{name}.yaml")
    updates: dict[str, Any] = {"runs": runs}
    if seed is not None:
        updates["seed"] = seed
    scenario = scenario.model_copy(update=updates)
    anyio.run(
        lambda: run_experiment(scenario, out_dir=out, transport=transport, device="cpu")  # type: ignore[arg-type]
    )


def _comparable(out: Path) -> list[dict[str, Any]]:
    """Events without wall-clock fields, the header's environment, or JSON-RPC ids (concurrency orders ids)."""
    comparable = []
    for event in read_events(out).events:
        document = event.model_dump(mode="json", exclude=set(WALL_CLOCK_FIELDS))
        if isinstance(event, ExperimentHeader):
            document = {"scenario": document["scenario"], "seed": document["seed"], "runs": document["runs"]}
        if isinstance(event, MessageEvent):
            document["message"].pop("id", None)
            document["message"].get("params", {}).get("_meta", {}).pop("io.modelcontextprotocol/clientInfo", None)
        comparable.append(document)
    return comparable


def test_v1_suite_has_a_compatible_and_an_incompatible_version_of_each_pipeline() -> None:
    names = {path.stem for path in V1_SCENARIOS}
    for pipeline in ("detect_crop", "detect_segment_crop", "fanout"):
        assert {pipeline, f"{pipeline}_incompatible"} <= names


@pytest.mark.parametrize(
    "scenario_file",
    [pytest.param(path, marks=pytest.mark.slow) if path.stem in SLOW_V1 else path for path in V1_SCENARIOS],
    ids=lambda path: path.stem,
)
def test_every_v1_scenario_runs_three_seeded_runs_and_records_every_message(
    scenario_file: Path, tmp_path: Path
) -> None:
    _run(scenario_file.stem, tmp_path)
    log = read_events(tmp_path)
    assert log.torn_line is None
    kinds = Counter(event.event for event in log.events)
    assert kinds["header"] == 1
    assert kinds["finished"] == 1
    assert kinds["run_started"] == kinds["run_finished"] == 3
    calls = [e for e in log.events if isinstance(e, CallEvent) and e.outcome.value != "skipped"]
    messages = [e for e in log.events if isinstance(e, MessageEvent) and e.run is not None]
    for call in calls:
        own = [
            m for m in messages if (m.run, m.node, m.item, m.server) == (call.run, call.node, call.item, call.server)
        ]
        directions = {m.direction.value for m in own}
        methods = [m.message.get("method") for m in own]
        assert "tools/call" in methods, (call.node, call.item)
        if call.outcome.value in ("ok", "tool_error"):
            assert directions == {"c->s", "s->c"}, (call.node, call.item)
    finished = [e for e in log.events if isinstance(e, RunFinished)]
    scenario = load_scenario(scenario_file)
    if not scenario.expect and not scenario.faults and not scenario.plans_for_itself:
        assert all(run.task_passed for run in finished), [run.task_detail for run in finished]
    if scenario.plans_for_itself:
        assert kinds["plan"] >= 3, "every run records the agent's decisions"


def test_scene_images_are_stored_once_by_content_hash(tmp_path: Path) -> None:
    _run("detect_crop", tmp_path)
    log = read_events(tmp_path)
    blobs = BlobStore(tmp_path / "blobs")
    started = [e for e in log.events if isinstance(e, RunStarted)]
    for run in started:
        path = blobs.path(run.image_blob)
        assert path is not None
        assert path.suffix == ".png"
    detect_requests = [
        e.message
        for e in log.events
        if isinstance(e, MessageEvent) and e.node == "detect" and e.message.get("method") == "tools/call"
    ]
    assert all(request["params"]["arguments"]["image"] == {"$blob": run.image_blob}
               for request, run in zip(detect_requests, started, strict=True))  # fmt: skip
    restored = internalize(detect_requests[0], blobs)
    assert len(restored["params"]["arguments"]["image"]) > 1000


def test_same_seed_gives_the_same_events_apart_from_wall_clock(tmp_path: Path) -> None:
    _run("fanout", tmp_path / "a", seed=11)
    _run("fanout", tmp_path / "b", seed=11)
    assert _comparable(tmp_path / "a") == _comparable(tmp_path / "b")


def test_different_seeds_give_different_scenes(tmp_path: Path) -> None:
    _run("detect_crop", tmp_path / "a", runs=1, seed=1)
    _run("detect_crop", tmp_path / "b", runs=1, seed=2)
    first = [e for e in read_events(tmp_path / "a").events if isinstance(e, RunStarted)]
    second = [e for e in read_events(tmp_path / "b").events if isinstance(e, RunStarted)]
    assert first[0].image_blob != second[0].image_blob


def test_incompatible_pipeline_fails_its_task_where_the_compatible_one_passes(tmp_path: Path) -> None:
    _run("detect_segment_crop", tmp_path / "ok", runs=4)
    _run("detect_segment_crop_incompatible", tmp_path / "bad", runs=4)
    good = [e.task_passed for e in read_events(tmp_path / "ok").events if isinstance(e, RunFinished)]
    bad = [e.task_passed for e in read_events(tmp_path / "bad").events if isinstance(e, RunFinished)]
    assert all(good)
    assert not any(bad)


def test_header_records_versions_servers_tools_and_truth(tmp_path: Path) -> None:
    _run("detect_segment_crop", tmp_path, runs=1)
    header = read_events(tmp_path).events[0]
    assert isinstance(header, ExperimentHeader)
    assert {"mcp", "torch", "mcp-vision-testbed"} <= set(header.versions)
    assert set(header.weights) == {"detect", "segment"}
    by_alias = {server.alias: server for server in header.servers}
    assert set(by_alias) == {"det", "seg", "crop"}
    assert by_alias["det"].protocol_version
    assert by_alias["seg"].truth is not None
    assert by_alias["seg"].truth["name"] == "segment-rle"
    assert any(tool["name"] == "segment" for tool in by_alias["seg"].tools)


@pytest.mark.slow
def test_stdio_servers_record_the_same_calls_as_in_process(tmp_path: Path) -> None:
    _run("detect_segment_crop", tmp_path / "inproc", runs=2)
    _run("detect_segment_crop", tmp_path / "stdio", runs=2, transport="stdio")

    def calls(out: Path) -> list[tuple[Any, ...]]:
        return [
            (e.run, e.node, e.item, e.outcome.value, json.dumps(e.payload, sort_keys=True))
            for e in read_events(out).events
            if isinstance(e, CallEvent)
        ]

    assert calls(tmp_path / "inproc") == calls(tmp_path / "stdio")
    assert (tmp_path / "stdio" / "servers" / "det.stderr.log").exists()


@pytest.mark.slow
def test_http_transport_runs_a_scenario(tmp_path: Path) -> None:
    _run("detect_crop", tmp_path, runs=2, transport="http")
    header = read_events(tmp_path).events[0]
    assert isinstance(header, ExperimentHeader)
    assert {server.transport for server in header.servers} == {"http"}
    finished = [e for e in read_events(tmp_path).events if isinstance(e, RunFinished)]
    assert len(finished) == 2
    assert all(run.failed_calls == 0 for run in finished)


def test_cli_run_prints_a_summary_table(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = CliRunner().invoke(
        main, ["run", str(V1 / "detect_crop.yaml"), "--runs", "2", "--out", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert "task success" in result.output
    assert "2/2" in result.output
    assert (out / "events.jsonl").exists()


def test_cli_run_on_a_finished_experiment_says_so_and_changes_nothing(tmp_path: Path) -> None:
    _run("detect_crop", tmp_path, runs=1)
    before = (tmp_path / "events.jsonl").read_bytes()
    result = CliRunner().invoke(main, ["run", str(V1 / "detect_crop.yaml"), "--runs", "1", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "already finished" in result.output
    assert (tmp_path / "events.jsonl").read_bytes() == before


def test_unknown_server_is_one_clear_line_and_records_nothing(tmp_path: Path) -> None:
    scenario = (V1 / "detect_crop.yaml").read_text().replace("server: crop-xywh", "server: crop-nowhere")
    path = tmp_path / "bad.yaml"
    path.write_text(scenario)
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "exp")])
    assert result.exit_code != 0
    assert "unknown server 'crop-nowhere'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "exp" / "events.jsonl").exists()


def test_malformed_scenario_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text((V1 / "detect_crop.yaml").read_text().replace("runs: 20", "runs: -3"))
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "broken.yaml:" in lines[0]
    assert "runs" in lines[0]


def test_cli_lists_servers_and_exports_the_scenario_schema() -> None:
    runner = CliRunner()
    listed = runner.invoke(main, ["servers"])
    assert listed.exit_code == 0
    assert "detect-xyxy" in listed.output
    assert "segment-png" in listed.output
    schema = runner.invoke(main, ["scenario", "schema"])
    assert schema.exit_code == 0
    assert json.loads(schema.output)["title"] == "Scenario"


def test_cli_scenario_check_reports_each_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    result = CliRunner().invoke(main, ["scenario", "check", str(V1 / "detect_crop.yaml"), str(bad)])
    assert result.exit_code != 0
    assert "detect_crop.yaml: ok" in result.output
    assert "bad.yaml" in result.output


def test_cli_serve_rejects_an_unknown_server() -> None:
    result = CliRunner().invoke(main, ["serve", "no-such-server"])
    assert result.exit_code != 0
    assert "unknown server 'no-such-server'" in result.output


def test_server_that_cannot_start_is_a_clear_error_and_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import testbed.transport._connect as connect_module

    def exits_at_once(*_: object, **__: object) -> list[str]:
        return [sys.executable, "-c", "import sys; sys.exit(3)"]

    monkeypatch.setattr(connect_module, "_server_command", exits_at_once)
    out = tmp_path / "exp"
    command = ["run", str(V1 / "detect_crop.yaml"), "--transport", "stdio", "--out", str(out), "--device", "cpu"]
    # The monkeypatch reaches this process only, not worker processes.
    result = CliRunner().invoke(main, [*command, "--workers", "1"])
    assert result.exit_code != 0
    assert "failed to start" in result.output
    assert "Traceback" not in result.output
    assert not (out / "events.jsonl").exists()


def test_cli_run_ends_with_the_violation_rates_of_the_runs_it_executed(tmp_path: Path) -> None:
    out = tmp_path / "inc"
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(V1 / "detect_crop_incompatible.yaml"),
            "--runs",
            "2",
            "--out",
            str(out),
            "--transport",
            "inprocess",
        ],
    )
    assert result.exit_code == 0, result.output
    table = result.output.split("violation rates (all runs)", 1)[1]
    assert "coords.mismatch" in table
    assert "(2/2)" in table, "runs affected counts the two executed runs"
    assert f"testbed report {out}" in result.output
