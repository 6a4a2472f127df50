"""Every fault kind with expected violation IDs is found at recall >= 0.99; tolerable faults add nothing.

200 runs per kind at probability 0.5 (so about 100 runs where each fault applies). Servers run
in process, waiting kinds use 0.1 s deadlines, each process computes the scenes' inferences once
(the shared inference cache keeps them), and the experiments are spread over two worker processes
(the table is the same whatever the number of workers), to fit CI.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.check import AccuracyTable, RunResult, measure_accuracy, observe, run_and_validate, with_faults
from testbed.faults import FAULT_CATALOG
from testbed.scenario import Scenario, load_scenario

pytestmark = pytest.mark.quality

RUNS = 200
"""Runs per fault kind."""

MIN_RECALL = 0.99

DEADLINE_S = 0.1
"""Every call's deadline in the waiting kinds' runs. Each applied fault waits it out (about 100 times a kind),
and detection does not depend on its length; a whole in-process run takes about 30 ms, so 0.1 s leaves margin.
No call under it computes an inference (the measurement computes them first); still, at 0.05 s a fault-free
call timed out in about 1 run of 200 on a 2-CPU machine with twice as much work as CPUs, so not shorter."""

REORDER_HOLD_S = 0.05
"""How long a reordered response is held (the scenario's 0.2 s, on every crop of 66 runs, only adds waiting)."""

WORKERS = min(2, os.cpu_count() or 1)
"""Worker processes sharing the measurement's experiments: CI has two CPUs, and pytest runs one test at a time."""

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "v1" / "faults.yaml"

DETECTABLE = [kind for kind, info in FAULT_CATALOG.items() if info.expected]
TOLERABLE = ["delay", "reorder", "restart"]


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return load_scenario(SCENARIO)


@pytest.fixture(scope="module")
def accuracy(scenario: Scenario) -> AccuracyTable:
    return measure_accuracy(scenario, DETECTABLE, RUNS, probability=0.5, deadline_s=DEADLINE_S, workers=WORKERS)


@pytest.mark.parametrize("kind", DETECTABLE)
def test_each_detectable_fault_kind_is_found_at_high_recall(kind: str, accuracy: AccuracyTable) -> None:
    for violation_id in FAULT_CATALOG[kind].expected:
        row = accuracy.row(kind, violation_id)
        assert row.applied_runs > 0, f"{kind} never applied in {RUNS} runs"
        assert row.recall is not None
        assert row.recall >= MIN_RECALL, (
            f"{kind} -> {violation_id}: recall {row.detected_runs}/{row.applied_runs}, missed runs {row.missed}"
        )


TOLERABLE_RUNS = RUNS // 3


@pytest.fixture(scope="module")
def tolerable_baseline(scenario: Scenario) -> RunResult:
    """The fault-free runs every tolerable kind is compared with (the same for each: recorded once)."""
    return run_and_validate(with_faults(scenario, (), runs=TOLERABLE_RUNS))


@pytest.mark.parametrize("kind", TOLERABLE)
def test_a_tolerable_fault_causes_no_violation_beyond_the_fault_free_baseline(
    kind: str, scenario: Scenario, tolerable_baseline: RunResult
) -> None:
    update: dict[str, object] = {"probability": 1.0, "runs": None}
    if kind == "reorder":
        update["hold_s"] = REORDER_HOLD_S
    fault = next(f for f in scenario.faults if f.kind == kind).model_copy(update=update)
    result = run_and_validate(with_faults(scenario, (fault,), runs=TOLERABLE_RUNS))

    assert result.applied, f"{kind} never applied"
    assert {o.run: sorted(o.new_ids) for o in observe(result, tolerable_baseline) if o.new_ids} == {}
