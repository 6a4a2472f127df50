"""Rates and intervals: hand-known interval values, and summaries of real recorded experiments."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.events import CallEvent, RunFinished, RunStarted
from testbed.metrics import OVERALL, GroupKind, poisson_interval, summarize, wilson_interval
from testbed.validators import ValidationResult, validate_experiment

RUNS = 10
"""Runs of each recorded experiment (shared, read only: see ``recorded_v1`` in conftest.py)."""


@pytest.fixture(scope="module")
def incompatible(recorded_v1: Callable[..., Path]) -> Path:
    return recorded_v1("detect_crop_incompatible", RUNS)


@pytest.fixture(scope="module")
def compatible(recorded_v1: Callable[..., Path]) -> Path:
    return recorded_v1("detect_crop", RUNS)


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (3, 40), (1, 1)])
def test_wilson_interval_matches_the_score_formula(k: int, n: int) -> None:
    interval = wilson_interval(k, n)
    low, high = wilson_by_hand(k, n)
    assert interval.estimate == pytest.approx(k / n)
    assert interval.low == pytest.approx(max(low, 0.0), abs=1e-9)
    assert interval.high == pytest.approx(min(high, 1.0), abs=1e-9)


def test_wilson_interval_of_zero_in_ten_is_the_published_value() -> None:
    interval = wilson_interval(0, 10)
    assert (interval.low, round(interval.high, 4)) == (0.0, 0.2775)
    assert wilson_interval(5, 10).scaled(100).low == pytest.approx(23.66, abs=0.01)


def test_poisson_interval_matches_the_exact_chi_square_bounds() -> None:
    # Garwood bounds for 0 and 10 events (standard tables): [0, 3.689] and [4.795, 18.390].
    zero = poisson_interval(0, 100)
    assert (zero.estimate, zero.low) == (0.0, 0.0)
    assert zero.high == pytest.approx(3.6889, abs=1e-4)
    ten = poisson_interval(10, 200)  # per 100 executions: halve the count bounds
    assert ten.estimate == pytest.approx(5.0)
    assert ten.low == pytest.approx(4.7954 / 2, abs=1e-4)
    assert ten.high == pytest.approx(18.3904 / 2, abs=1e-4)


@pytest.mark.parametrize(
    "call",
    [lambda: wilson_interval(0, 0), lambda: wilson_interval(11, 10), lambda: poisson_interval(1, 0)],
)
def test_intervals_refuse_undefined_rates(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"trial|lie in|exposure"):
        call()


def test_incompatible_experiment_rates_come_from_the_executed_runs(incompatible: Path) -> None:
    result = validate_experiment(incompatible)
    summary = summarize(result, source=str(incompatible))
    assert summary.runs == 10
    assert summary.notes == ()
    executions = sum(1 for record in result.runs for _, call in record.calls() if call.outcome.value != "skipped")
    assert summary.executions == executions > 0
    mismatch = next(row for row in summary.overall() if row.id == "coords.mismatch")
    occurrences = sum(1 for v in result.violations if v.id == "coords.mismatch")
    affected = len({v.run for v in result.violations if v.id == "coords.mismatch"})
    assert (mismatch.occurrences, mismatch.runs_affected, mismatch.runs) == (occurrences, affected, 10)
    assert mismatch.runs_affected_per_100 is not None
    assert affected > 0
    assert mismatch.runs_affected_per_100.estimate == pytest.approx(100 * affected / 10)
    assert mismatch.per_100_executions is not None
    assert mismatch.per_100_executions.estimate == pytest.approx(100 * occurrences / executions)
    assert mismatch.runs_affected_per_100.low <= mismatch.runs_affected_per_100.estimate
    assert all(row.runs_affected > 0 for row in summary.overall() if row.id.startswith("coords."))


def test_server_rows_attribute_occurrences_to_the_server_registry_name(incompatible: Path) -> None:
    summary = summarize(validate_experiment(incompatible))
    rows = {row.group.name: row for row in summary.rows_for(GroupKind.SERVER) if row.id == "coords.mismatch"}
    assert set(rows) == {"detect-xyxy", "crop-xywh"}
    assert rows["crop-xywh"].occurrences > 0
    assert rows["detect-xyxy"].occurrences == 0
    overall = next(row for row in summary.overall() if row.id == "coords.mismatch")
    assert (overall.servers_flagged, overall.servers_total, overall.servers_flagged_percent) == (1, 2, 50.0)
    agents = [row.group.name for row in summary.rows_for(GroupKind.AGENT)]
    assert set(agents) == {"scripted"}


def test_compatible_experiment_has_no_violations_and_says_so(compatible: Path) -> None:
    summary = summarize(validate_experiment(compatible))
    assert summary.rows == ()
    assert summary.notes == (f"no violations in 10 runs ({summary.executions} executions)",)


def test_requested_ids_get_zero_rows_with_an_upper_bound(compatible: Path) -> None:
    summary = summarize(validate_experiment(compatible), ids=["coords.mismatch"])
    row = next(row for row in summary.rows if row.group == OVERALL)
    assert row.occurrences == 0
    assert row.runs_affected_per_100 is not None
    assert row.runs_affected_per_100.high == pytest.approx(27.75, abs=0.01)


def test_empty_experiment_summary_divides_nothing_and_says_no_runs() -> None:
    summary = summarize(ValidationResult(violations=(), failures=(), runs=()))
    assert (summary.runs, summary.executions, summary.rows, summary.experiment_id) == (0, 0, (), None)
    assert summary.notes == ("no complete runs: nothing to rate",)


def test_runs_without_calls_leave_per_execution_rates_undefined(incompatible: Path) -> None:
    result = validate_experiment(incompatible)
    bare = tuple(
        dataclasses.replace(r, events=tuple(e for e in r.events if isinstance(e, RunStarted | RunFinished)))
        for r in result.runs
    )
    assert not any(isinstance(e, CallEvent) for r in bare for e in r.events)
    summary = summarize(dataclasses.replace(result, runs=bare))
    assert "no executed calls: per-execution rates are undefined" in summary.notes
    assert all(row.per_100_executions is None for row in summary.rows)
    assert all(row.runs_affected_per_100 is not None for row in summary.rows)


def test_partial_experiment_summary_names_the_complete_share(incompatible: Path) -> None:
    result = validate_experiment(incompatible)
    summary = summarize(dataclasses.replace(result, runs=result.runs[:4]))
    assert summary.runs == 4
    assert "partial experiment: 4 of 10 planned runs complete" in summary.notes
