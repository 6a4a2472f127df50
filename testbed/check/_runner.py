"""Run a scenario variant in process into a temporary directory and validate what it recorded."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio

from testbed.events import FaultEvent
from testbed.faults import FaultSpec
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.scenario import Scenario
from testbed.validators import ValidationResult, Violation, validate_experiment

NOT_APPLICABLE = "not applicable"
"""How a fault event's detail starts when the fault altered nothing."""


@dataclass(frozen=True)
class RunResult:
    """One validated experiment: its violations and the faults that altered something."""

    validation: ValidationResult
    applied: tuple[FaultEvent, ...]
    """Fault events whose fault altered a message (not the "not applicable" ones)."""
    replay: str | None = None
    """When replayed: ``"reproduced"`` or the first difference; ``None`` when not replayed."""

    def violations_of(self, run: int) -> tuple[Violation, ...]:
        """The violations found in ``run``."""
        return tuple(v for v in self.validation.violations if v.run == run)

    @property
    def run_indices(self) -> tuple[int, ...]:
        """The indices of the complete runs."""
        return tuple(record.started.run for record in self.validation.runs)


def in_process(scenario: Scenario) -> Scenario:
    """The same scenario with every registered server in process (an external one keeps its own transport)."""
    servers = {
        alias: ref if ref.external else ref.model_copy(update={"transport": "inprocess"})
        for alias, ref in scenario.servers.items()
    }
    return scenario.model_copy(update={"servers": servers})


def with_faults(scenario: Scenario, faults: Iterable[FaultSpec], *, runs: int) -> Scenario:
    """``scenario`` in process with exactly ``faults`` and ``runs`` runs."""
    return in_process(scenario).model_copy(update={"faults": tuple(faults), "runs": runs})


def with_deadline(scenario: Scenario, seconds: float) -> Scenario:
    """``scenario`` with every call's deadline set to ``seconds`` (the scenario's and each node's)."""
    workflow = scenario.workflow
    if workflow is None:
        return scenario.model_copy(update={"deadline_s": seconds})
    nodes = tuple(node.model_copy(update={"deadline_s": seconds}) for node in workflow.nodes)
    agent = scenario.agent.model_copy(update={"workflow": workflow.model_copy(update={"nodes": nodes})})
    return scenario.model_copy(update={"deadline_s": seconds, "agent": agent})


def applied_faults(validation: ValidationResult) -> tuple[FaultEvent, ...]:
    """Every fault event of the validated runs whose fault altered something."""
    return tuple(
        event
        for record in validation.runs
        for event in record.events
        if isinstance(event, FaultEvent) and not event.detail.startswith(NOT_APPLICABLE)
    )


def run_and_validate(scenario: Scenario, *, device: str = "cpu", replay: bool = False) -> RunResult:
    """Run every run of ``scenario`` into a temporary directory and validate it (and replay it, if asked).

    Raises:
        TestbedError: a server cannot start, or the scenario is invalid.
    """
    with tempfile.TemporaryDirectory(prefix="testbed-check-") as tmp:
        out_dir = Path(tmp) / scenario.name

        async def main() -> str | None:
            await run_experiment(scenario, out_dir=out_dir, device=device)
            if not replay:
                return None
            report = await replay_experiment(out_dir)
            return "reproduced" if report.divergence is None else str(report.divergence)

        replayed = anyio.run(main)
        validation = validate_experiment(out_dir)
    return RunResult(validation=validation, applied=applied_faults(validation), replay=replayed)
