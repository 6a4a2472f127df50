"""Factor kinds for the protocol's extensions: runtime contracts, visual memory, observability, and bundles.

Each is a switch on the same scenario: a level writes the pinned scenario key (``contracts``,
``observability``) or profile field (``memory``), and off takes it away, so every other part of a
cell stays as the scenario wrote it. :class:`ExtensionsFactor` names bundles of them (each alone,
all together) so that one factor answers "each extension alone, and all together".
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

from testbed._errors import LocatedError, Location
from testbed.contracts import ContractPolicy
from testbed.experiment._factors import (
    _CONFIG,
    Document,
    Edit,
    Factor,
    Level,
    Sources,
    Switch,
    declarations_edit,
    level_label,
    profile_edit,
)

__all__ = [
    "BUNDLES",
    "POLICIES",
    "ContractsFactor",
    "ExtensionsFactor",
    "MemoryFactor",
    "ObservabilityFactor",
    "contracts_edit",
    "memory_edit",
    "observability_edit",
]

POLICIES: Final = tuple(policy.value for policy in ContractPolicy)
"""The runtime contract policies a scenario's ``contracts: {policy: ...}`` takes."""


def _known_level(level: str) -> str:
    if level != "off" and level not in POLICIES:
        raise ValueError(f"unknown contracts level {level!r}; expected one of: off, {', '.join(POLICIES)}")
    return level


ContractLevel = Annotated[
    str,
    AfterValidator(_known_level),
    WithJsonSchema({"anyOf": [{"enum": ["off", *POLICIES]}, {"const": False}]}),
]
"""A contracts level: ``off`` (YAML 1.1 reads a bare ``off`` as false) or a policy."""


def _bare_off(levels: Any) -> Any:
    return [("off" if level is False else level) for level in levels] if isinstance(levels, list | tuple) else levels


_ALIASES = ConfigDict(**_CONFIG, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


def _on(level: bool | str) -> bool:
    return level in (True, "on")  # YAML 1.1 reads a bare on/off as a bool


# --- contracts -----------------------------------------------------------------------------------


def contracts_edit(policy: str | None, rules: tuple[str, ...] | None = None) -> Edit:
    """The scenario's ``contracts`` set to ``{policy, rules}``, or taken away (``None``: no contracts)."""

    def edit(document: Document) -> Document:
        data = copy.deepcopy(document.data)
        data.pop("contracts", None)
        if policy is not None:
            data["contracts"] = {"policy": policy, **({"rules": list(rules)} if rules is not None else {})}
        return Document(data, document.source)

    return edit


class ContractsFactor(Factor):
    """Runtime contracts on the workflow's edges: ``off`` (none), or a policy per level (``halt``,
    ``convert``, ``replan``, ``fallback``), written as the scenario's ``contracts: {policy: ...}``."""

    kind: Literal["contracts"] = "contracts"
    """Discriminator."""
    levels_: Annotated[tuple[ContractLevel, ...], BeforeValidator(_bare_off)] = Field(
        default=("off", *POLICIES), alias="levels", min_length=1
    )
    """The levels: ``off`` and the policies (default: all five, ``off`` first, the baseline)."""
    rules: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(default=None, min_length=1)
    """The contract rules checked, by name (default: every registered rule)."""

    model_config = _ALIASES

    @property
    def changes(self) -> str:
        return "contracts"

    def levels(self, sources: Sources) -> tuple[Level, ...]:
        policies = [None if level == "off" else level for level in self.levels_]
        edits = [contracts_edit(policy, self.rules) for policy in policies]
        return self._named([policy or "off" for policy in policies], edits)


# --- visual memory -------------------------------------------------------------------------------


def _context_scope(profile: dict[str, Any]) -> dict[str, Any]:
    memory = profile.get("memory")
    scope = memory.get("scope", "by_value") if isinstance(memory, dict) else "by_value"
    return profile if scope == "by_value" else {**profile, "memory": {"scope": "context"}}


def memory_edit(on: bool) -> Edit:
    """On: every profiled server that keeps images (a memory scope other than ``by_value``) keeps them in the
    protocol-native context store (``memory: {scope: context}``); off: the scenario as written."""
    if not on:
        return lambda document: document
    return profile_edit(None, _context_scope, required=False, only_changed=True)


class MemoryFactor(Factor):
    """Protocol-native visual memory: ``on`` moves every profiled server that keeps images (by handle, path
    or TTL) to the context store (``memory: {scope: context}``); ``off`` leaves the scopes as written. A
    server that takes images by value keeps nothing, so it is left as it is at every level."""

    kind: Literal["memory"] = "memory"
    """Discriminator."""
    levels_: tuple[Switch, ...] = Field(default=("off", "on"), alias="levels", min_length=1)
    """The levels: ``off`` (the scenario's own scopes) and ``on`` (the context store); default both, off first."""

    model_config = _ALIASES

    @property
    def changes(self) -> str:
        return "servers"

    def levels(self, sources: Sources) -> tuple[Level, ...]:
        switches = [_on(level) for level in self.levels_]
        return self._named([level_label(on) for on in switches], [memory_edit(on) for on in switches])


# --- observability -------------------------------------------------------------------------------


def observability_edit(on: bool) -> Edit:
    """On: OpenTelemetry spans per call (``observability: {spans: true}``); off: no ``observability`` key."""

    def edit(document: Document) -> Document:
        data = copy.deepcopy(document.data)
        data.pop("observability", None)
        if on:
            data["observability"] = {"spans": True}
        return Document(data, document.source)

    return edit


class ObservabilityFactor(Factor):
    """OpenTelemetry spans per call, written to the cell's ``spans.otlp.jsonl``: ``off`` or ``on``."""

    kind: Literal["observability"] = "observability"
    """Discriminator."""
    levels_: tuple[Switch, ...] = Field(default=("off", "on"), alias="levels", min_length=1)
    """The levels: ``off`` and ``on``; default both, off first."""

    model_config = _ALIASES

    @property
    def changes(self) -> str:
        return "observability"

    def levels(self, sources: Sources) -> tuple[Level, ...]:
        switches = [_on(level) for level in self.levels_]
        return self._named([level_label(on) for on in switches], [observability_edit(on) for on in switches])


# --- bundles -------------------------------------------------------------------------------------

Extension = Literal["declarations", "contracts", "memory", "observability"]

BUNDLES: Final[dict[str, frozenset[Extension]]] = {
    "none": frozenset(),
    "declarations": frozenset({"declarations"}),
    "contracts": frozenset({"contracts"}),
    "declarations+contracts": frozenset({"declarations", "contracts"}),
    "memory": frozenset({"memory"}),
    "provenance": frozenset({"observability"}),
    "all": frozenset({"declarations", "contracts", "memory", "observability"}),
}
"""Each bundle's extensions. ``contracts`` alone strips the declarations, so its contracts have nothing declared
to check against and it measures only their overhead; ``declarations+contracts`` is the meaningful contracts
configuration, and its contrast with ``declarations`` is the contracts' own effect. ``provenance`` is the
paper's provenance-and-observability extension: spans per call (the provenance validator runs in every cell,
it measures and is not switched)."""


class ExtensionsFactor(Factor):
    """Named bundles of extensions, one per level: ``none``, each alone (``declarations``, ``contracts``,
    ``memory``, ``provenance``), ``declarations+contracts`` (contracts with something declared to check), and
    ``all``. An extension a bundle leaves out is off: declarations stripped from every profiled server, no
    contracts, memory scopes as written, no spans."""

    kind: Literal["extensions"] = "extensions"
    """Discriminator."""
    levels_: tuple[str, ...] = Field(default=tuple(BUNDLES), alias="levels", min_length=1)
    """The bundles (default: all seven, ``none`` first, the baseline)."""
    contracts: ContractPolicy = ContractPolicy.CONVERT
    """The contract policy of the bundles with contracts."""
    servers: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(default=None, min_length=1)
    """The server aliases whose declarations switch (default: every profiled server of each scenario)."""

    model_config = _ALIASES

    @field_validator("levels_")
    @classmethod
    def _known_bundles(cls, levels: tuple[str, ...]) -> tuple[str, ...]:
        for index, level in enumerate(levels):
            if level not in BUNDLES:
                raise LocatedError(f"unknown bundle {level!r}; expected one of: {', '.join(BUNDLES)}", loc=(index,))
        return levels

    @property
    def changes(self) -> str:
        return "servers"

    def level_loc(self, index: int) -> Location:
        return ("levels", index)

    def levels(self, sources: Sources) -> tuple[Level, ...]:
        return self._named(list(self.levels_), [self._bundle(BUNDLES[level]) for level in self.levels_])

    def _bundle(self, extensions: frozenset[Extension]) -> Edit:
        edits = (
            declarations_edit(self.servers, "declarations" in extensions, required=self.servers is not None),
            contracts_edit(self.contracts.value if "contracts" in extensions else None),
            memory_edit("memory" in extensions),
            observability_edit("observability" in extensions),
        )

        def edit(document: Document) -> Document:
            for each in edits:
                document = each(document)
            return document

        return edit
