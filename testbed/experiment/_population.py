"""A population's workflows as scenario levels: sampled from a prevalence file as ``testbed reproduce audit`` does.

A scenario set may list ``{prevalence: FILE, members: N, seed: S, workflows: K}`` beside scenario files: the
population of ``N`` servers sampled from ``FILE`` with seed ``S`` is composed into workflows as the audit
composes them, and its first ``K`` workflows (all without ``workflows``) each become one level, run by the
agent :data:`~testbed.reproduce.EXECUTED_AGENT` names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from testbed._errors import LocatedError, TestbedError, first_error
from testbed.population import MIN_MEMBERS, Prevalence, sample_population
from testbed.reproduce import workflow_scenario

__all__ = ["PopulationLevels", "WorkflowLevel", "population_levels", "scenario_entries"]


class PopulationLevels(BaseModel):
    """Workflows of a sampled population, one level each (an entry of a scenario set)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    prevalence: str = Field(min_length=1)
    """The prevalence file the population is sampled from, relative to the design file."""
    members: int = Field(default=12, ge=MIN_MEMBERS)
    """Servers sampled (the audit's quick population has 12, its full one 91)."""
    seed: int = Field(default=2025, ge=0)
    """The population's seed (which servers and workflows; the experiment's seed still draws scenes and faults)."""
    workflows: int | None = Field(default=None, ge=1)
    """The first this many workflows (default: all)."""


def scenario_entries(value: Any) -> Any:
    """A scenario set's entries read one by one (a pydantic before-validator): a mapping is a population, and
    its first error is located within its entry (a union would report every alternative's error instead)."""
    if not isinstance(value, list | tuple):
        return value
    entries = []
    for index, entry in enumerate(value):
        if isinstance(entry, dict):
            try:
                entry = PopulationLevels.model_validate(entry)
            except ValidationError as error:
                located = first_error(error)
                raise LocatedError(located.message, loc=(index, *located.loc)) from None
        elif not isinstance(entry, str | PopulationLevels):
            raise LocatedError(
                "give a scenario file, or a population {prevalence: FILE, members: N, seed: S}", loc=(index,)
            )
        entries.append(entry)
    return entries


@dataclass(frozen=True)
class WorkflowLevel:
    label: str
    """``<prevalence name>-<workflow id>``, e.g. ``audit-2025-w003``."""
    scenario: dict[str, Any]


def population_levels(spec: PopulationLevels, text: str, path: Path) -> list[WorkflowLevel]:
    """The scenario of each chosen workflow of the population ``spec`` samples from the prevalence ``text``.

    Raises:
        LocatedError: the prevalence file is not valid (located at ``prevalence``), or the population cannot
            be sampled from it.
    """
    try:
        prevalence = Prevalence.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as error:
        raise LocatedError(f"{path}: not YAML: {str(error).splitlines()[0]}", loc=("prevalence",)) from None
    except ValidationError as error:
        located = first_error(error)
        field = ".".join(str(part) for part in located.loc)
        raise LocatedError(f"{path}: {field}: {located.message}", loc=("prevalence",)) from None
    try:
        population = sample_population(prevalence, n=spec.members, seed=spec.seed)
    except TestbedError as error:
        raise LocatedError(str(error), loc=("members",)) from None
    chosen = population.workflows[: spec.workflows] if spec.workflows is not None else population.workflows
    return [
        WorkflowLevel(f"{population.prevalence}-{workflow.id}", workflow_scenario(population, workflow, runs=1))
        for workflow in chosen
    ]
