"""The self-check: fault-free runs produce exactly each scenario's ``expect``, and every fault is detectable."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from testbed._errors import TestbedError
from testbed.check._runner import RunResult, run_and_validate, with_deadline, with_faults
from testbed.events import FaultEvent
from testbed.scenario import Scenario, load_scenario
from testbed.workflow import build_graph

Progress = Callable[[str], None]
"""Called with one line saying what the check is doing now."""


@dataclass(frozen=True)
class ScenarioCheck:
    """A scenario's fault-free runs compared with its ``expect`` list (exact set equality)."""

    path: Path
    name: str
    runs: int
    expected: frozenset[str]
    found: frozenset[str]
    validator_failures: tuple[str, ...] = ()
    """Validators that raised, as ``name (run N): error``."""
    measured: bool = False
    """The agent plans for itself: the found IDs are the measurement, and the check is that the
    scenario runs, records and replays."""
    replay: str | None = None
    """For measured scenarios: ``"reproduced"``, or the first event that did not."""

    @property
    def missing(self) -> frozenset[str]:
        """Expected IDs no run produced (none for measured scenarios)."""
        return frozenset() if self.measured else self.expected - self.found

    @property
    def unexpected(self) -> frozenset[str]:
        """IDs some run produced that ``expect`` does not list (none for measured scenarios)."""
        return frozenset() if self.measured else self.found - self.expected

    @property
    def ok(self) -> bool:
        """Whether the found IDs equal the expected ones (or, measured, the replay reproduced) and no validator
        failed."""
        replayed = not self.measured or self.replay == "reproduced"
        return not self.missing and not self.unexpected and not self.validator_failures and replayed


@dataclass(frozen=True)
class FaultCheck:
    """One configured fault injected alone at probability 1: was every application detected?"""

    scenario: str
    index: int
    """Position of the fault in the scenario's ``faults`` list."""
    kind: str
    expected: tuple[str, ...]
    applied: int
    """Fault events that altered something."""
    missed: tuple[str, ...]
    """One line per application whose expected IDs were not all found in its run (and node)."""

    @property
    def ok(self) -> bool:
        """Whether the fault applied at least once and every application was detected."""
        return self.applied > 0 and not self.missed


@dataclass(frozen=True)
class CheckReport:
    """The self-check of a suite of scenarios."""

    scenarios: tuple[ScenarioCheck, ...]
    faults: tuple[FaultCheck, ...]

    @property
    def ok(self) -> bool:
        """Whether every scenario and every fault check passed."""
        return all(check.ok for check in self.scenarios) and all(check.ok for check in self.faults)


def scenario_paths(paths: Iterable[Path]) -> list[Path]:
    """Expand folders to their ``*.yaml`` files (sorted); keep files as given.

    Raises:
        TestbedError: a path does not exist, or a folder holds no ``*.yaml`` file.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            files = sorted(path.glob("*.yaml"))
            if not files:
                raise TestbedError(f"{path}: no *.yaml scenario files in this folder")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise TestbedError(f"{path}: no such file or folder")
    return found


def downstream(scenario: Scenario) -> dict[str, frozenset[str]]:
    """Per workflow node: itself and every node that consumes its results, directly or not."""
    if scenario.workflow is None:
        return {}
    graph = build_graph(scenario.workflow)
    return {node: frozenset({node, *nx.descendants(graph, node)}) for node in graph.nodes}


def undetected(event: FaultEvent, result: RunResult, reach: dict[str, frozenset[str]]) -> list[str]:
    """The expected IDs of ``event`` not found in its run.

    A violation that names a node counts only at the faulted node or a node downstream of it
    (a corrupted result is often reported where it is consumed); ``reach`` is :func:`downstream`.
    """
    nodes = reach.get(event.node, frozenset({event.node}))
    violations = result.violations_of(event.run)
    return [
        violation_id
        for violation_id in event.expected
        if not any(v.id == violation_id and (v.node is None or v.node in nodes) for v in violations)
    ]


def check_scenario(path: Path, scenario: Scenario, *, runs: int, device: str = "cpu") -> ScenarioCheck:
    """Run ``scenario`` fault-free in process and compare the violation IDs found with its ``expect``."""
    measured = scenario.plans_for_itself
    result = run_and_validate(with_faults(scenario, (), runs=runs), device=device, replay=measured)
    return ScenarioCheck(
        path=path,
        name=scenario.name,
        runs=runs,
        expected=frozenset(scenario.expect),
        found=frozenset(v.id for v in result.validation.violations),
        validator_failures=tuple(
            f"{failure.validator} (run {failure.run}): {failure.error}" for failure in result.validation.failures
        ),
        measured=measured,
        replay=result.replay,
    )


def check_faults(scenario: Scenario, *, runs: int, device: str = "cpu", deadline_s: float = 1.0) -> list[FaultCheck]:
    """Inject each configured fault that expects violations alone, at probability 1, and check each is detected.

    Args:
        scenario: the scenario whose ``faults`` are checked.
        runs: runs per fault.
        device: compute device for the servers' models.
        deadline_s: every call's deadline for fault kinds that are detected by waiting (timeout, drop).
    """
    checks: list[FaultCheck] = []
    reach = downstream(scenario)
    for index, fault in enumerate(scenario.faults):
        if not fault.expected:
            continue
        alone = fault.model_copy(update={"probability": 1.0, "runs": None})
        variant = with_faults(scenario, (alone,), runs=runs)
        if fault.waits:
            variant = with_deadline(variant, deadline_s)
        result = run_and_validate(variant, device=device)
        missed = [
            f"run {event.run} node {event.node} item {event.item}: {', '.join(absent)} not found"
            for event in result.applied
            if (absent := undetected(event, result, reach))
        ]
        checks.append(
            FaultCheck(
                scenario=scenario.name,
                index=index,
                kind=fault.kind,
                expected=fault.expected,
                applied=len(result.applied),
                missed=tuple(missed),
            )
        )
    return checks


def check_suite(
    paths: Sequence[Path], *, runs: int = 3, device: str = "cpu", progress: Progress | None = None
) -> CheckReport:
    """Self-check scenario files: fault-free runs give exactly ``expect``, and every configured fault is detected.

    Args:
        paths: scenario files, or folders of ``*.yaml`` scenario files.
        runs: runs per scenario and per fault.
        device: compute device for the servers' models.
        progress: called with one line before each step.

    Returns:
        One :class:`ScenarioCheck` per scenario and one :class:`FaultCheck` per configured fault that
        expects violations.

    Raises:
        TestbedError: a path is missing, a scenario is invalid, or a server cannot start.
    """
    scenario_checks: list[ScenarioCheck] = []
    fault_checks: list[FaultCheck] = []
    for path in scenario_paths(paths):
        scenario = load_scenario(path)
        if progress is not None:
            progress(f"{scenario.name}: {runs} fault-free runs")
        scenario_checks.append(check_scenario(path, scenario, runs=runs, device=device))
        if any(fault.expected for fault in scenario.faults):
            if progress is not None:
                progress(f"{scenario.name}: each of {len(scenario.faults)} faults alone")
            fault_checks.extend(check_faults(scenario, runs=runs, device=device))
    return CheckReport(scenarios=tuple(scenario_checks), faults=tuple(fault_checks))
