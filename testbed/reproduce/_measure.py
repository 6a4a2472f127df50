"""What the validators find over a population's recorded workflows: flags per server, warnings, untyped edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from testbed.events import CallEvent, CallOutcomeKind
from testbed.population import Population, Workflow
from testbed.protocol import declared_truth
from testbed.validators import ValidationResult, validate_experiment

__all__ = ["FAMILIES", "Measured", "WorkflowMeasure", "measure_population", "measure_workflow"]

FAMILIES: Final = ("schema", "coords", "mask", "memory", "perm", "proto")
"""The validator families reported per server (catalog categories; ``conn`` is reported as untyped edges)."""


@dataclass(frozen=True)
class WorkflowMeasure:
    """One workflow's recorded runs as the validators read them."""

    workflow: Workflow
    runs: int
    runs_with: dict[str, int]
    """Runs with at least one finding of each family (``any``: of any ID)."""
    executions: int
    memory_warnings: int
    flags: dict[str, frozenset[str]]
    """Violation IDs attributed to each member (by id, which is its alias in the scenario)."""
    undeclared: frozenset[str]
    """Members whose recorded tool listing declares no extension keyword at all."""
    validator_failures: int


@dataclass
class Measured:
    """Everything measured over a population."""

    workflows: list[WorkflowMeasure] = field(default_factory=list)

    def ids_of(self, member_id: str) -> set[str]:
        """Every violation ID attributed to a member in any workflow it took part in."""
        return {found for measure in self.workflows for found in measure.flags.get(member_id, frozenset())}

    def flagged(self, member_id: str, family: str) -> bool:
        return any(found.startswith(f"{family}.") for found in self.ids_of(member_id))

    def undeclared(self, member_id: str) -> bool:
        return any(member_id in measure.undeclared for measure in self.workflows)


def _members_declaring_nothing(result: ValidationResult, workflow: Workflow) -> frozenset[str]:
    if not result.runs:
        return frozenset()
    servers = result.runs[0].servers
    return frozenset(
        alias for alias in workflow.members if alias in servers and declared_truth(alias, servers[alias].tools) is None
    )


def measure_workflow(directory: Path, workflow: Workflow) -> WorkflowMeasure:
    """Validate one workflow's experiment directory with every registered validator."""
    result = validate_experiment(directory)
    flags: dict[str, set[str]] = {}
    for violation in result.violations:
        if violation.server is not None:
            flags.setdefault(violation.server, set()).add(violation.id)
    executions = sum(
        1
        for record in result.runs
        for event in record.events
        if isinstance(event, CallEvent) and event.outcome is not CallOutcomeKind.SKIPPED
    )
    affected: dict[str, set[int]] = {}
    for violation in result.violations:
        affected.setdefault("any", set()).add(violation.run)
        affected.setdefault(violation.id.split(".")[0], set()).add(violation.run)
    return WorkflowMeasure(
        workflow=workflow,
        runs=len(result.runs),
        runs_with={family: len(runs) for family, runs in affected.items()},
        executions=executions,
        memory_warnings=sum(1 for violation in result.violations if violation.id.startswith("memory.")),
        flags={alias: frozenset(ids) for alias, ids in flags.items()},
        undeclared=_members_declaring_nothing(result, workflow),
        validator_failures=len(result.failures),
    )


def measure_population(population: Population, workflow_dir: Path) -> Measured:
    """Measure every workflow of ``population`` recorded under ``workflow_dir/<id>/``."""
    return Measured([measure_workflow(workflow_dir / workflow.id, workflow) for workflow in population.workflows])
