"""Scenario models: one YAML scenario file, validated as frozen pydantic models.

The models hold data only: checks that depend on the machine (does an image
file exist, is a packaged image installed) are made by the loader, so a
scenario recorded in a log validates anywhere.
"""

from __future__ import annotations

import re
import shlex
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from testbed._errors import LocatedError
from testbed.contracts import ContractsSpec
from testbed.defenses import Defenses
from testbed.faults import FaultSpec
from testbed.profile import CAPABILITIES, PRESETS, ConventionProfile, ProfileError, truth_manifest
from testbed.protocol import ServerTruth, load_truth_file
from testbed.registry import RECORDED_CONTEXT, AgentSpec, RecordedAgentSpec, by_kind, registry
from testbed.scenes import BASE_DIR_CONTEXT, ImageSet, SceneSpec
from testbed.security import AttackSpec
from testbed.transport import TransportKind
from testbed.workflow import (
    IDENTIFIER_JSON_SCHEMA,
    Workflow,
    WorkflowError,
    WorkflowNode,
    check_identifier,
    check_server_aliases,
)

__all__ = [
    "MAX_RUNS",
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


MAX_RUNS: Final = 100_000
"""The most runs a scenario may ask for (a bound on a typo such as ``runs: 1000000000``)."""

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class FieldError(LocatedError):
    """A cross-field check that failed; ``loc`` is the offending field, relative to the model validated."""


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


Transport = TransportKind
"""How the testbed reaches a server (the default: in process)."""


_EXTERNAL_TRANSPORTS: Final[dict[str, TransportKind]] = {"command": "stdio", "url": "http"}
"""The transport each kind of external server implies."""
_TRUTH_JSON_SCHEMA: Final = {
    "anyOf": [
        {"type": "string", "description": "a truth file (scenarios/truth.schema.json), relative to this file's folder"},
        {"type": "object", "description": "an inline truth manifest (scenarios/truth.schema.json)"},
    ]
}
_PROFILE_JSON_SCHEMA: Final = {
    "anyOf": [
        {"type": "string", "enum": sorted(PRESETS), "description": "a preset: a named server written as a profile"},
        {"type": "object", "description": "an inline convention profile (testbed.profile.ConventionProfile)"},
    ]
}


class ServerRef(BaseModel):
    """A server the workflow calls: a registered one by name, or any MCP server by ``command`` or ``url``.

    Give exactly one of ``server``, ``command`` and ``url``. An external server's transport is
    implied (``stdio`` for a command, ``http`` for a URL); a ``transport`` that contradicts it is refused.
    """

    model_config = ConfigDict(
        **_MODEL_CONFIG,
        json_schema_extra={"oneOf": [{"required": ["server"]}, {"required": ["command"]}, {"required": ["url"]}]},
    )

    server: str | None = Field(default=None, min_length=1)
    """The server's name in the testbed's registry (checked when the scenario runs)."""
    command: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(default=None, min_length=1)
    """An external MCP server started as this command over stdio, e.g. ``[python, server.py]``."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables for a ``command`` server, over a minimal inherited set (``HOME``, ``PATH``, ...).
    They are recorded with the scenario: pass no secrets here."""
    cwd: Path | None = None
    """The working folder of a ``command`` server (relative to the scenario file's folder); default: the testbed's."""
    url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    """An external MCP server already listening for streamable HTTP, e.g. ``http://127.0.0.1:8000/mcp``."""
    truth: Annotated[ServerTruth | None, WithJsonSchema(_TRUTH_JSON_SCHEMA)] = None
    """What the server actually does: a truth file (relative to the scenario file's folder), read when the
    scenario loads. Without one, an external server's validators read what its ``tools/list`` declares."""
    transport: Transport = "inprocess"
    """How to reach it: ``inprocess`` (memory streams), ``stdio`` (a subprocess) or ``http`` (streamable HTTP)."""
    profile: Annotated[ConventionProfile | None, WithJsonSchema(_PROFILE_JSON_SCHEMA)] = None
    """For a parametric server (``detect``, ``segment``, ``crop``, ``crop-mask``, ``measure``): the conventions
    it follows, inline or as a preset's name (``crop-xywh``). Its truth manifest derives from it."""

    @property
    def external(self) -> bool:
        """Whether this is a server the registry does not hold (given by ``command`` or ``url``)."""
        return self.server is None

    @property
    def display_name(self) -> str:
        """How records and messages name it: the registry name, else ``command 'python x.py'`` or ``url U``."""
        if self.server is not None:
            return self.server
        if self.command is not None:
            return f"command {shlex.join(self.command)!r}"
        return f"url {self.url}"

    @model_validator(mode="before")
    @classmethod
    def _imply_transport(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = [key for key in ("server", *_EXTERNAL_TRANSPORTS) if data.get(key) is not None]
        if len(given) != 1 or given[0] == "server":
            return data  # the after-check names what is missing or doubled
        implied = _EXTERNAL_TRANSPORTS[given[0]]
        transport = data.get("transport")
        if transport is not None and transport != implied:
            raise FieldError(
                f"a {given[0]} server speaks {implied}, not {transport!r}: leave transport out", loc=("transport",)
            )
        return {**data, "transport": implied}

    @model_validator(mode="before")
    @classmethod
    def _resolve_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("profile"), str):
            return data
        name = data["profile"]
        preset = PRESETS.get(name)
        if preset is None:
            raise FieldError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}", loc=("profile",))
        if data.get("server") not in (None, preset.capability):
            raise FieldError(
                f"preset {name!r} is a {preset.capability} profile, not one for {data.get('server')!r}",
                loc=("profile",),
            )
        return {**data, "profile": preset.profile}

    @field_validator("truth", mode="before")
    @classmethod
    def _read_truth_file(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str | Path):
            return value
        base = info.context.get(BASE_DIR_CONTEXT) if isinstance(info.context, dict) else None
        path = Path(value)
        return load_truth_file((Path(base) / path if base is not None else path).absolute())

    @field_validator("cwd")
    @classmethod
    def _resolve_cwd(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        base = info.context.get(BASE_DIR_CONTEXT) if isinstance(info.context, dict) else None
        return (Path(base) / value).absolute() if value is not None and base is not None else value

    @model_validator(mode="after")
    def _check_exactly_one(self) -> Self:
        given = [name for name in ("server", "command", "url") if getattr(self, name) is not None]
        if len(given) != 1:
            found = f"got {' and '.join(given)}" if given else "got none"
            raise ValueError(
                "give exactly one of 'server' (a registered server), 'command' (an MCP server over stdio) "
                f"or 'url' (an MCP server over streamable HTTP) ({found})"
            )
        for name in ("env", "cwd"):
            if getattr(self, name) and self.command is None:
                raise FieldError(f"{name} applies to a command server only", loc=(name,))
        if self.profile is not None:
            self._derive_truth(self.profile)
        return self

    def _derive_truth(self, profile: ConventionProfile) -> None:
        """A profiled server's truth manifest is its profile's, so nothing else may give one."""
        if self.server not in CAPABILITIES:
            raise FieldError(
                f"a profile applies to a parametric server ({', '.join(CAPABILITIES)}), not {self.display_name!r}",
                loc=("profile",),
            )
        if self.truth is not None:
            raise FieldError("a profiled server's truth derives from its profile: leave truth out", loc=("truth",))
        try:
            truth = truth_manifest(self.server, profile, name=self.server)
        except ProfileError as error:
            raise FieldError(error.message, loc=("profile", *error.loc)) from None
        object.__setattr__(self, "truth", truth)

    @property
    def profiled(self) -> bool:
        """Whether this is a parametric server with a profile (its tools and truth are the profile's)."""
        return self.profile is not None

    @model_serializer(mode="wrap")
    def _leave_out_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Fields a server does not use are left out, so a registered server's record reads as it always has."""
        data: dict[str, Any] = handler(self)
        if self.profile is not None:
            data.pop("truth", None)  # derived from the profile when the scenario is read back
        return {key: value for key, value in data.items() if value is not None and value != {}}


class SceneSource(BaseModel):
    """Where each run's scene comes from: exactly one registered scene source, by name.

    The built-ins are ``synthetic`` (seeded shape scenes) and ``images`` (a fixed set of real
    images); a plug-in's is ``distribution/name`` with the settings its spec defines.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="allow",
        use_attribute_docstrings=True,
        json_schema_extra={"minProperties": 1, "maxProperties": 1},
    )

    synthetic: SceneSpec | None = None
    """A synthetic scene generator; each run draws a new scene from the seed and run index (``{}`` for defaults)."""
    images: ImageSet | None = None
    """A fixed set of real images, cycled over the runs."""

    @model_validator(mode="before")
    @classmethod
    def _empty_synthetic_means_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "synthetic" in data and data["synthetic"] is None:
            if any(value is not None for key, value in data.items() if key != "synthetic"):
                return data  # another source is given (a recorded header dumps ``synthetic: null`` beside it)
            return {**data, "synthetic": {}}
        return data

    @model_validator(mode="after")
    def _check_exactly_one(self, info: ValidationInfo) -> Self:
        sources = registry().scene_sources
        extra = self.__pydantic_extra__ or {}
        for name, value in extra.items():
            plugin = sources.get(name)
            if plugin is None and _from_recording(info):
                continue  # a plug-in's source this install lacks: replay reads the recorded scenes
            if plugin is None:
                known = ", ".join(sources)
                raise FieldError(f"unknown scene source {name!r}; expected one of: {known}", loc=(name,))
            extra[name] = plugin.spec.model_validate(value)
        given = [name for name in ("synthetic", "images") if getattr(self, name) is not None] + list(extra)
        if len(given) != 1:
            found = {0: "got neither", 2: "got both"}.get(len(given), f"got {', '.join(given)}")
            raise ValueError(f"give exactly one of 'synthetic' or 'images' ({found}), or one plug-in scene source")
        return self

    @property
    def selected(self) -> tuple[str, BaseModel]:
        """The scene source's name and its validated settings."""
        if self.synthetic is not None:
            return "synthetic", self.synthetic
        if self.images is not None:
            return "images", self.images
        name, spec = next(iter((self.__pydantic_extra__ or {}).items()))
        return name, spec


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


def _from_recording(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get(RECORDED_CONTEXT))


def _check_task_kind(kind: str, info: ValidationInfo) -> str:
    known = registry().tasks
    if kind not in known and not _from_recording(info):
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


class Observability(BaseModel):
    """Observability hooks of a scenario (all off by default)."""

    model_config = ConfigDict(**_MODEL_CONFIG, title="Observability")

    spans: bool = False
    """Export an OpenTelemetry span per call (and the MCP SDK's spans) as OTLP JSON to ``DIR/spans.otlp.jsonl``."""


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
    runs: StrictInt = Field(ge=1, le=MAX_RUNS)
    """How many runs to make: 1 to ``MAX_RUNS`` (100,000)."""
    scene: SceneSource
    """Where each run's image comes from."""
    servers: dict[ServerAlias, ServerRef]
    """The servers the agent may call, by alias (the part before the dot in a call)."""
    task: Task
    """What each run is scored on."""
    agent: Annotated[SerializeAsAny[AgentSpec], by_kind("agent", recorded=RecordedAgentSpec)]
    """Who plans and makes the calls: an agent kind from the registry (``scripted``, ``retrieval``, ``llm``,
    ``multi``, or a plug-in's ``distribution/kind``), with that kind's settings."""
    expect: tuple[ViolationId, ...] = ()
    """Violation IDs the scenario is designed to produce (the self-check asserts them)."""
    faults: tuple[FaultSpec, ...] = ()
    """Faults to inject (selected by ``kind``; see ``testbed.faults.FAULT_CATALOG``), decided from the seed."""
    deadline_s: float = Field(default=60.0, gt=0)
    """Default deadline of each tool call in seconds (a node's ``deadline_s`` overrides it)."""
    observability: Observability = Field(default_factory=Observability, exclude_if=lambda value: not value.spans)
    """What the run exports besides its events: ``spans: true`` writes an OpenTelemetry span per call
    to ``DIR/spans.otlp.jsonl`` (see :mod:`testbed.telemetry`). Off: left out of the recorded scenario, so
    experiment ids made before it existed still match."""
    defenses: Defenses = Field(default_factory=Defenses, exclude_if=lambda value: value == Defenses())
    """The defenses the orchestrator enforces (``tool_pinning``, ``role_binding``, ``scoped_memory``,
    ``provenance_tags``; all off by default): see :mod:`testbed.defenses`. At their defaults: left out of the
    recorded scenario, so experiment ids made before defenses existed still match."""
    attack: AttackSpec | None = Field(default=None, exclude_if=lambda value: value is None)
    """The attack the scenario exercises (vector and goal), judged per run as ``security.attack_succeeded``;
    absent: no attack (and left out of the recorded scenario)."""
    contracts: ContractsSpec | None = Field(default=None, exclude_if=lambda value: value is None)
    """Runtime contracts on every workflow edge, with the policy that answers a breach (``halt``, ``convert``,
    ``replan``, ``fallback``) and the rules checked: see :mod:`testbed.contracts`. Absent: none (and left out
    of the recorded scenario, so experiment ids made before contracts existed still match)."""

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
    def _check_references(self, info: ValidationInfo) -> Self:
        if _from_recording(info):
            return self  # checked when it was recorded; a kind this install lacks cannot be checked again
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
        for loc, alias in self.attack.aliases if self.attack is not None else ():
            if alias not in self.servers:
                raise FieldError(
                    f"attack names unknown server alias {alias!r} (servers: {', '.join(self.servers)})",
                    loc=("attack", *loc),
                )
        for name in self.defenses.privileges:
            if name.partition(".")[0] not in self.servers:
                raise FieldError(
                    f"privilege for {name!r} names an unknown server alias (servers: {', '.join(self.servers)})",
                    loc=("defenses", "privileges", name),
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
