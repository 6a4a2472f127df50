"""The orchestrator: starts servers, steps agents through runs, records every message."""

from testbed.orchestrator._call import CallOutcome, call_tool, result_payload
from testbed.orchestrator._experiment import (
    ExperimentSummary,
    experiment_id,
    outcome_counts,
    run_experiment,
    scene_for_run,
)
from testbed.orchestrator._run import CLOCK_STEP_S, RunOutcome, execute_run

__all__ = [
    "CLOCK_STEP_S",
    "CallOutcome",
    "ExperimentSummary",
    "RunOutcome",
    "call_tool",
    "execute_run",
    "experiment_id",
    "outcome_counts",
    "result_payload",
    "run_experiment",
    "scene_for_run",
]
