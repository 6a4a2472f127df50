"""Runtime contracts: halt stops, convert fixes, replan asks the agent again, fallback calls the declared tool.

Each policy runs the shipped example (scenarios/contracts/) on declared parametric servers, and every
recording is replayed: the contract events and violations come back exactly.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents import AgentModels
from agents._embedding import RecordingRetrieval
from testbed.check import in_process
from testbed.events import CallEvent, ContractEvent, PlanEvent, RunFinished
from testbed.llm import LLMReply, LLMRequest, RecordingLLM
from testbed.scenario import Scenario, ScenarioError, load_scenario, load_scenario_text
from tests._helpers import assert_replays_exactly, events_of, record_experiment, violation_counts

CONTRACTS = Path(__file__).resolve().parent.parent / "scenarios" / "contracts"
REFUSED = "Refused by a runtime contract"


def _scenario(name: str, runs: int = 2, **updates: Any) -> Scenario:
    return in_process(load_scenario(CONTRACTS / f"{name}.yaml")).model_copy(update={"runs": runs, **updates})


# --- scenario field ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("contracts: {policy: stop}", "contracts.policy: input should be 'halt', 'convert', 'replan' or 'fallback'"),
        ("contracts: {policy: halt, rules: [box_size]}", "contracts.rules: unknown contract rule 'box_size'"),
    ],
)
def test_a_bad_contracts_section_is_a_one_line_error_naming_the_field(written: str, message: str) -> None:
    text = (CONTRACTS / "halt.yaml").read_text().replace("contracts: {policy: halt}", written)
    with pytest.raises(ScenarioError) as raised:
        load_scenario_text(text, source="halt.yaml")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_scenario_without_contracts_records_no_contracts_key() -> None:
    # Recordings made before contracts existed keep their experiment id: the absent section is not dumped.
    scenario = _scenario("convert").model_copy(update={"contracts": None})
    assert "contracts" not in scenario.model_dump(mode="json")
    assert _scenario("convert").model_dump(mode="json")["contracts"] == {"policy": "convert", "rules": None}


# --- policies -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_halt_before_a_breaking_value_crosses_the_edge_is_reported_as_contract_violation(tmp_path: Path) -> None:
    events = record_experiment(_scenario("halt"), tmp_path / "halt")

    finished = events_of(events, RunFinished)
    assert len(finished) == 2
    assert all(e.error is not None and e.error.startswith("contract halt: box_convention:") for e in finished)
    assert {c.tool for c in events_of(events, CallEvent)} == {"detect"}, "no crop call was made"
    decisions = {(e.rule, e.finding, e.decision) for e in events_of(events, ContractEvent)}
    assert decisions == {("box_convention", "breach", "halt"), ("box_bounds", "breach", "halt")}
    violations = violation_counts(tmp_path / "halt")
    assert set(violations) == {"contract.violation"}
    assert_replays_exactly(tmp_path / "halt")


@pytest.mark.slow
def test_convert_inserts_the_tracked_adapter_the_declarations_give_and_the_violations_go(tmp_path: Path) -> None:
    without = _scenario("convert", contracts=None)
    record_experiment(without, tmp_path / "off")
    assert {"coords.mismatch", "coords.out_of_bounds"} <= set(violation_counts(tmp_path / "off"))

    events = record_experiment(_scenario("convert"), tmp_path / "on")

    crops = [c for c in events_of(events, CallEvent) if c.tool == "crop"]
    assert crops
    assert all(c.outcome.value == "ok" for c in crops)
    adapter = "box: box xyxy/pixel/xy/top_left -> xyxy/normalized/xy/top_left (contract)"
    assert all(c.adapters == [adapter] for c in crops)
    assert all(0.0 <= v <= 1.0 for c in crops for v in c.arguments["box"]), "sent normalized"
    contract = events_of(events, ContractEvent)
    assert {e.decision for e in contract} == {"convert"}
    assert {(e.run, e.node, e.item) for e in contract} == {(c.run, c.node, c.item) for c in crops}
    assert all(e.task_passed for e in events_of(events, RunFinished))
    assert violation_counts(tmp_path / "on") == Counter()
    assert_replays_exactly(tmp_path / "on")


@pytest.mark.slow
def test_fallback_calls_the_tool_the_consumer_declares_instead(tmp_path: Path) -> None:
    events = record_experiment(_scenario("fallback"), tmp_path / "fallback")

    calls = events_of(events, CallEvent)
    assert {(c.server, c.tool) for c in calls} == {("det", "detect"), ("crop_px", "crop_pixels")}
    assert all(c.outcome.value == "ok" for c in calls)
    contract = events_of(events, ContractEvent)
    assert contract
    assert {(e.decision, e.remedy) for e in contract} == {("fallback", "crop_px.crop_pixels")}
    assert all(e.task_passed for e in events_of(events, RunFinished))
    assert violation_counts(tmp_path / "fallback") == Counter()
    assert_replays_exactly(tmp_path / "fallback")


@pytest.mark.slow
def test_fallback_without_a_declared_fallback_halts_with_the_decision_recorded(tmp_path: Path) -> None:
    scenario = _scenario("fallback", runs=1)
    servers = {alias: ref for alias, ref in scenario.servers.items() if alias != "crop_px"}
    assert servers["crop"].profile is not None
    servers["crop"] = servers["crop"].model_copy(
        update={"profile": servers["crop"].profile.model_copy(update={"fallback": "empty result on failure"})}
    )
    events = record_experiment(scenario.model_copy(update={"servers": servers}), tmp_path / "none")

    (finished,) = events_of(events, RunFinished)
    assert finished.error is not None
    assert "declares no usable fallback" in finished.error
    assert {e.decision for e in events_of(events, ContractEvent)} == {"halt"}


class ContractAwareLLM:
    """Plans detect, then crop without an adapter; once told a contract refused it, crop with the offered adapter."""

    name = "fake"
    model = "contract-aware-rules"

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> LLMReply:
        self.requests.append(request)
        prompt = request.messages[-1].content
        done = prompt.split("Done so far:")[1].split("Values you can pass")[0]
        if "- nothing yet" in prompt:
            reply: dict[str, Any] = {"tool": "det.detect", "for_each": None, "arguments": {"image": "$scene.image"}}
        elif "crop.crop -> ok" in done:
            reply = {"tool": "finish"}
        else:
            reply = {
                "tool": "crop.crop",
                "for_each": "$detect.detections",
                "arguments": {"image": "$scene.image", "box": "$item.bbox"},
            }
            if REFUSED in prompt:
                reply["adapters"] = {"box": _offered_adapter(request.schema)}
        return LLMReply(text=json.dumps(reply), model=self.model, completion_tokens=20)


def _offered_adapter(schema: dict[str, Any] | None) -> str:
    assert schema is not None
    crop = next(c for c in schema["anyOf"] if c["properties"]["tool"].get("const") == "crop.crop")
    return str(next(choice for choice in crop["properties"]["adapters"]["properties"]["box"]["enum"] if choice))


@pytest.mark.slow
def test_replan_tells_the_llm_agent_which_chooses_again_with_a_tracked_adapter(tmp_path: Path) -> None:
    backend = ContractAwareLLM()
    events = record_experiment(_scenario("replan"), tmp_path / "llm", AgentModels(llm=RecordingLLM(backend)))

    refused = [e for e in events_of(events, ContractEvent) if e.decision == "replan"]
    assert {(e.run, e.node) for e in refused} == {(0, "crop"), (1, "crop")}
    told = [r for r in backend.requests if REFUSED in r.messages[-1].content]
    assert len(told) >= 2, "the agent was asked again, with the refusal in its prompt"
    skipped = [c for c in events_of(events, CallEvent) if c.outcome.value == "skipped"]
    assert {(c.node, (c.error or "").startswith("refused by contract")) for c in skipped} == {("crop", True)}
    crops = [c for c in events_of(events, CallEvent) if c.tool == "crop" and c.outcome.value == "ok"]
    assert crops
    assert {c.node for c in crops} == {"crop_2"}
    assert all(c.adapters and "normalized" in c.adapters[0] for c in crops)
    assert all(e.task_passed for e in events_of(events, RunFinished))
    assert "contract.violation" not in violation_counts(tmp_path / "llm")

    asked = len(backend.requests)
    assert_replays_exactly(tmp_path / "llm")
    assert len(backend.requests) == asked, "replay asked the model"


class KeywordEmbedder:
    """Embeds a text as a one-hot vector of the first keyword it contains (detect or crop)."""

    model = "fixed-keywords"

    def embed(self, texts: list[str]) -> Any:
        rows = []
        for text in texts:
            lowered = text.lower()
            hits = [(lowered.find(k), i) for i, k in enumerate(("detect", "crop")) if lowered.find(k) >= 0]
            rows.append(np.eye(2, dtype=np.float32)[min(hits)[1] if hits else 0])
        return np.stack(rows)


def _retrieval_scenario() -> Scenario:
    """An undeclared pixel detector, then two croppers that tie on similarity: normalized first, pixel second."""
    data = _scenario("replan").model_dump(mode="json")
    data["servers"] = {
        "det": {"server": "detect", "profile": {"box": "xyxy/pixel", "declares_extensions": False}},
        "crop": {"server": "crop", "profile": {"box": "xyxy/normalized"}},
        "crop_px": {"server": "crop", "profile": {"box": "xyxy/pixel"}},
    }
    data["agent"] = {"kind": "retrieval", "steps": ["detect the objects in the image", "crop each detected box"]}
    data["task"] = {"kind": "crop_every", "tool": "crop_px.crop", "class_name": "circle"}
    return in_process(Scenario.model_validate(data))


@pytest.mark.slow
def test_replan_retrieval_chooses_the_next_tool_and_an_unevaluable_rule_is_reported_as_contract_unevaluable(
    tmp_path: Path,
) -> None:
    retrieval = RecordingRetrieval(KeywordEmbedder())
    events = record_experiment(_retrieval_scenario(), tmp_path / "ret", AgentModels(retrieval=retrieval))

    refused = [e for e in events_of(events, ContractEvent) if e.decision == "replan"]
    assert refused
    assert {(e.server, e.rule) for e in refused} == {("crop", "box_bounds")}
    # The detector declares no convention: the convention rule cannot be evaluated, which is itself recorded.
    unevaluable = [e for e in events_of(events, ContractEvent) if e.finding == "unevaluable"]
    assert unevaluable
    assert {e.rule for e in unevaluable} == {"box_convention"}
    replans = [e.plan["replan"] for e in events_of(events, PlanEvent) if "replan" in e.plan]
    assert replans
    assert {r["call"] for r in replans} == {"crop_px.crop"}
    crops = [c for c in events_of(events, CallEvent) if c.tool == "crop" and c.outcome.value == "ok"]
    assert crops
    assert {c.server for c in crops} == {"crop_px"}
    assert all(e.task_passed for e in events_of(events, RunFinished))
    violations = violation_counts(tmp_path / "ret")
    assert violations["contract.unevaluable"] == len(unevaluable)
    assert "contract.violation" not in violations
    assert_replays_exactly(tmp_path / "ret")
