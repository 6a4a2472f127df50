"""The LLM agent (dynamic orchestration): a language model picks each next call, step by step.

At each step the model sees the goal, the granted tools, what has run so far
and the references it may pass, and answers one JSON object: the next call
(tool, an optional list to repeat it over, and arguments chosen among the
references) or ``finish``. Decoding is constrained by a JSON schema built
from the catalog, with every string an enumerated reference, so the reply is
short and bounded. Each reply becomes a workflow node bound by the same
machinery as a scripted node; the agent records every decision as a
:class:`~testbed.events.PlanEvent` (valid when it parses and every call
matches its tool's input schema).

Where servers declare their conventions (the protocol's extension keywords), the
prompt lists them with each tool, each argument's schema carries them as its
description, and a box argument whose declared ``coordinate_system`` differs from
one a granted tool declares on its output gets an ``adapters`` choice: no adapter,
or a tracked box adapter from that convention to the argument's. Without
declarations, prompt and schema are exactly as before.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import ValidationError

from agents._catalog import (
    CONVENTION_KEYWORDS,
    argument_problems,
    declared_box_conventions,
    declared_conventions,
    declared_only,
    describe_declared,
    granted_tools,
    required_inputs,
)
from agents._planning import PlanLog, item_references, payload_references, plan_node, unique_node_id
from agents._specs import LLMAgentSpec
from testbed.agent import ContractNotice, RunView, Step
from testbed.llm import ChatMessage, LLMClient, LLMError, LLMRequest
from testbed.workflow import WorkflowError, WorkflowNode

AGENT_NAME = "llm"
FINISH = "finish"
SYSTEM_PROMPT = (
    "You plan calls to vision tools. Reply with one JSON object: the next tool call, "
    'or {"tool": "finish"} once the goal is reached.'
)
_SUMMARY_STRING = 32
_ADAPTS = " -> "
"""Separates the two conventions of an adapter choice (``xyxy/pixel/xy/top_left -> xywh/pixel/xy/top_left``)."""


class LLMAgent:
    """Asks its model for one node at a time until the model says finish or ``max_calls`` nodes ran."""

    kind = "llm"

    def __init__(self, spec: LLMAgentSpec, llm: LLMClient, *, seed: int) -> None:
        self.spec = spec
        self.llm = llm
        self.seed = seed
        self._nodes: list[str] = []
        self._refused: list[ContractNotice] = []
        self._plans = PlanLog(AGENT_NAME, self.kind)

    def start(self, view: RunView) -> None:
        self._nodes = []
        self._refused = []
        self._plans.reset()

    async def replan(self, view: RunView, notice: ContractNotice) -> Step:
        """A runtime contract refused a node: the next prompt says why, and the model chooses again."""
        self._refused.append(notice)
        return await self.step(view)

    async def step(self, view: RunView) -> Step:
        if len(self._nodes) >= self.spec.max_calls:
            return Step()
        tools = granted_tools(view, self.spec.grants)
        if not tools:
            return Step(error="llm agent: no granted tool is listed")
        values, lists = payload_references(view)
        items = sorted({ref for source in lists for ref in item_references(view, source)})
        schema = plan_schema(tools, values, lists, items, may_finish=bool(self._nodes))
        request = LLMRequest(
            messages=(
                ChatMessage(role="system", content=SYSTEM_PROMPT),
                ChatMessage(role="user", content=self._prompt(view, tools, values, lists, items)),
            ),
            schema=schema,
            max_tokens=self.spec.max_tokens,
            temperature=0.0,
            seed=self.seed + view.run,
        )
        try:
            reply = await self.llm.complete(request, run=view.run, agent=AGENT_NAME)
        except LLMError as error:
            self._plans.record(view, valid=False, problems=[str(error)], plan={})
            return Step(error=f"llm {error.failure.value}: {error.detail}")
        decision, problems = parse_reply(reply.text, schema)
        if decision is None:
            self._plans.record(view, valid=False, problems=problems, plan={"reply": reply.text[:200]})
            return Step(error=f"llm invalid_plan: {problems[0]}")
        if decision.get("tool") == FINISH:
            self._plans.record(view, valid=True, problems=[], plan={"finish": True})
            return Step()
        return self._node_step(view, tools, decision)

    def _node_step(self, view: RunView, tools: dict[str, Any], decision: dict[str, Any]) -> Step:
        call = str(decision["tool"])
        node_id = unique_node_id(call.partition(".")[2], self._nodes)
        self._nodes.append(node_id)
        raw = decision_node(node_id, decision)
        try:
            node = WorkflowNode.model_validate(raw)
        except (ValidationError, WorkflowError) as error:
            problem = str(error).splitlines()[0]
            self._plans.record(view, valid=False, problems=[problem], plan={"node": raw})
            return Step(skipped=((node_id, f"invalid plan: {problem}"),))
        plan = plan_node(node, view)
        node_record = node.model_dump(mode="json", exclude_defaults=True)
        if plan.skipped is not None:
            self._plans.record(view, valid=False, problems=[plan.skipped], plan={"node": node_record})
            return Step(skipped=((node_id, plan.skipped),))
        problems = [p for planned in plan.calls for p in argument_problems(tools[call], planned.arguments)]
        self._plans.record(view, valid=not problems, problems=problems, plan={"node": node_record})
        return Step(calls=plan.calls, empty=(node_id,) if plan.empty else ())

    def _prompt(
        self, view: RunView, tools: dict[str, Any], values: list[str], lists: list[str], items: list[str]
    ) -> str:
        lines = [f"Goal: {self.spec.goal}", "Tools:"]
        for name, tool in tools.items():
            lines.append(f"- {name}: {tool.description or ''} Arguments: {', '.join(required_inputs(tool))}.")
            declared = declared_only(declared_conventions(tool), CONVENTION_KEYWORDS)  # short: a small model reads it
            if declared:
                lines.append(
                    "  Declares: " + "; ".join(f"{where}: {describe_declared(kw)}" for where, kw in declared.items())
                )
        if declared_box_conventions(tools, side="arguments"):
            lines.append(
                "Where a box argument declares a different coordinate_system from the output you pass it, "
                "choose the adapter that converts between them."
            )
        lines.append("Done so far:")
        done = [node for node in self._nodes if node in view.results or node in view.skipped]
        if not done:
            lines.append("- nothing yet")
        for node in done:
            if node in view.skipped:
                lines.append(f"- {node}: not run ({view.skipped[node][:80]})")
                continue
            result = view.results[node]
            outcomes = sorted({call.outcome for call in result.calls}) or ["no calls"]
            lines.append(
                f"- {node} = {result.server}.{result.tool} -> {', '.join(outcomes)}: {summarize(result.payload)}"
            )
        for notice in self._refused:
            lines.append(f"Refused by a runtime contract: {notice.node} ({notice.call}): {notice.reason[:240]}")
        lines.append("Values you can pass: " + ", ".join(values))
        if lists:
            lines.append("Lists you can repeat a call over (for_each; $item is then each element): " + ", ".join(lists))
            lines.append("Inside for_each: " + ", ".join(items))
        if done:
            lines.append('Answer the next call, or {"tool": "finish"} if the goal is reached.')
        else:
            lines.append("Answer the first call.")
        return "\n".join(lines)


def plan_schema(
    tools: dict[str, Any], values: list[str], lists: list[str], items: list[str], *, may_finish: bool = True
) -> dict[str, Any]:
    """The JSON schema of one reply: a call of one granted tool (arguments chosen among references) or finish.

    ``finish`` is offered only once something has run: no goal is reached without a call. Declared
    conventions describe each argument, and differing declared box conventions add an ``adapters`` choice.
    """
    produced = sorted(set(declared_box_conventions(tools, side="returns").values()))
    choices: list[dict[str, Any]] = []
    for name, tool in tools.items():
        declared = declared_conventions(tool)
        arguments: dict[str, dict[str, Any]] = {}
        for argument in required_inputs(tool):
            arguments[argument] = {"enum": [*values, *items]}
            if keywords := declared.get(f"arguments.{argument}"):
                arguments[argument]["description"] = "declares " + describe_declared(keywords)
        properties: dict[str, Any] = {
            "tool": {"const": name},
            "for_each": {"enum": [None, *lists]},
            "arguments": {
                "type": "object",
                "properties": arguments,
                "required": list(arguments),
                "additionalProperties": False,
            },
        }
        adapters = _adapter_choices(name, tool, produced)
        if adapters:
            properties["adapters"] = {
                "type": "object",
                "properties": adapters,
                "required": list(adapters),
                "additionalProperties": False,
            }
        choices.append(
            {
                "type": "object",
                "properties": properties,
                "required": ["tool", "for_each", "arguments"],  # an adapter is offered, never demanded
                "additionalProperties": False,
            }
        )
    if may_finish:
        choices.append(
            {
                "type": "object",
                "properties": {"tool": {"const": FINISH}},
                "required": ["tool"],
                "additionalProperties": False,
            }
        )
    return {"anyOf": choices}


def decision_node(node_id: str, decision: dict[str, Any]) -> dict[str, Any]:
    """The workflow node a call decision stands for; a chosen adapter becomes a declared box adapter."""
    raw: dict[str, Any] = {"id": node_id, "call": decision["tool"], "args": decision.get("arguments") or {}}
    if decision.get("for_each"):
        raw["for_each"] = decision["for_each"]
    adapters = {}
    for argument, chosen in (decision.get("adapters") or {}).items():
        if isinstance(chosen, str):
            source, _, target = chosen.partition(_ADAPTS)
            adapters[argument] = {"kind": "box", "from": source, "to": target}
    if adapters:
        raw["adapters"] = adapters
    return raw


def _adapter_choices(name: str, tool: Any, produced: list[str]) -> dict[str, dict[str, Any]]:
    """For each required box argument declaring a convention: none, or an adapter from each other declared one."""
    wanted = declared_box_conventions({name: tool}, side="arguments")
    choices: dict[str, dict[str, Any]] = {}
    for where, target in wanted.items():
        argument = where.partition(":")[2]
        sources = [source for source in produced if source != target]
        if argument in required_inputs(tool) and sources:
            choices[argument] = {"enum": [None, *(f"{source}{_ADAPTS}{target}" for source in sources)]}
    return choices


def parse_reply(text: str, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The reply as a decision, or ``None`` with the reasons it is not one."""
    try:
        decision = json.loads(text)
    except json.JSONDecodeError as error:
        return None, [f"reply is not JSON ({error.msg} at char {error.pos}): {text[:80]!r}"]
    errors = list(Draft202012Validator(schema).iter_errors(decision))
    if errors or not isinstance(decision, dict):
        message = errors[0].message if errors else "reply is not an object"
        return None, [f"reply does not follow the plan schema: {message[:160]}"]
    return decision, []


def summarize(payload: Any, depth: int = 0) -> str:
    """A short, deterministic rendering of a payload: lists by length, long strings cut."""
    if isinstance(payload, dict):
        if depth >= 2:
            return "{...}"
        return "{" + ", ".join(f"{key}: {summarize(value, depth + 1)}" for key, value in payload.items()) + "}"
    if isinstance(payload, list):
        if all(isinstance(v, int | float) for v in payload) and len(payload) <= 4:
            return json.dumps([round(v, 3) if isinstance(v, float) else v for v in payload])
        return f"[list of {len(payload)}]"
    if isinstance(payload, str):
        return json.dumps(payload if len(payload) <= _SUMMARY_STRING else payload[:_SUMMARY_STRING] + "...")
    return json.dumps(payload)
