"""What one attack cell's recorded runs show: utility, attack success, and whether the validators noticed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.events import RunFinished, read_events
from testbed.security._judge import ATTACK_SUCCEEDED
from testbed.validators import validate_experiment

__all__ = ["CellMeasure", "measure_cell"]


@dataclass(frozen=True)
class CellMeasure:
    """One (scenario, agent, attack on or off) experiment directory, as its runs and validators read."""

    runs: int
    passed: int
    """Runs whose task passed against ground truth (utility)."""
    attacked: int
    """Runs with ``security.attack_succeeded``."""
    flagged: int
    """Of those, runs with any other validator finding."""
    flagged_at_attack: int
    """Of those, runs where another finding names the very call that met the attack goal as its evidence."""


def measure_cell(directory: Path) -> CellMeasure:
    """Measure one recorded experiment directory."""
    finished = [event for event in read_events(directory).events if isinstance(event, RunFinished)]
    violations = validate_experiment(directory).violations
    successes = {v.run: set(v.evidence) for v in violations if v.id == ATTACK_SUCCEEDED}
    others: dict[int, set[int]] = {}
    for violation in violations:
        if not violation.id.startswith("security."):
            others.setdefault(violation.run, set()).update(violation.evidence)
    return CellMeasure(
        runs=len(finished),
        passed=sum(1 for event in finished if event.task_passed),
        attacked=len(successes),
        flagged=sum(1 for run in successes if run in others),
        flagged_at_attack=sum(1 for run, calls in successes.items() if calls & others.get(run, set())),
    )
