"""Experiment ids of shipped scenarios stay put: a recording is replayed and resumed only under the id it was
recorded with, so a new scenario or profile field must leave documents that do not use it hashing as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.orchestrator import experiment_id
from testbed.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

RECORDED_IDS = {
    "v1/detect_crop.yaml": "af337b9e0327016b",
    "v1/detect_segment_crop.yaml": "c9bc5c658167ee62",
    "v1/segment_crop_masked.yaml": "53359944ff83b831",
    "contracts/halt.yaml": "ff8475b376e4842d",
    "contracts/convert.yaml": "f3ab9415cb0e6ac6",
    "defenses/role_binding_forward.yaml": "2053dac200d0d414",
    "security/injection_detect_crop.yaml": "8491c6e329d6b4af",
}
"""Ids these scenarios had when recordings of them were first made (profiled ones included)."""


@pytest.mark.parametrize(("name", "recorded"), sorted(RECORDED_IDS.items()))
def test_a_shipped_scenario_keeps_the_experiment_id_its_recordings_carry(name: str, recorded: str) -> None:
    assert experiment_id(load_scenario(SCENARIOS / name)) == recorded
