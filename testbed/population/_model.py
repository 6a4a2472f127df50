"""Population files: sampled servers (profile and drawn properties) and the workflows composed among them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Final, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from testbed._errors import LocatedError
from testbed.population._errors import PopulationError, first_error
from testbed.population._prevalence import Mode
from testbed.profile import Capability, ConventionProfile, ProfileError, check_profile

__all__ = [
    "AGENT_OF_MODE",
    "Drawn",
    "Member",
    "Population",
    "Workflow",
    "load_population",
    "population_hash",
    "write_population",
]

_CONFIG = ConfigDict(frozen=True, extra="forbid")

AgentKind = Literal["scripted", "retrieval", "llm", "multi"]
AGENT_OF_MODE: Final[dict[Mode, AgentKind]] = {
    "static": "scripted",
    "retrieval": "retrieval",
    "dynamic": "llm",
    "multi_agent": "multi",
}
"""The agent kind that stands for each orchestration mode."""


class Drawn(BaseModel):
    """The properties drawn for one server: the ground truth the recovery check compares against."""

    model_config = _CONFIG

    schema_divergence: bool
    no_output_validation: bool
    undeclared_conventions: bool
    bridging: bool
    memory_retention: bool
    declared_fallback: bool
    box_convention: str
    mask_format: str


class Member(BaseModel):
    """One server of the population."""

    model_config = _CONFIG

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    capability: Capability
    profile: ConventionProfile
    drawn: Drawn
    security_subset: bool

    @model_validator(mode="after")
    def _possible(self) -> Self:
        try:
            check_profile(self.capability, self.profile)
        except ProfileError as error:
            raise LocatedError(error.message, loc=("profile", *error.loc)) from None
        return self


class Workflow(BaseModel):
    """Servers composed into one tool chain, in call order, run by one orchestration mode."""

    model_config = _CONFIG

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    kind: Literal["pair", "chain"]
    members: tuple[str, ...] = Field(min_length=2)
    mode: Mode
    agent: AgentKind


class Population(BaseModel):
    """A sampled population: its members and workflows, and what it was sampled from."""

    model_config = _CONFIG

    seed: int = Field(ge=0)
    prevalence: str
    """The prevalence file's name (its ``name``) the members were drawn from."""
    members: tuple[Member, ...] = Field(min_length=1)
    workflows: tuple[Workflow, ...]

    @model_validator(mode="after")
    def _references(self) -> Self:
        ids = [member.id for member in self.members]
        for index, member_id in enumerate(ids):
            if member_id in ids[:index]:
                raise LocatedError(f"member id {member_id!r} appears twice", loc=("members", index, "id"))
        known = set(ids)
        for index, workflow in enumerate(self.workflows):
            for position, member_id in enumerate(workflow.members):
                if member_id not in known:
                    raise LocatedError(f"names no member {member_id!r}", loc=("workflows", index, "members", position))
        return self

    def member(self, member_id: str) -> Member:
        return next(member for member in self.members if member.id == member_id)

    def document(self) -> dict[str, Any]:
        """The population as plain YAML-ready data; profiles list only what differs from the defaults."""
        data = self.model_dump(mode="json")
        for member, written in zip(self.members, data["members"], strict=True):
            profile = member.profile.model_dump(mode="json", exclude_defaults=True)
            if "box" in profile:
                profile["box"] = str(member.profile.box)  # the compact name a person reads and writes
            written["profile"] = profile
        return data


def population_hash(population: Population) -> str:
    """A stable identity of a population's content."""
    text = yaml.safe_dump(population.document(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_population(population: Population, path: Path) -> None:
    """Write ``population`` as plain, editable YAML."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(population.document(), sort_keys=False, width=120), encoding="utf-8")


def load_population(path: Path | str) -> Population:
    """Read and check a population file.

    Raises:
        PopulationError: unreadable, an unknown capability, an impossible profile or a dangling reference,
            as ``FILE: members[i].field: message``.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise PopulationError(f"{path}: cannot read the population file: {str(error).splitlines()[0]}") from None
    try:
        return Population.model_validate(data)
    except ValidationError as error:
        raise _with_member_id(first_error(path, error), data) from None


def _with_member_id(error: PopulationError, data: Any) -> PopulationError:
    """Name the member by its id too, so a person editing the file finds it."""
    text = str(error)
    marker = ": members["
    if marker not in text or not isinstance(data, dict):
        return error
    index_text = text.split(marker, 1)[1].split("]", 1)[0]
    members = data.get("members")
    if not index_text.isdigit() or not isinstance(members, list) or int(index_text) >= len(members):
        return error
    member = members[int(index_text)]
    member_id = member.get("id") if isinstance(member, dict) else None
    return PopulationError(f"{text} (member {member_id!r})") if member_id else error
