"""Every v1 scenario's fault-free runs produce exactly its ``expect`` list; planning agents' scenarios are
measurements that must run, record and replay without their models."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.check import check_scenario
from testbed.scenario import load_scenario

pytestmark = pytest.mark.quality

V1 = sorted((Path(__file__).resolve().parents[2] / "scenarios" / "v1").glob("*.yaml"))


@pytest.mark.parametrize("path", V1, ids=lambda path: path.stem)
def test_fault_free_runs_give_exactly_the_expect_list_or_replay_when_measured(path: Path) -> None:
    scenario = load_scenario(path)
    result = check_scenario(path, scenario, runs=3)

    assert not result.validator_failures, result.validator_failures
    if result.measured:
        assert result.replay == "reproduced", result.replay
    else:
        assert (sorted(result.missing), sorted(result.unexpected)) == ([], [])
