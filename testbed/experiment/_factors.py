"""Factor kinds: what an experiment varies, each as a pydantic model that yields its levels.

A factor names the place in a scenario document it changes (:attr:`Factor.changes`) and
its levels; each :class:`Level` is a label and an edit of the scenario document. The
kinds live in one table, :data:`~testbed.experiment._kinds.FACTOR_KINDS`: a new factor is one
more subclass added to it (the extension switches are in :mod:`testbed.experiment._extensions`).

Edits work on the scenario's YAML data, never on the validated model, so every cell
is validated by the scenario loader exactly as a hand-written scenario would be.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Protocol, TypeGuard

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from testbed._errors import LocatedError, Location, first_error
from testbed.experiment._population import PopulationLevels, population_levels, scenario_entries
from testbed.faults import FaultSpec
from testbed.profile import CAPABILITIES, PRESETS
from testbed.registry import AgentSpec, by_kind, registry
from testbed.workflow import EachSegment, FieldSegment, IndexSegment
from testbed.workflow._paths import PayloadPathError, format_payload_path, parse_payload_path

__all__ = [
    "AgentFactor",
    "DeclarationsFactor",
    "Document",
    "Factor",
    "FaultsFactor",
    "Level",
    "OverrideFactor",
    "ScenarioEntry",
    "ScenarioFactor",
    "Sources",
    "Switch",
    "declarations_edit",
    "level_label",
    "profile_edit",
]

_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


@dataclass(frozen=True)
class Document:
    """A scenario as YAML data, with the file its relative paths resolve against."""

    data: dict[str, Any]
    source: Path


class Sources(Protocol):
    """The files a factor reads, named relative to the design file (recorded in the manifest, so a resumed
    experiment reads them from there). Both raise :class:`LocatedError` where there is no such file."""

    def scenario(self, name: str) -> Document:
        """A scenario file, checked by the scenario loader."""

    def text(self, name: str) -> tuple[str, Path]:
        """Any other file's text, and its absolute path."""


Edit = Callable[[Document], Document]
"""A level's change to a scenario document; raises :class:`LocatedError` (located within the level) when the
document cannot take it."""


@dataclass(frozen=True)
class Level:
    """One level of a factor: how tables and directory names show it, and what it does to a scenario."""

    label: str
    edit: Edit


class Factor(BaseModel, ABC):
    """What every factor kind shares. A kind subclasses it with its ``kind`` literal and :meth:`levels`."""

    model_config = _CONFIG

    kind: str
    """Discriminator: the factor kind."""
    labels: tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    """Names for the levels in tables and cell directories, one per level (default: from each level)."""

    slots: ClassVar[bool] = False
    """Whether the factor appends to the scenario's ``faults``, one slot per factor (see :meth:`target`)."""

    @property
    @abstractmethod
    def changes(self) -> str:
        """The scenario field the factor changes (``""``: the whole scenario)."""

    @abstractmethod
    def levels(self, sources: Sources) -> tuple[Level, ...]:
        """The levels, in the order the design gives them (the first is the baseline).

        Args:
            sources: reads the files the factor names, relative to the design file.
        """

    def target(self, slot: int) -> str:
        """The scenario field a cell's error is blamed on, given the factor's slot in ``faults``."""
        return self.changes

    def level_loc(self, index: int) -> Location:
        """Where level ``index`` is written in the factor (what a cell's error points at)."""
        return ("levels", index)

    def _named(self, defaults: list[str], edits: list[Edit]) -> tuple[Level, ...]:
        """Levels with the design's ``labels`` (or ``defaults``, made unique), checked for count and clashes."""
        if self.labels is not None and len(self.labels) != len(edits):
            raise LocatedError(
                f"give one label per level: {len(edits)} levels, {len(self.labels)} labels", loc=("labels",)
            )
        names = list(self.labels) if self.labels is not None else _unique(defaults)
        for index, name in enumerate(names):
            if name in names[:index]:
                raise LocatedError(f"two levels share the label {name!r}", loc=("labels", index))
        return tuple(Level(name, edit) for name, edit in zip(names, edits, strict=True))


def _unique(names: list[str]) -> list[str]:
    return [
        name if names.count(name) == 1 else f"{name}#{names[: index + 1].count(name)}"
        for index, name in enumerate(names)
    ]


def level_label(value: Any) -> str:
    """How a level value is shown: ``on``/``off`` for booleans, ``1`` for ``1.0``, short text for the rest."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, str | int | float) or value is None else _compact(value)


def _compact(value: Any) -> str:
    text = str(value).replace(" ", "")
    return text if len(text) <= 24 else text[:21] + "..."


# --- agent ---------------------------------------------------------------------------------------

_AGENT_SPEC: TypeAdapter[AgentSpec] = TypeAdapter(Annotated[AgentSpec, by_kind("agent")])
_AGENT_LEVELS_SCHEMA: Final = {
    "type": "array",
    "minItems": 1,
    "items": {
        "anyOf": [
            {"type": "string", "description": "an agent kind: the scenario's own agent, which must be of that kind"},
            {"type": "object", "required": ["kind"], "description": "a whole agent section, as in a scenario"},
        ]
    },
}


class AgentFactor(Factor):
    """The agent: a registered agent kind (``scripted``, ``retrieval``, ``llm``, ``multi``) per level.

    A level is a kind name, meaning the scenario's own agent (which must be of that kind), or a whole
    ``agent`` section as a scenario writes it. An agent that plans for itself promises no violations,
    so its cells leave the scenario's ``expect`` empty.
    """

    kind: Literal["agent"] = "agent"
    """Discriminator."""
    levels_: Annotated[tuple[str | dict[str, Any], ...], WithJsonSchema(_AGENT_LEVELS_SCHEMA)] = Field(
        alias="levels", min_length=1
    )
    """The agents, by kind name or as whole agent sections."""

    model_config = ConfigDict(**_CONFIG, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    @field_validator("levels_")
    @classmethod
    def _check_levels(cls, levels: tuple[str | dict[str, Any], ...]) -> tuple[str | dict[str, Any], ...]:
        known = registry().agents
        for index, level in enumerate(levels):
            if isinstance(level, str):
                if level not in known:
                    raise LocatedError(
                        f"unknown agent kind {level!r}; expected one of: {', '.join(known)}", loc=(index,)
                    )
                continue
            try:
                _AGENT_SPEC.validate_python(level)
            except ValidationError as error:
                located = first_error(error)
                raise LocatedError(located.message, loc=(index, *located.loc)) from None
        return levels

    @property
    def changes(self) -> str:
        return "agent"

    def levels(self, sources: Sources) -> tuple[Level, ...]:
        names = [level if isinstance(level, str) else str(level["kind"]) for level in self.levels_]
        return self._named(names, [_agent_edit(level, index) for index, level in enumerate(self.levels_)])


def _agent_edit(level: str | dict[str, Any], index: int) -> Edit:
    kind = level if isinstance(level, str) else str(level["kind"])

    def edit(document: Document) -> Document:
        data = copy.deepcopy(document.data)
        if isinstance(level, str):
            own = data.get("agent", {}).get("kind") if isinstance(data.get("agent"), dict) else None
            if own != kind:
                raise LocatedError(
                    f"{document.source.name}'s agent is {own!r}, not {kind!r}: give this level as a whole agent "
                    f"section ({{kind: {kind}, ...}})",
                    loc=("levels", index),
                )
        else:
            data["agent"] = copy.deepcopy(level)
        if registry().agent(kind).spec.plans_for_itself:
            data["expect"] = []
        return Document(data, document.source)

    return edit


# --- faults --------------------------------------------------------------------------------------

FaultIntensity = Annotated[
    float | bool | Literal["off", "on"],
    WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"enum": ["off", "on"]}, {"type": "boolean"}]}
    ),
]


_FAULT_SCHEMA: Final = {
    "type": "object",
    "required": ["kind", "target"],
    "description": "one entry of a scenario's faults (scenarios/scenario.schema.json)",
}


class FaultsFactor(Factor):
    """One fault at several intensities: its probability per level, ``off`` (0) or ``on`` (the fault's own).

    The fault is appended to the scenario's ``faults`` in every cell, at probability 0 where it is off, so
    it keeps the same position: fault decisions are drawn per (run, node, item, position) and no other
    factor's draws move. A fault at probability p hits a subset of the calls it hits at any q > p.
    """

    kind: Literal["faults"] = "faults"
    """Discriminator."""
    fault: Annotated[FaultSpec, WithJsonSchema(_FAULT_SCHEMA)]
    """The fault, as a scenario's ``faults`` entry (its ``probability`` is what ``on`` means; default 1)."""
    probability: tuple[FaultIntensity, ...] = Field(min_length=1)
    """The levels: probabilities in [0, 1], or ``off`` and ``on`` (0 and the fault's own probability)."""

    slots: ClassVar[bool] = True

    @field_validator("probability")
    @classmethod
    def _check_probability(cls, levels: tuple[float | bool | str, ...]) -> tuple[float | bool | str, ...]:
        for index, level in enumerate(levels):
            if isinstance(level, float) and not isinstance(level, bool) and not 0.0 <= level <= 1.0:
                raise LocatedError(f"must be between 0 and 1, got {level!r}", loc=(index,))
        return levels

    @property
    def changes(self) -> str:
        return "faults"

    def target(self, slot: int) -> str:
        return f"faults[{slot}]"

    def level_loc(self, index: int) -> Location:
        return ("fault",)  # what a scenario refuses is the fault, whatever its probability

    def levels(self, sources: Sources) -> tuple[Level, ...]:
        document = self.fault.model_dump(mode="json", by_alias=True, exclude_none=True)
        edits = [_fault_edit(document, self._probability(level)) for level in self.probability]
        return self._named([level_label(level) for level in self.probability], edits)

    def _probability(self, level: float | bool | str) -> float:
        if isinstance(level, bool) or level in ("off", "on"):  # YAML 1.1 reads a bare on/off as a bool
            return self.fault.probability if level in (True, "on") else 0.0
        return float(level)


def _fault_edit(fault: dict[str, Any], probability: float) -> Edit:
    def edit(document: Document) -> Document:
        data = copy.deepcopy(document.data)
        data["faults"] = [*data.get("faults", []), {**fault, "probability": probability}]
        return Document(data, document.source)

    return edit


# --- scenario set --------------------------------------------------------------------------------


ScenarioEntry = Annotated[str, Field(min_length=1)] | PopulationLevels
"""A scenario file, or a sampled population whose workflows are one level each."""


class ScenarioFactor(Factor):
    """A scenario set: each level is a scenario file (relative to the design file), run whole, or one workflow
    of a sampled population (an entry ``{prevalence: FILE, members: N, seed: S, workflows: K}``).

    The design's ``scenario: [a.yaml, b.yaml]`` is this factor, named ``scenario``.
    """

    kind: Literal["scenario"] = "scenario"
    """Discriminator."""
    levels_: Annotated[tuple[ScenarioEntry, ...], BeforeValidator(scenario_entries)] = Field(
        alias="levels", min_length=1
    )
    """The scenario files and populations."""

    model_config = ConfigDict(**_CONFIG, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    @property
    def changes(self) -> str:
        return ""

    def levels(self, sources: Sources) -> tuple[Level, ...]:
        names: list[str] = []
        edits: list[Edit] = []
        for index, level in enumerate(self.levels_):
            try:
                if isinstance(level, str):
                    names.append(Path(level).stem)
                    edits.append(_replace_with(sources.scenario(level)))
                    continue
                text, path = sources.text(level.prevalence)
                for workflow in population_levels(level, text, path):
                    names.append(workflow.label)
                    edits.append(_replace_with(Document(workflow.scenario, path)))
            except LocatedError as error:
                raise LocatedError(error.message, loc=("levels", index, *error.loc)) from None
        return self._named(names, edits)


def _replace_with(replacement: Document) -> Edit:
    return lambda _document: Document(copy.deepcopy(replacement.data), replacement.source)


# --- any field -----------------------------------------------------------------------------------


class OverrideFactor(Factor):
    """Any scenario field by its path, e.g. ``servers.det.server`` or ``scene.synthetic.max_objects``.

    Every container along the path must exist in the scenario; the last field may be new. Each cell is
    validated by the scenario loader, so a path or value the scenario model does not accept is refused.
    """

    kind: Literal["override"] = "override"
    """Discriminator."""
    path: str = Field(min_length=1)
    """The dotted path of the field, with ``[i]`` for list items (``agent.workflow.nodes[0].deadline_s``)."""
    values: tuple[Any, ...] = Field(min_length=1)
    """The field's value at each level."""

    @field_validator("path")
    @classmethod
    def _check_path(cls, text: str) -> str:
        try:
            segments = parse_payload_path(text)
        except PayloadPathError as error:
            raise ValueError(str(error).replace("payload path", "field path")) from None
        if any(isinstance(segment, EachSegment) for segment in segments):
            raise ValueError(f"{text!r}: '[*]' names many fields; name one")
        return text

    @property
    def changes(self) -> str:
        return self.path

    def level_loc(self, index: int) -> Location:
        return ("values", index)

    def levels(self, sources: Sources) -> tuple[Level, ...]:
        return self._named([level_label(value) for value in self.values], [self._set(value) for value in self.values])

    def _set(self, value: Any) -> Edit:
        segments = parse_payload_path(self.path)

        def edit(document: Document) -> Document:
            data = copy.deepcopy(document.data)
            parent: Any = data
            for position, segment in enumerate(segments):
                last = position == len(segments) - 1
                reached = format_payload_path(segments[: position + 1])
                if isinstance(segment, FieldSegment) and isinstance(parent, dict):
                    if last:
                        parent[segment.name] = copy.deepcopy(value)
                    elif isinstance(parent.get(segment.name), dict | list):
                        parent = parent[segment.name]
                    else:
                        raise LocatedError(f"{document.source.name} has no {reached!r} to change", loc=("path",))
                elif (
                    isinstance(segment, IndexSegment)
                    and isinstance(parent, list)
                    and -len(parent) <= segment.index < len(parent)
                ):
                    if last:
                        parent[segment.index] = copy.deepcopy(value)
                    else:
                        parent = parent[segment.index]
                else:
                    raise LocatedError(f"{document.source.name} has no {reached!r} to change", loc=("path",))
            return Document(data, document.source)

        return edit


# --- declarations --------------------------------------------------------------------------------

Switch = Annotated[
    bool | Literal["on", "off"], WithJsonSchema({"anyOf": [{"enum": ["on", "off"]}, {"type": "boolean"}]})
]


class DeclarationsFactor(Factor):
    """Whether servers declare the protocol's extension keywords: ``on`` or ``off`` per level.

    A level sets ``profile.declares_extensions`` on the named server aliases, or on every profiled server
    when ``servers`` is left out. A server given as a preset (``profile: crop-xywh``, or ``server: crop-xywh``
    naming a preset) is first written as that preset's parametric server and profile, which answers exactly
    as the named server does. Off strips the declarations and changes nothing else the server does.
    """

    kind: Literal["declarations"] = "declarations"
    """Discriminator."""
    servers: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(default=None, min_length=1)
    """The server aliases whose declarations switch (default: every profiled server of the scenario)."""
    levels_: tuple[Switch, ...] = Field(default=("on", "off"), alias="levels", min_length=1)
    """The levels: ``on`` (declared) and ``off`` (stripped); default both, ``on`` first (the baseline)."""

    model_config = ConfigDict(**_CONFIG, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    @property
    def changes(self) -> str:
        return "servers"

    def level_loc(self, index: int) -> Location:
        return ("servers",) if self.servers is not None else ("levels", index)

    def levels(self, sources: Sources) -> tuple[Level, ...]:
        switches = [level in (True, "on") for level in self.levels_]  # YAML 1.1 reads a bare on/off as a bool
        return self._named(
            [level_label(on) for on in switches], [declarations_edit(self.servers, on) for on in switches]
        )


def profile_edit(
    aliases: tuple[str, ...] | None,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    required: bool = True,
    only_changed: bool = False,
) -> Edit:
    """An edit of the profiles of the server ``aliases`` (default: every profiled server): ``change`` maps a
    profile (as data) to the new one. A preset is first written as its parametric server and profile (which
    answers exactly as the preset does), unless ``only_changed`` and the change leaves its profile as it was.
    ``required``: a scenario without a profiled server is an error, else left as is."""

    def edit(document: Document) -> Document:
        data = copy.deepcopy(document.data)
        servers = data.get("servers")
        servers = servers if isinstance(servers, dict) else {}
        chosen = aliases if aliases is not None else tuple(a for a in servers if _profiled(servers[a]))
        if not chosen and required:
            raise LocatedError(f"{document.source.name} has no profiled server to switch", loc=("servers",))
        for index, alias in enumerate(chosen):
            entry = servers.get(alias)
            if not _profiled(entry):
                what = "no server" if entry is None else "no profiled server"
                raise LocatedError(
                    f"{document.source.name} has {what} {alias!r}: name a parametric server with a profile "
                    f"({', '.join(CAPABILITIES)}) or a preset ({', '.join(sorted(PRESETS))})",
                    loc=("servers", index) if aliases is not None else ("servers",),
                )
            profiled = _as_profiled(entry)
            if isinstance(profiled["profile"], dict):  # else an unknown preset, which the loader names
                changed = change(profiled["profile"])
                if only_changed and changed == profiled["profile"]:
                    continue
                profiled["profile"] = changed
            servers[alias] = profiled
        return Document(data, document.source)

    return edit


def declarations_edit(aliases: tuple[str, ...] | None, declares: bool, *, required: bool = True) -> Edit:
    """Declarations on or off on the servers ``aliases`` (default: every profiled server)."""
    return profile_edit(aliases, lambda profile: {**profile, "declares_extensions": declares}, required=required)


def _profiled(entry: Any) -> TypeGuard[dict[str, Any]]:
    """Whether a scenario's server entry is a parametric server with a profile, or a preset by name."""
    if not isinstance(entry, dict):
        return False
    return entry.get("profile") is not None or entry.get("server") in PRESETS


def _as_profiled(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its profile inline: a preset (by ``profile`` or ``server``) expanded to its profile."""
    profile = entry.get("profile")
    name = profile if isinstance(profile, str) else None if profile is not None else entry.get("server")
    if name is None:
        return dict(entry)
    preset = PRESETS.get(str(name))
    if preset is None:
        return dict(entry)
    return {
        **entry,
        "server": preset.capability,
        "profile": preset.profile.model_dump(mode="json", exclude_defaults=True),
    }
