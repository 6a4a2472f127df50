"""The one registry of everything the testbed hosts: servers, agents, fault kinds, validators, task checkers.

Plug-ins register *factories* with decorators, and each registration is
checked at once (pluggy's habit): a truth manifest named differently from its
server, a manifest whose tools differ from the ones the server declares, or a
violation ID missing from :data:`testbed.catalog.CATALOG` is a one-line
:class:`PluginError` naming the plug-in, the object and the fix.

Distributions reach the registry through one entry-point group,
``mcp_vision_testbed``; :func:`registry` loads it once per process. The
built-in servers and agents (``servers``, ``agents``) arrive exactly that way;
the core's own fault kinds, validators and task checkers are loaded from
:data:`CORE_MODULES` by the same loader. Built-ins keep bare names; a plug-in's
names are namespaced ``distribution/name``.

A plug-in that fails to import or register is reported as one warning line
(logger ``testbed.plugins``) and left out; the others still load.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, TypeVar

import anyio
import mcp.types as types
from mcp import Client
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic_core import PydanticCustomError, core_schema

from testbed._errors import TestbedError
from testbed.catalog import CATALOG
from testbed.protocol import ServerTruth
from testbed.server_config import ServerConfig

if TYPE_CHECKING:
    from testbed.agent import Agent, ModelEvents
    from testbed.events import Event
    from testbed.scenes import Scene

__all__ = [
    "BUILTIN_DISTRIBUTION",
    "CORE_MODULES",
    "GROUP",
    "RECORDED_CONTEXT",
    "AgentPlugin",
    "AgentSpec",
    "FaultPlugin",
    "LoadedEntryPoint",
    "Origin",
    "PluginError",
    "RecordedAgentSpec",
    "Registry",
    "SceneSourcePlugin",
    "ServerPlugin",
    "TaskPlugin",
    "ValidatorPlugin",
    "agent",
    "by_kind",
    "fault_kind",
    "registry",
    "scene_source",
    "server",
    "task_checker",
    "validator",
]

GROUP: Final = "mcp_vision_testbed"
"""The entry-point group every plug-in distribution (and the built-in servers and agents) registers under."""
BUILTIN_DISTRIBUTION: Final = "mcp-vision-testbed"
"""This project's distribution: its plug-ins keep bare names."""
CORE_MODULES: Final = ("testbed.faults", "testbed.validators", "testbed.tasks", "testbed.scenes")
"""The core's own plug-in modules: fault kinds, validators, task checkers and scene sources."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_log = logging.getLogger("testbed.plugins")


class PluginError(TestbedError):
    """A plug-in that cannot be registered, as one line: ``plugin P: KIND 'NAME': problem; fix``."""


@dataclass(frozen=True)
class Origin:
    """Where a registered object came from."""

    distribution: str
    """The distribution that registered it (``mcp-vision-testbed`` for built-ins)."""
    entry_point: str | None = None
    """The entry point that loaded it (``name = value``), or ``None`` when registered directly from code."""

    def __str__(self) -> str:
        return f"{self.distribution} ({self.entry_point})" if self.entry_point else self.distribution


@dataclass(frozen=True)
class _Context:
    namespace: str
    origin: Origin


_BUILTIN_ORIGIN: Final = Origin(BUILTIN_DISTRIBUTION)
_BUILTIN: Final = _Context(namespace="", origin=_BUILTIN_ORIGIN)
_loading: ContextVar[_Context | None] = ContextVar("_loading", default=None)


ServerFactory = Callable[[ServerConfig], Any]
"""Builds a fresh MCP server object (``MCPServer`` or a low-level ``Server``) from a configuration."""


@dataclass(frozen=True)
class ServerPlugin:
    """A registered server: its factory, what it actually does, and what it declares."""

    name: str
    """Registry name: bare for built-ins, ``distribution/name`` for plug-ins (``testbed serve NAME``)."""
    truth: ServerTruth
    """What it actually does (held by the testbed, never sent); named like the server."""
    build: ServerFactory
    preload: Callable[[ServerConfig], None] | None
    """Loads and warms its models before it serves, so no first call's deadline includes loading."""
    tools: tuple[types.Tool, ...]
    """The tools it declares (``tools/list`` of a freshly built server), checked against the manifest."""
    origin: Origin

    def tool(self, name: str) -> types.Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)


class AgentSpec(BaseModel):
    """The scenario's ``agent`` section: what every agent kind's settings share. Each kind registers a subclass."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    kind: str
    """Discriminator: the registered agent kind."""
    grants: tuple[str, ...] | None = None
    """Tools the agent may call, as ``alias.tool``; ``None`` grants every tool. Calls outside it are violations."""

    plans_for_itself: ClassVar[bool] = False
    """Whether the agent chooses its own calls (its scenarios then promise no ``expect`` list: they measure)."""

    @field_validator("grants")
    @classmethod
    def _check_grants(cls, grants: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for grant in grants or ():
            alias, dot, tool = grant.partition(".")
            if not dot or not alias or not tool or "." in tool:
                raise ValueError(f"grant {grant!r} must be '<server alias>.<tool name>' with exactly one dot")
        return grants


class RecordedAgentSpec(AgentSpec):
    """An agent kind this install lacks (a plug-in's), read back from a recording: its settings as recorded."""

    model_config = ConfigDict(frozen=True, extra="allow", use_attribute_docstrings=True)


class AgentFactory(Protocol):
    def __call__(self, spec: Any, models: ModelEvents, *, seed: int) -> Agent: ...


@dataclass(frozen=True)
class AgentPlugin:
    """A registered agent kind: its scenario settings, its factory, and the models it needs."""

    kind: str
    spec: type[AgentSpec]
    build: AgentFactory
    live_models: Callable[[Any], ModelEvents] | None
    """Recording clients around the models the agent needs (loaded on first use); ``None``: it needs none."""
    replay_models: Callable[[Any, Sequence[Event]], ModelEvents] | None
    """Clients that answer from a recording, loading no model."""
    origin: Origin


@dataclass(frozen=True)
class FaultPlugin:
    """A registered fault kind: its spec class carries its layer, expected IDs and whether its call waits."""

    kind: str
    spec: type[BaseModel]
    origin: Origin


@dataclass(frozen=True)
class ValidatorPlugin:
    """A registered per-run validator and the catalogued IDs it may emit."""

    name: str
    emits: tuple[str, ...]
    check: Callable[[Any], Iterable[Any]]
    """A pure function of one recorded run (:class:`testbed.validators.RunRecord`) to its violations."""
    origin: Origin = _BUILTIN_ORIGIN


@dataclass(frozen=True)
class TaskPlugin:
    """A registered task checker: did a run achieve what the scenario asked, judged against ground truth?"""

    kind: str
    check: Callable[..., tuple[bool | None, str]]
    origin: Origin


class SceneLoader(Protocol):
    def __call__(self, spec: Any, *, seed: int, run: int, base_dir: Path | None) -> Scene: ...


@dataclass(frozen=True)
class SceneSourcePlugin:
    """A registered scene source: ``scene: {NAME: settings}`` in a scenario."""

    name: str
    spec: type[BaseModel]
    """Its settings (the value under its name in ``scene:``)."""
    load: SceneLoader
    """The scene of one run: a pure function of (settings, experiment seed, run index)."""
    origin: Origin


@dataclass(frozen=True)
class LoadedEntryPoint:
    """One entry point the loader tried."""

    name: str
    value: str
    distribution: str
    registered: tuple[str, ...]
    """What it registered, as ``kind name`` lines."""
    error: str | None = None
    """Why it was left out, or ``None`` when it loaded."""


@dataclass
class Registry:
    """Every registered plug-in, by kind and name."""

    servers: dict[str, ServerPlugin] = field(default_factory=dict)
    agents: dict[str, AgentPlugin] = field(default_factory=dict)
    faults: dict[str, FaultPlugin] = field(default_factory=dict)
    validators: dict[str, ValidatorPlugin] = field(default_factory=dict)
    tasks: dict[str, TaskPlugin] = field(default_factory=dict)
    scene_sources: dict[str, SceneSourcePlugin] = field(default_factory=dict)
    entry_points: list[LoadedEntryPoint] = field(default_factory=list)
    """Every entry point tried, in load order, with what it registered or why it failed."""

    def server(self, name: str) -> ServerPlugin:
        """The server registered as ``name``.

        Raises:
            TestbedError: none is; the message lists the known names.
        """
        return _lookup(self.servers, name, "server")

    def agent(self, kind: str) -> AgentPlugin:
        return _lookup(self.agents, kind, "agent kind")

    def fault(self, kind: str) -> FaultPlugin:
        return _lookup(self.faults, kind, "fault kind")

    def task(self, kind: str) -> TaskPlugin:
        return _lookup(self.tasks, kind, "task kind")

    def scene_source(self, name: str) -> SceneSourcePlugin:
        return _lookup(self.scene_sources, name, "scene source")

    def validator_list(self) -> tuple[ValidatorPlugin, ...]:
        """Every validator, built-ins first, in registration order."""
        return tuple(self.validators.values())

    def _tables(self) -> dict[str, dict[str, Any]]:
        return {
            "server": self.servers,
            "agent": self.agents,
            "fault": self.faults,
            "validator": self.validators,
            "task": self.tasks,
            "scene source": self.scene_sources,
        }

    def _add(self, kind: str, name: str, plugin: Any, *, same: Callable[[Any], bool]) -> None:
        table = self._tables()[kind]
        existing = table.get(name)
        if existing is not None:
            if same(existing):
                return  # the same object registered again (a module imported twice): nothing changes
            raise PluginError(
                f"plugin {plugin.origin}: {kind} {name!r} is already registered by {existing.origin}; "
                "choose another name"
            )
        table[name] = plugin
        added = _registered_now.get()
        if added is not None:
            added.append((kind, name))

    def _adopt(self, module: str, origin: Origin) -> list[tuple[str, str]]:
        """Attribute to ``origin`` what ``module`` registered before its entry point was loaded (it was
        imported directly, e.g. by a test), so ``testbed plugins`` still says where everything came from."""
        adopted = []
        for kind, table in self._tables().items():
            for name, plugin in table.items():
                defined_in = _defining_module(plugin)
                inside = defined_in == module or defined_in.startswith(module + ".")
                if inside and plugin.origin.entry_point is None:
                    table[name] = replace(plugin, origin=origin)
                    adopted.append((kind, name))
        return adopted

    def _remove(self, entries: Iterable[tuple[str, str]]) -> None:
        for kind, name in entries:
            self._tables()[kind].pop(name, None)


P = TypeVar("P")


def _defining_module(plugin: Any) -> str:
    """The module that defined a registered object (its factory, check or spec class)."""
    for attribute in ("build", "check", "load", "spec"):
        defined = getattr(plugin, attribute, None)
        if defined is not None:
            return str(getattr(defined, "__module__", ""))
    return ""


def _lookup(table: Mapping[str, P], name: str, what: str) -> P:
    try:
        return table[name]
    except KeyError:
        raise TestbedError(f"unknown {what} {name!r}; known: {', '.join(table) or 'none'}") from None


_REGISTRY = Registry()
_target: ContextVar[Registry | None] = ContextVar("_target", default=None)
"""The registry an entry point registers into while :func:`load_entry_points` loads it."""


def _registering_into() -> Registry:
    return _target.get() or _REGISTRY


_registered_now: ContextVar[list[tuple[str, str]] | None] = ContextVar("_registered_now", default=None)
"""While the loader loads an entry point: what it has registered so far (taken back if it then fails)."""
_load_lock = threading.Lock()
_loaded = False


def registry() -> Registry:
    """The process's registry, with the core's plug-ins and every entry-point plug-in loaded (once)."""
    global _loaded
    if not _loaded:
        with _load_lock:
            if not _loaded:
                _load_all(_REGISTRY)
                _loaded = True
    return _REGISTRY


def _load_all(target: Registry) -> int:
    for module in CORE_MODULES:
        importlib.import_module(module)  # registers the core's kinds (decorators run at import)
    return load_entry_points(target)


def load_entry_points(target: Registry | None = None, *, points: Iterable[EntryPoint] | None = None) -> int:
    """Load every entry point of :data:`GROUP` (or ``points``); return how many loaded.

    A plug-in that fails to import or register is logged as one warning line
    naming its distribution and the error, and whatever it registered before
    failing is taken back; the others still load.
    """
    reg = target if target is not None else _REGISTRY
    loaded = 0
    for point in points if points is not None else entry_points(group=GROUP):
        distribution = point.dist.name if point.dist is not None else "unknown distribution"
        builtin = _normalize(distribution) == BUILTIN_DISTRIBUTION
        context = _Context(
            namespace="" if builtin else _normalize(distribution),
            origin=Origin(distribution, f"{point.name} = {point.value}"),
        )
        added: list[tuple[str, str]] = []
        error: str | None = None
        context_token, added_token, target_token = _loading.set(context), _registered_now.set(added), _target.set(reg)
        try:
            target_object = point.load()
            if callable(target_object) and not isinstance(target_object, ModuleType):
                target_object()
        except Exception as failure:  # a broken plug-in must never take the testbed down with it
            error = _first_line(failure)
        finally:
            _loading.reset(context_token)
            _registered_now.reset(added_token)
            _target.reset(target_token)
        if error is not None:
            reg._remove(added)
            _log.warning("testbed: plug-in %s from %s not loaded: %s", point.name, distribution, error)
            added = []
        else:
            added += reg._adopt(point.module, context.origin)
            loaded += 1
        registered = tuple(f"{kind} {name}" for kind, name in added)
        reg.entry_points.append(LoadedEntryPoint(point.name, point.value, distribution, registered, error))
    return loaded


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    if isinstance(error, TestbedError) and text:
        return text[0]
    return f"{error.__class__.__name__}: {text[0]}" if text else error.__class__.__name__


def _normalize(distribution: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", distribution.lower()).strip("-")


def _context() -> _Context:
    return _loading.get() or _BUILTIN


def _qualified(name: str, what: str) -> str:
    context = _context()
    if not _NAME.match(name):
        raise PluginError(
            f"plugin {context.origin}: {what} {name!r}: names are lowercase letters, digits, '-', '_' and '.'; "
            "rename it"
        )
    return f"{context.namespace}/{name}" if context.namespace else name


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T", bound=BaseModel)


def server(name: str, *, truth: ServerTruth, preload: Callable[[ServerConfig], None] | None = None) -> Callable[[F], F]:
    """Register a server factory ``build(config) -> MCPServer | Server`` under ``name``.

    Args:
        name: its name (a plug-in's is served as ``distribution/name``).
        truth: what it actually does; ``truth.name`` must be ``name``, and its tools exactly the declared ones.
        preload: loads its models before it serves (optional).

    Raises:
        PluginError: the manifest is misnamed or lists other tools than the server declares, or the name is taken.
    """

    def register(build: F) -> F:
        context = _context()
        qualified = _qualified(name, "server")
        where = f"plugin {context.origin}: server {name!r}"
        if truth.name not in (name, qualified):
            raise PluginError(f"{where}: its truth manifest is named {truth.name!r}; name it {name!r}")
        tools = _declared_tools(build, where)
        declared, manifest = {tool.name for tool in tools}, {tool.name for tool in truth.tools}
        if declared != manifest:
            missing, extra = sorted(declared - manifest), sorted(manifest - declared)
            problems = [f"declares {missing} that the manifest omits"] if missing else []
            problems += [f"the manifest lists {extra} that the server does not declare"] if extra else []
            raise PluginError(f"{where}: {' and '.join(problems)}; make the truth manifest list exactly its tools")
        plugin = ServerPlugin(
            name=qualified,
            truth=truth.model_copy(update={"name": qualified}),
            build=build,
            preload=preload,
            tools=tools,
            origin=context.origin,
        )
        _registering_into()._add("server", qualified, plugin, same=lambda old: old.build is build)
        return build

    return register


def _declared_tools(build: ServerFactory, where: str) -> tuple[types.Tool, ...]:
    """List the tools of a freshly built server through an in-memory MCP client (in a thread of its own,
    so registration works whether or not an event loop is running)."""

    async def listing() -> list[types.Tool]:
        async with Client(build(ServerConfig()), cache=None) as client:
            return list((await client.list_tools()).tools)

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return tuple(pool.submit(anyio.run, listing).result(timeout=60))
    except Exception as error:  # the plug-in's own code failed: report it as the plug-in's error
        raise PluginError(f"{where}: building it and listing its tools failed: {_first_line(error)}") from None


def agent(
    kind: str,
    *,
    spec: type[AgentSpec],
    live_models: Callable[[Any], ModelEvents] | None = None,
    replay_models: Callable[[Any, Sequence[Event]], ModelEvents] | None = None,
) -> Callable[[F], F]:
    """Register an agent factory ``build(spec, models, *, seed) -> Agent`` for ``agent.kind: KIND``.

    Raises:
        PluginError: ``spec`` is not an :class:`AgentSpec` whose ``kind`` defaults to ``kind``, or the kind is taken.
    """

    def register(build: F) -> F:
        context = _context()
        qualified = _qualified(kind, "agent kind")
        where = f"plugin {context.origin}: agent kind {kind!r}"
        default = spec.model_fields["kind"].default if issubclass(spec, AgentSpec) else None
        if default != qualified:
            raise PluginError(
                f"{where}: its spec must subclass testbed.registry.AgentSpec with kind: Literal[{qualified!r}]"
            )
        plugin = AgentPlugin(qualified, spec, build, live_models, replay_models, context.origin)
        _registering_into()._add("agent", qualified, plugin, same=lambda old: old.build is build)
        return build

    return register


def fault_kind(spec: type[T]) -> type[T]:
    """Register a fault spec class (a :class:`testbed.faults.Fault` subclass) under its ``kind``.

    Raises:
        PluginError: the kind is taken, or it expects violation IDs missing from the catalog.
    """
    context = _context()
    kind = str(spec.model_fields["kind"].default)
    qualified = _qualified(kind.rpartition("/")[2], "fault kind")
    where = f"plugin {context.origin}: fault kind {kind!r}"
    if qualified != kind:
        raise PluginError(f"{where}: a plug-in's fault kind is namespaced; set kind: Literal[{qualified!r}]")
    expected: tuple[str, ...] = getattr(spec, "expected", ())
    _check_ids(expected, where, "expects")
    check: Callable[[], str | None] | None = getattr(spec, "registration_problem", None)
    problem = check() if check is not None else None
    if problem is not None:
        raise PluginError(f"{where}: {problem}")
    _registering_into()._add("fault", kind, FaultPlugin(kind, spec, context.origin), same=lambda old: old.spec is spec)
    return spec


def validator(name: str, *, emits: Sequence[str]) -> Callable[[F], F]:
    """Register a per-run validator ``check(record) -> Iterable[Violation]`` that may emit ``emits``.

    Raises:
        PluginError: an ID it may emit is not in the catalog, or the name is taken.
    """

    def register(check: F) -> F:
        context = _context()
        qualified = _qualified(name, "validator")
        _check_ids(tuple(emits), f"plugin {context.origin}: validator {name!r}", "emits")
        plugin = ValidatorPlugin(qualified, tuple(emits), check, context.origin)
        _registering_into()._add("validator", qualified, plugin, same=lambda old: old.check is check)
        return check

    return register


def task_checker(kind: str) -> Callable[[F], F]:
    """Register a task checker for ``task.kind: KIND`` (see :func:`testbed.tasks.check_task` for the signature)."""

    def register(check: F) -> F:
        context = _context()
        qualified = _qualified(kind, "task kind")
        plugin = TaskPlugin(qualified, check, context.origin)
        _registering_into()._add("task", qualified, plugin, same=lambda old: old.check is check)
        return check

    return register


def scene_source(name: str, *, spec: type[BaseModel]) -> Callable[[F], F]:
    """Register a scene source ``load(settings, *, seed, run, base_dir) -> Scene`` for ``scene: {NAME: ...}``."""

    def register(load: F) -> F:
        context = _context()
        qualified = _qualified(name, "scene source")
        plugin = SceneSourcePlugin(qualified, spec, load, context.origin)
        _registering_into()._add("scene source", qualified, plugin, same=lambda old: old.load is load)
        return load

    return register


def _check_ids(ids: Sequence[str], where: str, verb: str) -> None:
    unknown = [violation_id for violation_id in ids if violation_id not in CATALOG]
    if unknown:
        raise PluginError(
            f"{where}: {verb} {', '.join(map(repr, unknown))}, not in the violation catalog; "
            "use catalogued IDs (testbed.catalog.CATALOG)"
        )


@contextmanager
def registering_as(distribution: str) -> Iterator[None]:
    """Register what the block registers as plug-ins of ``distribution`` (namespaced), as the loader would."""
    token = _loading.set(_Context(_normalize(distribution), Origin(distribution)))
    try:
        yield
    finally:
        _loading.reset(token)


RECORDED_CONTEXT: Final = "recorded"
"""Validation-context key: the data comes from a recording (a run header), not from a user's file."""


def _from_recording(context: Any) -> bool:
    return isinstance(context, dict) and bool(context.get(RECORDED_CONTEXT))


class by_kind:  # noqa: N801  (used as an annotation marker, like pydantic's own)
    """Annotation metadata: validate a model field by looking its ``kind`` up in the registry.

    ``Annotated[AgentSpec, by_kind("agent")]`` validates ``{"kind": "llm", ...}`` with
    the spec class registered for ``llm``, so a plug-in's kinds are valid in any
    scenario. Errors keep their field locations; an unknown kind lists the known ones.
    """

    def __init__(self, table: str, *, recorded: type[BaseModel] | None = None) -> None:
        """Args:
        table: ``"agent"`` or ``"fault"``.
        recorded: validates a kind this install lacks when the data comes from a recording
            (validation context :data:`RECORDED_CONTEXT`), so an experiment recorded with a
            plug-in replays without it.
        """
        self.table = table
        self.recorded = recorded

    def specs(self) -> dict[str, type[BaseModel]]:
        """The registered spec classes, by kind."""
        reg = registry()
        plugins: Mapping[str, AgentPlugin | FaultPlugin] = reg.agents if self.table == "agent" else reg.faults
        return {name: plugin.spec for name, plugin in plugins.items()}

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        def validate(value: Any, info: core_schema.ValidationInfo) -> Any:
            if isinstance(value, BaseModel) and isinstance(value, source):
                return value
            if not isinstance(value, dict):
                raise PydanticCustomError(
                    "model_type", "must be a mapping with a 'kind' field, got {got}", {"got": type(value).__name__}
                )
            specs = self.specs()
            kind = value.get("kind")
            if kind is None:
                raise PydanticCustomError("union_tag_not_found", "missing 'kind'", {"discriminator": "'kind'"})
            spec = specs.get(kind) if isinstance(kind, str) else None
            if spec is None and self.recorded is not None and _from_recording(info.context):
                spec = self.recorded
            if spec is None:
                raise PydanticCustomError(
                    "union_tag_invalid",
                    "unknown kind {tag}",
                    {"discriminator": "'kind'", "tag": str(kind), "expected_tags": ", ".join(specs)},
                )
            return spec.model_validate(value, context=info.context)

        def serialize(value: BaseModel, info: core_schema.SerializationInfo) -> Any:
            return value.model_dump(mode=info.mode, by_alias=info.by_alias, exclude_none=info.exclude_none)

        return core_schema.with_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(serialize, info_arg=True),
        )

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: Any) -> dict[str, Any]:
        return {"oneOf": [handler(spec.__pydantic_core_schema__) for spec in self.specs().values()]}
