"""Validator accuracy against injected ground truth: recall and false positives per fault kind and violation ID."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from testbed._errors import TestbedError
from testbed.check._experiments import Experiment, Runner, default_runner, run_experiments
from testbed.check._runner import RunResult, with_deadline, with_faults
from testbed.faults import FaultSpec
from testbed.metrics import Interval, wilson_interval
from testbed.registry import registry
from testbed.scenario import Scenario
from testbed.validators import Violation

ViolationKey = tuple[str, str | None, str | None, int | None]
"""A violation's identity within a run: (ID, server, node, item)."""


@dataclass(frozen=True)
class RunObservation:
    """What one run of a fault's experiment showed."""

    run: int
    applied: bool
    """Whether the fault altered something in this run."""
    new_ids: frozenset[str]
    """Violation IDs found beyond the same run's fault-free baseline."""


@dataclass(frozen=True)
class AccuracyRow:
    """Recall and false-positive rate of one violation ID for one fault kind."""

    kind: str
    violation_id: str
    applied_runs: int
    detected_runs: int
    """Runs where the fault applied and the ID was found beyond the baseline."""
    clean_runs: int
    """Runs where the fault did not apply."""
    false_positive_runs: int
    """Runs where the fault did not apply but the ID was found beyond the baseline."""
    missed: tuple[int, ...] = ()
    """Indices of the runs where the fault applied and the ID was not found."""

    @property
    def recall(self) -> float | None:
        """``detected_runs / applied_runs``; ``None`` when the fault never applied."""
        return self.detected_runs / self.applied_runs if self.applied_runs else None

    @property
    def false_positive_rate(self) -> float | None:
        """``false_positive_runs / clean_runs``; ``None`` when the fault applied in every run."""
        return self.false_positive_runs / self.clean_runs if self.clean_runs else None

    def recall_interval(self, confidence: float = 0.95) -> Interval | None:
        """Wilson interval of the recall; ``None`` when the fault never applied."""
        return wilson_interval(self.detected_runs, self.applied_runs, confidence) if self.applied_runs else None

    def false_positive_interval(self, confidence: float = 0.95) -> Interval | None:
        """Wilson interval of the false-positive rate; ``None`` when the fault applied in every run."""
        return wilson_interval(self.false_positive_runs, self.clean_runs, confidence) if self.clean_runs else None


@dataclass(frozen=True)
class AccuracyTable:
    """The fault matrix: one row per (fault kind, expected violation ID)."""

    scenario: str
    runs: int
    probability: float
    rows: tuple[AccuracyRow, ...]
    confidence: float = 0.95
    """Two-sided level of the recall and false-positive intervals."""

    def row(self, kind: str, violation_id: str) -> AccuracyRow:
        """The row of ``kind`` and ``violation_id``.

        Raises:
            KeyError: there is no such row.
        """
        for row in self.rows:
            if row.kind == kind and row.violation_id == violation_id:
                return row
        raise KeyError((kind, violation_id))


def score(kind: str, expected: Iterable[str], observations: Sequence[RunObservation]) -> list[AccuracyRow]:
    """Score one fault kind's runs: per expected ID, recall over applied runs and false positives over the rest."""
    applied = [o for o in observations if o.applied]
    clean = [o for o in observations if not o.applied]
    return [
        AccuracyRow(
            kind=kind,
            violation_id=violation_id,
            applied_runs=len(applied),
            detected_runs=sum(violation_id in o.new_ids for o in applied),
            clean_runs=len(clean),
            false_positive_runs=sum(violation_id in o.new_ids for o in clean),
            missed=tuple(o.run for o in applied if violation_id not in o.new_ids),
        )
        for violation_id in expected
    ]


def _keys(violations: Iterable[Violation]) -> set[ViolationKey]:
    return {(v.id, v.server, v.node, v.item) for v in violations}


def observe(result: RunResult, baseline: RunResult, *, index: int = 0) -> list[RunObservation]:
    """Per run of ``result``: did fault ``index`` apply, and which IDs appeared beyond ``baseline``'s same run."""
    applied_runs = {event.run for event in result.applied if event.index == index}
    observations = []
    for run in result.run_indices:
        new = _keys(result.violations_of(run)) - _keys(baseline.violations_of(run))
        observations.append(
            RunObservation(run=run, applied=run in applied_runs, new_ids=frozenset(key[0] for key in new))
        )
    return observations


def with_clean_runs_from(
    applied_reference: Sequence[RunObservation], clean_reference: Sequence[RunObservation]
) -> list[RunObservation]:
    """Applied runs as observed against one baseline, clean runs as observed against another.

    Waiting kinds run under a short deadline, and a slow call can pass it by itself. Compared with a
    short-deadline baseline, such a timeout there would hide the injected one at the same call;
    compared with the long-deadline baseline, one in a clean run would count as a false positive.
    """
    clean = {o.run: o for o in clean_reference}
    return [o if o.applied else clean[o.run] for o in applied_reference]


def fault_for(scenario: Scenario, kind: str, *, probability: float) -> FaultSpec:
    """The first fault of ``kind`` in ``scenario``'s list, in every run and at ``probability``.

    Raises:
        TestbedError: the scenario configures no fault of ``kind``.
    """
    for fault in scenario.faults:
        if fault.kind == kind:
            return fault.model_copy(update={"probability": probability, "runs": None})
    raise TestbedError(f"scenario {scenario.name!r} configures no {kind!r} fault to take a target from")


_BASELINES = ("baseline", "baseline-short")


def _score_kind(kind: str, fault: FaultSpec, result: RunResult, baselines: dict[str, RunResult]) -> list[AccuracyRow]:
    observations = observe(result, baselines["baseline"])
    if fault.waits:
        observations = with_clean_runs_from(observations, observe(result, baselines["baseline-short"]))
    return score(kind, fault.expected, observations)


def measure_accuracy(
    scenario: Scenario,
    kinds: Sequence[str] | None = None,
    runs: int = 20,
    *,
    probability: float = 0.5,
    device: str = "cpu",
    deadline_s: float = 0.3,
    progress: Callable[[str], None] | None = None,
    runner: Runner | None = None,
    workers: int = 1,
) -> AccuracyTable:
    """Measure validator recall and false positives per fault kind, against a fault-free baseline.

    Each kind's fault (its target taken from ``scenario``'s own fault list) is injected at
    ``probability`` in ``runs`` in-process runs; a run counts for an ID when the ID appears beyond
    the same run of a fault-free baseline.

    Every experiment runs the same scenes, so a process computes their inferences once and keeps them (see
    :func:`~testbed.check.scenes_kept_in_the_inference_cache`). With ``workers`` above 1 the experiments (the
    baselines and one per kind) are handed out to that many worker processes, each with its share of the CPUs
    and its own inference cache, while this process waits; an experiment is the same seeded runs wherever it
    runs, so the table is the same whatever ``workers`` is. Each worker costs a process start (imports, models)
    and computes every scene's inferences once more, so more workers pay off for long measurements (about 100
    runs or more) with a free CPU each.

    Args:
        scenario: a scenario that configures a fault of each kind.
        kinds: fault kinds to measure; by default every configured kind that expects violations.
        runs: runs per kind (and in the baseline).
        probability: the chance that the fault applies to one matching call.
        device: compute device for the servers' models.
        deadline_s: every call's deadline for kinds detected by waiting (timeout, drop, truncate, corrupt_json);
            the fault-free runs, which compute the scenes' inferences, run first without it, so that no call
            under it waits for an inference.
        progress: called with one line before each experiment (with several workers: as each one finishes).
        runner: runs and validates each experiment, given its name (``baseline``, ``baseline-short`` or the
            kind); by default into a temporary directory. With several workers it runs in their processes,
            so it must pickle (a module-level function, or a :func:`functools.partial` of one).
        workers: how many processes run the experiments: 1 (the default) runs them here, one after another.

    Raises:
        TestbedError: a kind is unknown or not configured in ``scenario``, ``workers`` is below 1, or
            ``runner`` does not pickle while ``workers`` is above 1.
    """
    if kinds is None:
        kinds = list(dict.fromkeys(f.kind for f in scenario.faults if f.expected))
    for kind in kinds:
        registry().fault(kind)  # an unknown kind is a one-line error listing the known ones
    faults = {kind: fault_for(scenario, kind, probability=probability) for kind in kinds}
    baseline = with_faults(scenario, (), runs=runs)
    experiments = [Experiment("baseline", baseline, f"{scenario.name}: {runs} fault-free baseline runs")]
    short_baseline = Experiment(
        "baseline-short",
        with_deadline(baseline, deadline_s),
        f"{scenario.name}: {runs} fault-free baseline runs, every deadline {deadline_s} s",
        short_deadline=True,
    )
    order = list(kinds)
    if workers > 1:  # the waiting kinds take longest (each applied fault waits its deadline out): first
        order.sort(key=lambda kind: not faults[kind].waits)
    for kind in order:
        fault = faults[kind]
        variant = with_faults(scenario, (fault,), runs=runs)
        if fault.waits:
            variant = with_deadline(variant, deadline_s)
            if short_baseline not in experiments:
                experiments.append(short_baseline)
        line = f"{scenario.name}: {kind} at p={probability}, {runs} runs"
        experiments.append(Experiment(kind, variant, line, short_deadline=fault.waits))
    run = runner or default_runner(device)
    baselines: dict[str, RunResult] = {}
    unscored: list[tuple[str, RunResult]] = []  # kinds' results waiting for a baseline (with several workers)
    rows: dict[str, list[AccuracyRow]] = {}
    for experiment, result in run_experiments(
        experiments, run, warm_up=baseline, device=device, workers=workers, progress=progress
    ):
        if experiment.name in _BASELINES:
            baselines[experiment.name] = result
        else:
            unscored.append((experiment.name, result))
        waiting = []
        for kind, kind_result in unscored:  # each is scored and dropped as soon as it can be: results are large
            if (faults[kind].waits and "baseline-short" not in baselines) or "baseline" not in baselines:
                waiting.append((kind, kind_result))
            else:
                rows[kind] = _score_kind(kind, faults[kind], kind_result, baselines)
        unscored = waiting
    return AccuracyTable(
        scenario=scenario.name,
        runs=runs,
        probability=probability,
        rows=tuple(row for kind in kinds for row in rows[kind]),
    )
