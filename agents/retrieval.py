"""The retrieval agent (retrieval-augmented selection): tools chosen by embedding similarity, wired by role.

At the start of a run it embeds each step of the scenario and each granted
tool's name and description, and picks for every step the most similar tool
(the similarities are recorded, so replay needs no model). It then runs the
chosen tools in order, one node per step, wiring each argument from the scene
or the previous results: by the ``semantic_role`` a schema declares, else by
the argument's name. Where both sides declare a box ``coordinate_system`` and
the two differ, the agent converts the boxes itself, as the bridging scripts
of real deployments do; no adapter declares that conversion, which is what
``conn.untracked_bridging`` measures. A tool's declared conventions are part of the
text embedded for it, so a step that names a convention can match the tool that
declares it; without declarations the text is the name and description alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import mcp.types as types
import numpy as np

from agents._catalog import (
    argument_problems,
    declared_conventions,
    describe_declared,
    granted_tools,
    input_properties,
    output_property,
    required_inputs,
)
from agents._embedding import RetrievalClient
from agents._planning import PlanLog, failed_producers, plan_node, unique_node_id
from agents._specs import RetrievalAgentSpec
from testbed.agent import ContractNotice, PlannedCall, RunView, Step
from testbed.conventions import ImageSize, convert_boxes
from testbed.protocol import declared_box_convention
from testbed.workflow import WorkflowError, WorkflowNode

AGENT_NAME = "retrieval"
_BOX_NAMES = ("bbox", "box", "box_2d", "bounding_box")


@dataclass(frozen=True)
class Wiring:
    """How the agent fills one node: its arguments, the list it repeats over, and any box conversion."""

    args: dict[str, str]
    for_each: str | None = None
    convert: tuple[str, dict[str, Any], dict[str, Any]] | None = None
    """(argument, producer's declared coordinate_system, consumer's) when the agent converts boxes itself."""


class RetrievalAgent:
    """Picks one tool per step by similarity, then runs them in order, one node per step."""

    kind = "retrieval"

    def __init__(self, spec: RetrievalAgentSpec, retrieval: RetrievalClient) -> None:
        self.spec = spec
        self.retrieval = retrieval
        self._chosen: list[str] | None = None
        self._scores: list[dict[str, float]] = []
        """Per step, each granted tool's similarity (to choose again when a contract refuses a node)."""
        self._nodes: list[str] = []
        self._steps: dict[str, int] = {}
        """The step each node ran."""
        self._refused: dict[int, set[str]] = {}
        """Per step, the tools a runtime contract refused."""
        self._next = 0
        self._plans = PlanLog(AGENT_NAME, self.kind)

    def start(self, view: RunView) -> None:
        self._chosen = None
        self._scores = []
        self._nodes = []
        self._steps = {}
        self._refused = {}
        self._next = 0
        self._plans.reset()

    async def replan(self, view: RunView, notice: ContractNotice) -> Step:
        """A runtime contract refused a node: run its step with the next most similar tool not yet refused."""
        index = self._steps[notice.node]
        refused = self._refused.setdefault(index, set())
        refused.add(notice.call)
        candidates = {name: score for name, score in self._scores[index].items() if name not in refused}
        if not candidates or self._chosen is None:
            return Step(error=f"retrieval agent: every tool for step {index + 1} was refused by a contract")
        self._chosen[index] = max(candidates, key=lambda name: candidates[name])
        self._plans.record(view, valid=True, plan={"replan": {"step": index, "call": self._chosen[index]}})
        self._next = index
        return await self.step(view)

    async def step(self, view: RunView) -> Step:
        tools = granted_tools(view, self.spec.grants)
        if self._chosen is None:
            if not tools:
                return Step(error="retrieval agent: no granted tool is listed")
            self._chosen = await self._select(view, tools)
        index = self._next
        if index >= len(self._chosen):
            return Step()
        call = self._chosen[index]
        node_id = unique_node_id(call.partition(".")[2], self._nodes)
        previous = self._ran_last(index)
        self._nodes.append(node_id)
        self._steps[node_id] = index
        self._next = index + 1
        if previous is not None and failed_producers([previous], view):
            return Step(skipped=((node_id, f"input from failed node(s): {previous}"),))
        tool = tools.get(call)
        if tool is None:  # a rug pull removed it after selection
            return Step(skipped=((node_id, f"{call} is no longer listed"),))
        wiring, problems = wire(tool, view, previous, tools)
        if wiring is None:
            self._plans.record(view, valid=False, problems=problems, plan={"node": {"id": node_id, "call": call}})
            return Step(skipped=((node_id, f"cannot wire {call}: {'; '.join(problems)}"),))
        try:
            node = WorkflowNode.model_validate(
                {"id": node_id, "call": call, "args": wiring.args, "for_each": wiring.for_each}
            )
        except (ValueError, WorkflowError) as error:
            problem = str(error).splitlines()[0]
            self._plans.record(view, valid=False, problems=[problem], plan={"node": {"id": node_id, "call": call}})
            return Step(skipped=((node_id, problem),))
        plan = plan_node(node, view)
        record = node.model_dump(mode="json", exclude_defaults=True)
        if plan.skipped is not None:
            self._plans.record(view, valid=False, problems=[plan.skipped], plan={"node": record})
            return Step(skipped=((node_id, plan.skipped),))
        calls = plan.calls
        if wiring.convert is not None:
            size = ImageSize(width=view.scene.width, height=view.scene.height)
            calls = tuple(_converted(c, wiring.convert, size) for c in calls)
        problems = [p for planned in calls for p in argument_problems(tool, planned.arguments)]
        self._plans.record(view, valid=not problems, problems=problems, plan={"node": record})
        return Step(calls=calls, empty=(node_id,) if plan.empty else ())

    def _ran_last(self, index: int) -> str | None:
        """The node that ran step ``index - 1`` (the last one: a contract may have refused an earlier one)."""
        return next((node for node in reversed(self._nodes) if self._steps[node] == index - 1), None)

    async def _select(self, view: RunView, tools: dict[str, types.Tool]) -> list[str]:
        names = list(tools)
        documents = [tool_document(name, tools[name]) for name in names]
        scores = await self.retrieval.similarities(list(self.spec.steps), documents, run=view.run, agent=AGENT_NAME)
        chosen = [names[int(np.argmax(row))] for row in scores]
        self._scores = [dict(zip(names, map(float, row), strict=True)) for row in scores]
        plan = {
            "steps": [
                {"step": step, "call": call, "score": max(row)}
                for step, call, row in zip(self.spec.steps, chosen, scores, strict=True)
            ]
        }
        self._plans.record(view, valid=True, problems=[], plan=plan)
        return chosen


def tool_document(name: str, tool: types.Tool) -> str:
    """The text embedded for a tool: its name and description, then the conventions it declares (if any)."""
    document = f"{name}: {tool.description or ''}"
    declared = declared_conventions(tool)
    if not declared:
        return document
    return document + " Declares " + "; ".join(f"{where}: {describe_declared(kw)}" for where, kw in declared.items())


def argument_role(name: str, schema: dict[str, Any]) -> str:
    """What an argument is for: its declared ``semantic_role``, else a guess from its name."""
    declared = schema.get("semantic_role")
    if isinstance(declared, str):
        return {"image_handle": "handle", "crop_handle": "handle", "image_path": "path"}.get(declared, declared)
    lowered = name.lower()
    if "handle" in lowered or lowered.endswith("_id"):
        return "handle"
    if "path" in lowered or "file" in lowered:
        return "path"
    if "box" in lowered:
        return "bounding_box"
    if "image" in lowered:
        return "image"
    return "unknown"


def wire(
    tool: types.Tool, view: RunView, previous: str | None, tools: dict[str, types.Tool]
) -> tuple[Wiring | None, list[str]]:
    """Fill each required argument of ``tool`` from the scene or ``previous``'s result."""
    properties = input_properties(tool)
    payload = view.results[previous].payload if previous in view.results else None
    args: dict[str, str] = {}
    for_each: str | None = None
    convert = None
    problems: list[str] = []
    names = required_inputs(tool)
    optional_choice = len(names) > 1 and not (tool.input_schema or {}).get("required")
    for name in names:
        role = argument_role(name, properties.get(name, {}))
        source: str | None = None
        if role == "image":
            source = "$scene.image"
        elif role in ("handle", "path"):
            field = _scalar_field(payload, role)
            source = f"${previous}.{field}" if field is not None else ("$scene.image_path" if role == "path" else None)
        elif role == "bounding_box":
            found = _box_list(payload)
            if found is not None:
                list_field, box_field = found
                for_each = f"${previous}.{list_field}"
                source = f"$item.{box_field}"
                convert = _conversion(tools, view, previous, [list_field, "[*]", box_field], name, properties)
        if source is None:
            if not optional_choice:
                problems.append(f"no value for argument {name!r} (role {role})")
            continue
        args[name] = source
        if optional_choice:
            break  # the tool takes one of these: the first that can be filled
    if problems or not args:
        return None, problems or [f"no argument of {tool.name} can be filled"]
    return Wiring(args=args, for_each=for_each, convert=convert), []


def _scalar_field(payload: Any, role: str) -> str | None:
    if not isinstance(payload, dict):
        return None
    for key, value in payload.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        lowered = key.lower()
        if role == "path" and ("path" in lowered or "file" in lowered):
            return key
        if role == "handle" and ("handle" in lowered or lowered.endswith("id")):
            return key
    return None


def _box_list(payload: Any) -> tuple[str, str] | None:
    """The first list of objects in ``payload`` with a four-number box field: (list field, box field)."""
    if not isinstance(payload, dict):
        return None
    for key, value in payload.items():
        if not (isinstance(value, list) and value and isinstance(value[0], dict)):
            continue
        boxes = [
            field
            for field, inner in value[0].items()
            if isinstance(inner, list) and len(inner) == 4 and all(isinstance(v, int | float) for v in inner)
        ]
        if boxes:
            preferred = [field for field in boxes if field in _BOX_NAMES]
            return key, (preferred or boxes)[0]
    return None


def _conversion(
    tools: dict[str, types.Tool],
    view: RunView,
    previous: str | None,
    path: list[str],
    argument: str,
    properties: dict[str, dict[str, Any]],
) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    if previous is None or previous not in view.results:
        return None
    result = view.results[previous]
    producer = tools.get(f"{result.server}.{result.tool}")
    produced = output_property(producer, path) if producer is not None else None
    source = declared_box_convention(produced or {})
    target = declared_box_convention(properties.get(argument, {}))
    if source is None or target is None or source == target:
        return None
    return argument, source.model_dump(mode="json"), target.model_dump(mode="json")


def _converted(call: PlannedCall, convert: tuple[str, dict[str, Any], dict[str, Any]], size: ImageSize) -> PlannedCall:
    from testbed.conventions import BoxConvention

    argument, source, target = convert
    box = call.arguments.get(argument)
    if not (isinstance(box, list) and len(box) == 4):
        return call
    converted = convert_boxes([box], BoxConvention.model_validate(source), BoxConvention.model_validate(target), size)[
        0
    ]
    arguments = {**call.arguments, argument: [round(float(v), 4) for v in converted]}
    return replace(call, arguments=arguments)
