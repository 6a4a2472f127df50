"""Scenario models: one YAML scenario file, validated as frozen pydantic models.

The models hold data only: checks that depend on the machine (does an image
file exist, is a packaged image installed) are made by the loader, so a
scenario recorded in a log validates anywhere.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from testbed._errors import TestbedError
from testbed.faults import FaultSpec
from testbed.llm._spec import EmbeddedLLM, LLMSpec
from testbed.scenes import SceneSpec
from testbed.workflow import (
    IDENTIFIER_JSON_SCHEMA,
    Location,
    Workflow,
    WorkflowError,
    WorkflowNode,
    check_identifier,
    check_server_aliases,
)

__all__ = [
    "AgentSpec",
    "FieldError",
    "ImageSet",
    "Scenario",
    "SceneSource",
    "ScriptedAgent",
    "ServerAlias",
    "ServerRef",
    "Task",
    "TaskKind",
    "Transport",
    "ViolationId",
]

BASE_DIR_CONTEXT: Final = "base_dir"
"""Validation-context key: the folder relative image paths resolve against (the scenario file's folder)."""

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class FieldError(TestbedError, ValueError):
    """A cross-field check that failed; ``loc`` is the offending field, relative to the model validated."""

    def __init__(self, message: str, *, loc: Location) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc


ServerAlias = Annotated[
    str,
    AfterValidator(lambda value: check_identifier(value, what="server alias")),
    WithJsonSchema(IDENTIFIER_JSON_SCHEMA),
]
"""The name a scenario gives a server; calls name it before the dot (``det`` in ``det.detect``)."""

_VIOLATION_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


def _check_violation_id(value: str) -> str:
    if not _VIOLATION_ID.match(value):
        raise ValueError(
            f"{value!r} is not a violation ID: expected dotted lowercase identifiers like 'coords.mismatch'"
        )
    return value


ViolationId = Annotated[
    str,
    AfterValidator(_check_violation_id),
    WithJsonSchema({"type": "string", "pattern": _VIOLATION_ID.pattern, "description": "e.g. coords.mismatch"}),
]
"""A violation ID such as ``coords.mismatch``: two or more lowercase identifiers joined by dots."""


Transport = Literal["inprocess", "stdio", "http"]
"""How the testbed reaches a server: in the same process through memory streams (the default), a
subprocess speaking MCP over stdin/stdout, or a subprocess serving streamable HTTP on a local port."""


class ServerRef(BaseModel):
    """A server the workflow calls, by registry name."""

    model_config = _MODEL_CONFIG

    server: str = Field(min_length=1)
    """The server's name in the testbed's registry (checked when the scenario runs)."""
    transport: Transport = "inprocess"
    """How to reach it: ``inprocess`` (memory streams), ``stdio`` (a subprocess) or ``http`` (streamable HTTP)."""


class ImageSet(BaseModel):
    """A fixed set of real images, cycled over the runs (run ``i`` uses image ``i % count``). Exactly one field."""

    model_config = ConfigDict(
        **_MODEL_CONFIG,
        json_schema_extra={"oneOf": [{"required": ["packaged"]}, {"required": ["paths"]}, {"required": ["folder"]}]},
    )

    packaged: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(default=None, min_length=1)
    """Names of sample images shipped inside installed packages, e.g. ``bus.jpg``."""
    paths: tuple[Path, ...] | None = Field(default=None, min_length=1)
    """Image files; relative paths resolve against the scenario file's folder."""
    folder: Path | None = None
    """A folder of images (with COCO or YOLO labels where present); relative to the scenario file's folder."""

    @field_validator("paths", "folder")
    @classmethod
    def _resolve_relative(cls, value: Any, info: ValidationInfo) -> Any:
        base = info.context.get(BASE_DIR_CONTEXT) if isinstance(info.context, dict) else None
        if base is None or value is None:
            return value
        # Absolute, so that the resolved scenario (as logged) no longer depends on where its file was.
        if isinstance(value, tuple):
            return tuple((Path(base) / path).absolute() for path in value)
        return (Path(base) / value).absolute()

    @model_validator(mode="after")
    def _check_exactly_one(self) -> Self:
        given = [name for name in ("packaged", "paths", "folder") if getattr(self, name) is not None]
        if len(given) != 1:
            found = f"got {' and '.join(given)}" if given else "got none"
            raise ValueError(f"give exactly one of 'packaged', 'paths' or 'folder' ({found})")
        return self


class SceneSource(BaseModel):
    """Where each run's scene comes from: exactly one of ``synthetic`` or ``images``."""

    model_config = ConfigDict(
        **_MODEL_CONFIG, json_schema_extra={"oneOf": [{"required": ["synthetic"]}, {"required": ["images"]}]}
    )

    synthetic: SceneSpec | None = None
    """A synthetic scene generator; each run draws a new scene from the seed and run index (``{}`` for defaults)."""
    images: ImageSet | None = None
    """A fixed set of real images, cycled over the runs."""

    @model_validator(mode="before")
    @classmethod
    def _empty_synthetic_means_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "synthetic" in data and data["synthetic"] is None:
            return {**data, "synthetic": {}}
        return data

    @model_validator(mode="after")
    def _check_exactly_one(self) -> Self:
        if (self.synthetic is None) == (self.images is None):
            found = "got both" if self.synthetic is not None else "got neither"
            raise ValueError(f"give exactly one of 'synthetic' or 'images' ({found})")
        return self


class TaskKind(StrEnum):
    """What the scenario's workflow is meant to achieve, checked against ground truth."""

    DETECT_ALL = "detect_all"
    """Find every object: the checked node's result holds one box per ground-truth object."""
    SEGMENT_ALL = "segment_all"
    """Segment every object: the checked node's result holds one mask per ground-truth object."""
    CROP_EVERY = "crop_every"
    """Crop every object of ``class_name``: the checked node yields one crop per such object."""
    NONE = "none"
    """No task check (probes and protocol scenarios that only look for violations)."""


class Task(BaseModel):
    """The task a run is scored on."""

    model_config = _MODEL_CONFIG

    kind: TaskKind
    """What is checked."""
    node: str | None = None
    """The workflow node whose results are checked; give it or ``tool`` unless ``kind`` is ``none``."""
    tool: str | None = None
    """For agents that plan for themselves: check the results of every node that called this
    ``alias.tool`` (their node names are the agent's own)."""
    class_name: str | None = None
    """The object class the task is about; required by ``crop_every``."""
    merge: tuple[str, ...] = ()
    """Further nodes (parallel branches) whose results are merged with ``node``'s before checking."""

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node the check reads: ``node`` first, then ``merge``."""
        return ((self.node,) if self.node is not None else ()) + self.merge

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        if self.kind is not TaskKind.NONE and (self.node is None) == (self.tool is None):
            raise FieldError(
                f"task {self.kind.value!r} needs exactly one of node (a workflow node) or tool (alias.tool)",
                loc=("node",),
            )
        if self.kind is TaskKind.CROP_EVERY and not self.class_name:
            raise FieldError("task 'crop_every' needs class_name (which objects to crop)", loc=("class_name",))
        return self


class ScriptedAgent(BaseModel):
    """A scripted agent: runs a fixed workflow (the ground-truth agent of every scenario)."""

    model_config = _MODEL_CONFIG

    kind: Literal["scripted"] = "scripted"
    """Discriminator."""
    workflow: Workflow
    """The tool calls to make and how their arguments bind."""
    grants: tuple[str, ...] | None = None
    """Tools the agent may call, as ``alias.tool``; ``None`` grants every tool. Calls outside it are violations."""

    @field_validator("grants")
    @classmethod
    def _check_grants(cls, grants: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for grant in grants or ():
            alias, dot, tool = grant.partition(".")
            if not dot or not alias or not tool or "." in tool:
                raise ValueError(f"grant {grant!r} must be '<server alias>.<tool name>' with exactly one dot")
        return grants


class RetrievalAgent(BaseModel):
    """Retrieval-augmented selection: for each step, the listed tool whose description is most similar to it.

    Arguments are wired from the scene and earlier results by declared semantic roles, else by name;
    box conventions the two sides declare differently are converted by the agent itself (bridging no
    adapter declares).
    """

    model_config = _MODEL_CONFIG

    kind: Literal["retrieval"] = "retrieval"
    """Discriminator."""
    steps: tuple[str, ...] = Field(min_length=1)
    """The subtasks in order, in plain language (each becomes one node)."""
    grants: tuple[str, ...] | None = None
    """Tools the agent may call, as ``alias.tool``; ``None`` grants every tool."""


class LLMAgent(BaseModel):
    """Dynamic orchestration: a language model picks each next call from the catalog, step by step."""

    model_config = _MODEL_CONFIG

    kind: Literal["llm"] = "llm"
    """Discriminator."""
    goal: str = Field(min_length=1)
    """What to achieve, in plain language (the model's instructions)."""
    llm: LLMSpec = EmbeddedLLM()
    """The model: the embedded SmolLM2 (default, offline) or an OpenAI-compatible endpoint."""
    max_calls: int = Field(default=4, ge=1, le=32)
    """Most nodes the model may add in one run."""
    max_tokens: int = Field(default=160, ge=16)
    """Most tokens per reply."""
    grants: tuple[str, ...] | None = None
    """Tools the agent may call, as ``alias.tool``; ``None`` grants every tool."""


class Worker(BaseModel):
    """One worker agent of a multi-agent team."""

    model_config = _MODEL_CONFIG

    name: str = Field(min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    """Its name (recorded on every call it makes and sent to servers in ``_meta``)."""
    tools: tuple[str, ...] = Field(min_length=1)
    """The ``alias.tool``s it handles; the planner delegates each node to the worker that handles its tool."""


class MultiAgent(BaseModel):
    """Multi-agent coordination: a planner delegates the workflow's nodes to workers that run concurrently
    against shared servers, passing results (and handles) through a shared blackboard."""

    model_config = _MODEL_CONFIG

    kind: Literal["multi"] = "multi"
    """Discriminator."""
    workers: tuple[Worker, ...] = Field(min_length=2)
    """The team; worker names are unique and no tool is handled by two workers."""
    workflow: Workflow
    """The subtasks the planner delegates."""
    grants: tuple[str, ...] | None = None
    """Tools the team may call, as ``alias.tool``; ``None`` grants every tool."""

    @model_validator(mode="after")
    def _check_workers(self) -> Self:
        owners: dict[str, str] = {}
        for index, worker in enumerate(self.workers):
            if any(other.name == worker.name for other in self.workers[:index]):
                raise FieldError(f"duplicate worker name {worker.name!r}", loc=("workers", index, "name"))
            for tool in worker.tools:
                if tool in owners:
                    raise FieldError(
                        f"tool {tool!r} is handled by both {owners[tool]!r} and {worker.name!r}",
                        loc=("workers", index, "tools"),
                    )
                owners[tool] = worker.name
        for index, node in enumerate(self.workflow.nodes):
            if node.call not in owners:
                raise FieldError(
                    f"node {node.id!r} calls {node.call!r}, which no worker handles (workers handle: "
                    f"{', '.join(owners)})",
                    loc=("workflow", "nodes", index, "call"),
                )
        return self


PLANNING_AGENT_KINDS: Final = frozenset({"retrieval", "llm"})
"""Agent kinds that choose their own calls: their scenarios are measurements with no ``expect`` list."""

AgentSpec = Annotated[ScriptedAgent | RetrievalAgent | LLMAgent | MultiAgent, Field(discriminator="kind")]
"""The agent that plans and makes the calls, selected by ``kind``."""


class Scenario(BaseModel):
    """One scenario: a scene source, servers, an agent with its workflow, and what the run should show."""

    model_config = ConfigDict(**_MODEL_CONFIG, title="Scenario")

    name: str = Field(min_length=1)
    """Short name, unique within its suite."""
    version: StrictInt = Field(ge=1)
    """The version of the suite the scenario belongs to (published numbers cite it)."""
    description: str = ""
    """What the scenario exercises, in a sentence or two."""
    seed: StrictInt = Field(ge=0)
    """The experiment seed; run ``i`` depends only on (scenario, seed, i)."""
    runs: StrictInt = Field(ge=1)
    """How many runs to make."""
    scene: SceneSource
    """Where each run's image comes from."""
    servers: dict[ServerAlias, ServerRef]
    """The servers the agent may call, by alias (the part before the dot in a call)."""
    task: Task
    """What each run is scored on."""
    agent: AgentSpec
    """Who plans and makes the calls."""
    expect: tuple[ViolationId, ...] = ()
    """Violation IDs the scenario is designed to produce (the self-check asserts them)."""
    faults: tuple[FaultSpec, ...] = ()
    """Faults to inject (selected by ``kind``; see ``testbed.faults.FAULT_CATALOG``), decided from the seed."""
    validators: dict[str, Any] = {}
    """Validator settings; a placeholder (a free-form mapping) until the validators module defines their model."""
    deadline_s: float = Field(default=60.0, gt=0)
    """Default deadline of each tool call in seconds (a node's ``deadline_s`` overrides it)."""

    @property
    def workflow(self) -> Workflow | None:
        """The agent's fixed workflow (scripted and multi-agent), or ``None`` for agents that plan at run time."""
        return getattr(self.agent, "workflow", None)

    @property
    def plans_for_itself(self) -> bool:
        """Whether the agent chooses its own calls (then ``expect`` must be empty: what it causes is measured)."""
        return self.agent.kind in PLANNING_AGENT_KINDS

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        if self.plans_for_itself and self.expect:
            raise FieldError(
                f"a {self.agent.kind} agent plans for itself, so the scenario cannot promise violations: "
                "leave expect empty (its violations are the measurement)",
                loc=("expect",),
            )
        if self.task.tool is not None:
            alias = self.task.tool.partition(".")[0]
            if alias not in self.servers:
                raise FieldError(
                    f"task tool {self.task.tool!r} names unknown server alias {alias!r}", loc=("task", "tool")
                )
        for index, grant in enumerate(self.agent.grants or ()):
            alias = grant.partition(".")[0]
            if alias not in self.servers:
                raise FieldError(
                    f"grant {grant!r} names unknown server alias {alias!r} (servers: {', '.join(self.servers)})",
                    loc=("agent", "grants", index),
                )
        for index, fault in enumerate(self.faults):
            if fault.target.server not in self.servers:
                raise FieldError(
                    f"fault target server {fault.target.server!r} is not a server alias "
                    f"(servers: {', '.join(self.servers)})",
                    loc=("faults", index, "target", "server"),
                )
        workflow = self.workflow
        if workflow is None:
            if self.task.node is not None or self.task.merge:
                raise FieldError(
                    f"a {self.agent.kind} agent names its own nodes: check its results by task.tool, not task.node",
                    loc=("task", "node"),
                )
            return self
        try:
            check_server_aliases(workflow, self.servers)
        except WorkflowError as error:
            raise FieldError(error.message, loc=("agent", "workflow", *error.loc)) from None
        for index, merged in enumerate(self.task.merge):
            if merged not in workflow.node_ids:
                raise FieldError(
                    f"task merge node {merged!r} is not a workflow node (nodes: {', '.join(workflow.node_ids)})",
                    loc=("task", "merge", index),
                )
        if self.task.node is not None and self.task.node not in workflow.node_ids:
            raise FieldError(
                f"task node {self.task.node!r} is not a workflow node (nodes: {', '.join(workflow.node_ids)})",
                loc=("task", "node"),
            )
        return self

    def call_deadline_s(self, node: WorkflowNode) -> float:
        """The deadline of each call ``node`` makes: its own ``deadline_s``, else the scenario's."""
        return node.deadline_s if node.deadline_s is not None else self.deadline_s
