"""Orchestration modes side by side: plan validity, task success and violation rates per experiment.

One row per experiment (typically one scenario per agent kind on the same
servers). Plan validity is the share of runs whose every recorded plan
decision was valid (it parsed, and each call matched its tool's input
schema); agents with a fixed workflow have none. Violations per 100 runs
counts runs with at least one violation-severity finding (Wilson interval);
occurrences per 100 executions count every finding, warnings included
(Poisson interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from testbed.events import PlanEvent
from testbed.metrics._intervals import Interval, poisson_interval, wilson_interval
from testbed.validators import Severity, ValidationResult, entry


@dataclass(frozen=True)
class ModeRow:
    """One experiment's orchestration-mode figures."""

    experiment: str
    agent_kind: str
    runs: int
    executions: int
    plan_valid_runs: int | None
    """Runs whose every plan decision was valid; ``None`` when the agent records no plans."""
    task_passed_runs: int
    task_checked_runs: int
    violation_runs: int
    """Runs with at least one violation-severity finding."""
    occurrences: int
    """Every finding, warnings included."""

    @property
    def plan_validity(self) -> Interval | None:
        return wilson_interval(self.plan_valid_runs, self.runs) if self.plan_valid_runs is not None else None

    @property
    def task_success(self) -> Interval | None:
        return wilson_interval(self.task_passed_runs, self.task_checked_runs) if self.task_checked_runs else None

    @property
    def violation_runs_per_100(self) -> Interval:
        return wilson_interval(self.violation_runs, self.runs).scaled(100.0)

    @property
    def occurrences_per_100_executions(self) -> Interval | None:
        return poisson_interval(self.occurrences, self.executions) if self.executions else None


def mode_row(name: str, result: ValidationResult) -> ModeRow:
    """The figures of one validated experiment.

    Raises:
        ValueError: the experiment has no complete run.
    """
    if not result.runs:
        raise ValueError(f"{name}: no complete run to compare")
    kind = result.runs[0].scenario.agent.kind
    plans_seen = False
    plan_valid = task_passed = task_checked = executions = 0
    for record in result.runs:
        plans = [e for e in record.events if isinstance(e, PlanEvent)]
        plans_seen = plans_seen or bool(plans)
        plan_valid += all(plan.valid for plan in plans)
        finished = record.events[-1]
        passed = getattr(finished, "task_passed", None)
        if passed is not None:
            task_checked += 1
            task_passed += int(passed)
        executions += int(getattr(finished, "calls", 0))
    violation_runs = len({v.run for v in result.violations if entry(v.id).severity is Severity.VIOLATION})
    return ModeRow(
        experiment=name,
        agent_kind=kind,
        runs=len(result.runs),
        executions=executions,
        plan_valid_runs=plan_valid if plans_seen and kind in ("retrieval", "llm") else None,
        task_passed_runs=task_passed,
        task_checked_runs=task_checked,
        violation_runs=violation_runs,
        occurrences=len(result.violations),
    )


def combined_mode(name: str, rows: Sequence[ModeRow]) -> ModeRow:
    """Several experiments' figures as one row: every count added up.

    Plan validity is kept only when every experiment records plans (a share over runs that
    could not have had a plan would be wrong); the agent kinds are joined.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError(f"{name}: no experiment to combine")
    plans = [row.plan_valid_runs for row in rows]
    return ModeRow(
        experiment=name,
        agent_kind=", ".join(sorted({row.agent_kind for row in rows})),
        runs=sum(row.runs for row in rows),
        executions=sum(row.executions for row in rows),
        plan_valid_runs=None if None in plans else sum(p for p in plans if p is not None),
        task_passed_runs=sum(row.task_passed_runs for row in rows),
        task_checked_runs=sum(row.task_checked_runs for row in rows),
        violation_runs=sum(row.violation_runs for row in rows),
        occurrences=sum(row.occurrences for row in rows),
    )
