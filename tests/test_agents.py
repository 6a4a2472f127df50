"""Agents of every orchestration mode run real scenarios in process, record what they decided, and replay.

Models are faked here where the point is the agent's logic (a scripted language model, fixed
similarities); tests/test_agents_models.py runs the real embedded models.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from agents import AgentModels, MultiAgentSpec
from agents._embedding import RecordingRetrieval
from testbed.check import in_process
from testbed.events import CallEvent, LLMEvent, MessageEvent, PlanEvent, RetrievalEvent, RunFinished, read_events
from testbed.llm import LLMFailure, RecordingLLM
from testbed.orchestrator import build_agent, replay_experiment, run_experiment
from testbed.protocol import AGENT_META_KEY
from testbed.scenario import Scenario, load_scenario
from testbed.validators import validate_experiment
from tests._helpers import ScriptedLLM

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"


class FixedEmbedder:
    """Embeds a text as a one-hot vector of the first keyword it contains (detect, segment, crop)."""

    model = "fixed-keywords"

    def embed(self, texts: list[str]) -> Any:
        import numpy as np

        keywords = ("detect", "segment", "crop")
        rows = []
        for text in texts:
            hits = [text.lower().find(k) for k in keywords]
            first = min((h, i) for i, h in enumerate(hits) if h >= 0)[1] if any(h >= 0 for h in hits) else 0
            rows.append(np.eye(3, dtype=np.float32)[first])
        return np.stack(rows)


def _scenario(name: str, runs: int, **updates: Any) -> Scenario:
    return in_process(load_scenario(V1 / f"{name}.yaml")).model_copy(update={"runs": runs, **updates})


def _record(scenario: Scenario, out: Path, models: AgentModels) -> None:
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu", models=models))


def _events(out: Path) -> list[Any]:
    return read_events(out).events


# --- llm (dynamic orchestration) --------------------------------------------------------------


def test_an_llm_agent_builds_the_graph_step_by_step_and_replay_needs_no_model(tmp_path: Path) -> None:
    backend = ScriptedLLM()
    _record(_scenario("llm_detect_crop", 2), tmp_path / "llm", AgentModels(llm=RecordingLLM(backend)))
    events = _events(tmp_path / "llm")

    llm_events = [e for e in events if isinstance(e, LLMEvent)]
    plans = [e for e in events if isinstance(e, PlanEvent)]
    calls = [e for e in events if isinstance(e, CallEvent)]
    assert [(e.run, e.seq, e.outcome) for e in llm_events] == [(r, s, "ok") for r in (0, 1) for s in (0, 1, 2)]
    assert [e.plan.get("finish", False) or e.plan["node"]["id"] for e in plans if e.run == 0] == [
        "detect",
        "crop",
        True,
    ]
    assert all(plan.valid for plan in plans)
    assert {(c.node, c.tool) for c in calls} == {("detect", "detect"), ("crop", "crop")}
    assert len(backend.requests) == 6
    # The model's request carries the constraining schema built from the listed tools; finish is
    # offered only once a call has run.
    offered = [{c["properties"]["tool"]["const"] for c in e.request["schema"]["anyOf"]} for e in llm_events[:2]]
    assert offered == [{"det.detect", "crop.crop"}, {"det.detect", "crop.crop", "finish"}]

    report = anyio.run(lambda: replay_experiment(tmp_path / "llm"))
    assert report.divergence is None, str(report.divergence)
    assert len(backend.requests) == 6, "replay asked the model"


def test_an_llm_reply_that_is_not_a_plan_is_a_classified_failure_of_its_run(tmp_path: Path) -> None:
    backend = ScriptedLLM(replies=['{"tool": "det.detect", "arguments": {"image": "$scene.image"}', "not json"])
    _record(_scenario("llm_detect_crop", 2), tmp_path / "bad", AgentModels(llm=RecordingLLM(backend)))
    events = _events(tmp_path / "bad")

    finished = [e for e in events if isinstance(e, RunFinished)]
    assert len(finished) == 2, "every run is recorded"
    assert all(e.error is not None and e.error.startswith("llm invalid_plan:") for e in finished)
    plans = [e for e in events if isinstance(e, PlanEvent)]
    assert [p.valid for p in plans] == [False, False]
    assert "not JSON" in plans[0].problems[0] or "not JSON" in plans[1].problems[0]
    assert not [e for e in events if isinstance(e, CallEvent)]


def test_an_unreachable_llm_endpoint_fails_each_run_without_stopping_the_experiment(tmp_path: Path) -> None:
    backend = ScriptedLLM(failure=LLMFailure.UNREACHABLE)
    _record(_scenario("llm_detect_crop", 2), tmp_path / "down", AgentModels(llm=RecordingLLM(backend)))
    events = _events(tmp_path / "down")

    assert [e.error for e in events if isinstance(e, RunFinished)] == [
        "llm unreachable: connection refused by 127.0.0.1:9"
    ] * 2
    assert [(e.outcome, e.reply) for e in events if isinstance(e, LLMEvent)] == [("unreachable", None)] * 2
    report = anyio.run(lambda: replay_experiment(tmp_path / "down"))
    assert report.divergence is None, str(report.divergence)


def test_a_call_the_model_plans_with_arguments_its_tool_rejects_makes_the_plan_invalid(tmp_path: Path) -> None:
    # detect.image gets a number: the call is still made (the server's answer is data), the plan is invalid.
    reply = json.dumps({"tool": "det.detect", "for_each": None, "arguments": {"image": "$scene.width"}})
    backend = ScriptedLLM(replies=[reply, json.dumps({"tool": "finish"})])
    _record(_scenario("llm_detect_crop", 1), tmp_path / "args", AgentModels(llm=RecordingLLM(backend)))
    events = _events(tmp_path / "args")

    plans = [e for e in events if isinstance(e, PlanEvent)]
    assert [p.valid for p in plans] == [False, True]
    assert "detect: image:" in plans[0].problems[0]
    assert [c.outcome.value for c in events if isinstance(c, CallEvent)] == ["tool_error"]
    ids = {v.id for v in validate_experiment(tmp_path / "args").violations}
    assert "schema.arguments_invalid" in ids


# --- retrieval-augmented selection ------------------------------------------------------------


def test_a_retrieval_agent_converting_boxes_itself_is_reported_as_conn_untracked_bridging(tmp_path: Path) -> None:
    retrieval = RecordingRetrieval(FixedEmbedder())
    _record(_scenario("retrieval_detect_crop", 2), tmp_path / "ret", AgentModels(retrieval=retrieval))
    events = _events(tmp_path / "ret")

    selections = [e for e in events if isinstance(e, PlanEvent) and "steps" in e.plan]
    assert [step["call"] for step in selections[0].plan["steps"]] == ["det.detect", "crop.crop"]
    assert len([e for e in events if isinstance(e, RetrievalEvent)]) == 2
    crops = [e for e in events if isinstance(e, CallEvent) and e.tool == "crop"]
    assert crops
    assert all(not c.adapters for c in crops)
    detections = {e.run: e.payload["detections"] for e in events if isinstance(e, CallEvent) and e.tool == "detect"}
    first = crops[0]
    x1, y1, x2, y2 = detections[first.run][first.item]["bbox"]
    assert first.arguments["box"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-3), "converted to xywh"
    assert all(e.task_passed for e in events if isinstance(e, RunFinished))

    bridging = [v for v in validate_experiment(tmp_path / "ret").violations if v.id == "conn.untracked_bridging"]
    assert {(v.node, v.item) for v in bridging} == {(c.node, c.item) for c in crops}

    report = anyio.run(lambda: replay_experiment(tmp_path / "ret"))
    assert report.divergence is None, str(report.divergence)


def test_declared_adapters_are_not_reported_as_conn_untracked_bridging(
    tmp_path: Path, recorded_scenario: Callable[[Scenario], Path]
) -> None:
    # detect_crop converts boxes on the edge with a declared adapter: conn.untracked_bridging must stay silent.
    scenario = _scenario("detect_crop", 2)
    shutil.copytree(recorded_scenario(scenario), tmp_path / "adapted")
    ids = {v.id for v in validate_experiment(tmp_path / "adapted").violations}
    assert "conn.untracked_bridging" not in ids


# --- multi-agent coordination -----------------------------------------------------------------


def test_a_worker_reading_another_workers_handle_is_reported_as_memory_cross_agent(
    tmp_path: Path, recorded_scenario: Callable[[Scenario], Path]
) -> None:
    scenario = _scenario("multi_detect_crop", 2)
    shutil.copytree(recorded_scenario(scenario), tmp_path / "multi")
    events = _events(tmp_path / "multi")

    calls = [e for e in events if isinstance(e, CallEvent)]
    assert {(c.node, c.agent) for c in calls} == {("put", "uploader"), ("detect", "detector"), ("crop", "cropper")}
    sent_agents = {
        (e.message.get("params") or {}).get("_meta", {}).get(AGENT_META_KEY)
        for e in events
        if isinstance(e, MessageEvent) and e.message.get("method") == "tools/call"
    }
    assert sent_agents == {"uploader", "detector", "cropper"}
    delegations = [e.plan["delegation"] for e in events if isinstance(e, PlanEvent) and e.agent == "planner"]
    assert delegations[0] == {"put": "uploader", "detect": "detector", "crop": "cropper"}

    cross = [v for v in validate_experiment(tmp_path / "multi").violations if v.id == "memory.cross_agent"]
    crops = [c for c in calls if c.node == "crop"]
    assert len(cross) == len(crops) > 0
    assert all("'cropper' read handle" in v.detail and "'uploader' created" in v.detail for v in cross)


def test_a_worker_reusing_its_own_handles_is_not_reported_as_memory_cross_agent(tmp_path: Path) -> None:
    scenario = _scenario("multi_detect_crop", 1)
    assert isinstance(scenario.agent, MultiAgentSpec)
    workers = (
        scenario.agent.workers[0].model_copy(update={"tools": ("store.put_image", "store.crop_image")}),
        scenario.agent.workers[1],
    )
    single = scenario.model_copy(update={"agent": scenario.agent.model_copy(update={"workers": workers})})
    anyio.run(lambda: run_experiment(single, out_dir=tmp_path / "own", device="cpu"))
    assert "memory.cross_agent" not in {v.id for v in validate_experiment(tmp_path / "own").violations}


def test_build_agent_refuses_a_planning_agent_without_its_model() -> None:
    from testbed._errors import TestbedError

    with pytest.raises(TestbedError, match=r"agent\.llm: the llm agent needs a language model client"):
        build_agent(_scenario("llm_detect_crop", 1), AgentModels())
