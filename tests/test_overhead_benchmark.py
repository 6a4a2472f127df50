"""Parts of the overhead benchmark (``benchmarks/overhead.py``): SDK floor, calls per run, idle before a call."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks import overhead
from testbed.events import CallEvent, read_events


@pytest.mark.parametrize("transport", ["inprocess", "stdio"])
def test_the_sdk_floor_times_real_no_op_calls(transport: str) -> None:
    seconds = overhead.sdk_call_floor(transport, argument_chars=20_000, calls=12)
    assert 0 < seconds < 5


def test_the_sdk_floor_names_a_transport_it_cannot_time() -> None:
    with pytest.raises(ValueError, match="transport: inprocess or stdio, not 'http'"):
        overhead.sdk_call_floor("http", argument_chars=10, calls=1)


def test_calls_per_run_are_the_runs_tool_calls(recorded_v1: Callable[..., Path]) -> None:
    events = read_events(recorded_v1("detect_segment_crop", 3)).events
    per_run = [
        sum(1 for e in events if isinstance(e, CallEvent) and e.run == run and e.outcome.value != "skipped")
        for run in (1, 2)
    ]
    timing = overhead._timing(events)
    assert timing.calls == statistics.median(per_run)
    assert timing.calls >= 3  # detect, segment and at least one crop


def test_the_idle_before_a_direct_call_is_slept_and_measured() -> None:
    assert overhead._idle(0.0) == 0.0
    slept = overhead._idle(0.002)
    assert 0.002 <= slept < 1.0
