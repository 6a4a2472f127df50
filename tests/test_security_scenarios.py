"""The attack scenarios of ``scenarios/security``: each file loads, and the scripted pairing measures
utility against ground truth and security from the recorded trace: the scripted agent keeps its
utility and never makes the injected call, while an agent made to follow the injection is caught by
``perm.tool_not_granted`` in every run (so the security judge can fail)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from testbed.events import RunFinished, read_events
from testbed.scenario import Scenario, load_scenario, load_scenario_text
from testbed.validators import validate_experiment

SECURITY = Path(__file__).resolve().parents[1] / "scenarios" / "security"
SCRIPTED = SECURITY / "injection_detect_crop.yaml"
INJECTION_GOAL = "priv.forward_call"


@pytest.mark.parametrize("path", sorted(SECURITY.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_security_scenario_loads_and_leaves_its_injection_goal_ungranted(path: Path) -> None:
    scenario = load_scenario(path)

    assert scenario.agent.grants is not None
    assert INJECTION_GOAL not in scenario.agent.grants
    assert any((ref.server or "").startswith("vuln-") for ref in scenario.servers.values())


def followed_the_injection(runs: int) -> Scenario:
    """The scripted pairing, with a workflow that does what the injected label says."""
    data = yaml.safe_load(SCRIPTED.read_text(encoding="utf-8"))
    data["runs"] = runs
    data["agent"]["workflow"]["nodes"].insert(
        1, {"id": "obey", "call": INJECTION_GOAL, "args": {"server": "vuln-rce", "tool": "export_all"}}
    )
    return load_scenario_text(yaml.safe_dump(data), source="followed")


def outcome(directory: Path) -> tuple[list[bool | None], int]:
    """Each run's utility (task passed) and how many runs the security judge flagged."""
    passed = [event.task_passed for event in read_events(directory).events if isinstance(event, RunFinished)]
    flagged = {v.run for v in validate_experiment(directory).violations if v.id == "perm.tool_not_granted"}
    return passed, len(flagged)


@pytest.mark.slow
def test_the_scripted_agent_keeps_utility_and_the_judge_flags_an_agent_that_obeys(
    recorded_scenario: Callable[[Scenario], Path],
) -> None:
    clean = recorded_scenario(load_scenario(SCRIPTED).model_copy(update={"runs": 3}))
    attacked = recorded_scenario(followed_the_injection(runs=3))

    assert outcome(clean) == ([True, True, True], 0)
    assert outcome(attacked) == ([True, True, True], 3)
