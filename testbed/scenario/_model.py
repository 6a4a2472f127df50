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
    SerializeAsAny,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from testbed._errors import TestbedError
from testbed.faults import FaultSpec
from testbed.registry import AgentSpec, by_kind, registry
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
    "FieldError",
    "ImageSet",
    "Scenario",
    "SceneSource",
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


_TASK_KIND_SCHEMA: Final = {"type": "string", "examples": [kind.value for kind in TaskKind]}


def _check_task_kind(kind: str) -> str:
    known = registry().tasks
    if kind not in known:
        raise ValueError(f"unknown task kind {kind!r}; expected one of: {', '.join(known)}")
    return kind


class Task(BaseModel):
    """The task a run is scored on."""

    model_config = _MODEL_CONFIG

    kind: Annotated[
        str, AfterValidator(_check_task_kind), WithJsonSchema({"type": "string", "examples": list(TaskKind)})
    ]
    """What is checked: a registered task kind (the built-ins are :class:`TaskKind`)."""
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
        if self.kind != TaskKind.NONE and (self.node is None) == (self.tool is None):
            raise FieldError(
                f"task {self.kind!r} needs exactly one of node (a workflow node) or tool (alias.tool)",
                loc=("node",),
            )
        if self.kind == TaskKind.CROP_EVERY and not self.class_name:
            raise FieldError("task 'crop_every' needs class_name (which objects to crop)", loc=("class_name",))
        return self


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
    agent: Annotated[SerializeAsAny[AgentSpec], by_kind("agent")]
    """Who plans and makes the calls: an agent kind from the registry (``scripted``, ``retrieval``, ``llm``,
    ``multi``, or a plug-in's ``distribution/kind``), with that kind's settings."""
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
        workflow = getattr(self.agent, "workflow", None)
        return workflow if isinstance(workflow, Workflow) else None

    @property
    def plans_for_itself(self) -> bool:
        """Whether the agent chooses its own calls (then ``expect`` must be empty: what it causes is measured)."""
        return type(self.agent).plans_for_itself

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
        if not isinstance(workflow, Workflow):
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
