"""The planning agents with their real offline models: all-MiniLM-L6-v2 for retrieval, SmolLM2-135M for the
LLM agent (in process, and through llama.cpp's OpenAI-compatible server). Replays load no model."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from agents import LLMAgentSpec
from agents._embedding import MiniLMEmbedder
from testbed.check import in_process
from testbed.events import CallEvent, LLMEvent, PlanEvent, RetrievalEvent, RunFinished, read_events
from testbed.llm import EmbeddedBackend, OpenAICompatibleLLM
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.scenario import Scenario, load_scenario
from tests._helpers import NetworkAttempts
from tests._llama_server import SERVER_MODEL, llama_server

pytestmark = pytest.mark.slow  # real models: MiniLM, SmolLM2 in process and behind llama.cpp's server

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"


def _scenario(name: str, runs: int) -> Scenario:
    return in_process(load_scenario(V1 / f"{name}.yaml")).model_copy(update={"runs": runs})


def _forbid(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"replay used the model ({name})")

    monkeypatch.setattr(target, name, refuse)


def test_retrieval_agent_with_minilm_picks_detect_then_crop_and_replays_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "retrieval"
    anyio.run(lambda: run_experiment(_scenario("retrieval_detect_crop", 2), out_dir=out, device="cpu"))
    events = read_events(out).events

    selection = next(e for e in events if isinstance(e, PlanEvent) and "steps" in e.plan)
    assert [step["call"] for step in selection.plan["steps"]] == ["det.detect", "crop.crop"]
    retrievals = [e for e in events if isinstance(e, RetrievalEvent)]
    assert [e.model for e in retrievals] == ["all-MiniLM-L6-v2"] * 2
    assert all(-1.0 <= score <= 1.0 for e in retrievals for row in e.scores for score in row)

    _forbid(monkeypatch, MiniLMEmbedder, "embed")
    report = anyio.run(lambda: replay_experiment(out))
    assert report.divergence is None, str(report.divergence)


def test_llm_agent_with_the_embedded_model_runs_offline_and_replays_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, network_guard: NetworkAttempts
) -> None:
    out = tmp_path / "llm"
    anyio.run(lambda: run_experiment(_scenario("llm_detect_crop", 2), out_dir=out, device="cpu"))
    events = read_events(out).events

    assert network_guard.attempts == []
    llm_events = [e for e in events if isinstance(e, LLMEvent)]
    assert llm_events, "the model was never asked"
    assert {e.backend for e in llm_events} == {"embedded"}
    assert all(e.outcome == "ok" and e.reply for e in llm_events)
    plans = [e for e in events if isinstance(e, PlanEvent)]
    assert len(plans) == len(llm_events), "every reply became a recorded decision"
    assert len([e for e in events if isinstance(e, RunFinished)]) == 2
    # Constrained decoding: every reply the model gave parses as a plan (valid or not is the measurement).
    assert all(not p.problems or "not JSON" not in p.problems[0] for p in plans)

    _forbid(monkeypatch, EmbeddedBackend, "complete")
    report = anyio.run(lambda: replay_experiment(out))
    assert report.divergence is None, str(report.divergence)


def test_llm_agent_through_llama_cpp_openai_compatible_server(tmp_path: Path) -> None:
    base = _scenario("llm_detect_crop", 1)
    with llama_server() as base_url:
        llm = OpenAICompatibleLLM(base_url=base_url, model=SERVER_MODEL, response_format="json_object")
        assert isinstance(base.agent, LLMAgentSpec)
        scenario = base.model_copy(update={"agent": base.agent.model_copy(update={"llm": llm})})
        out = tmp_path / "served"
        anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    events = read_events(out).events

    llm_events = [e for e in events if isinstance(e, LLMEvent)]
    assert llm_events
    assert {(e.backend, e.model) for e in llm_events} == {("openai", SERVER_MODEL)}
    assert all(e.outcome == "ok" for e in llm_events)
    assert any(isinstance(e, CallEvent) for e in events) or any(
        isinstance(e, PlanEvent) and e.plan.get("finish") for e in events
    )
    report = anyio.run(lambda: replay_experiment(out))
    assert report.divergence is None, str(report.divergence)
