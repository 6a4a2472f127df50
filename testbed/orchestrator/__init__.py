"""The orchestrator: starts servers, steps agents through runs, records every message."""

from testbed.orchestrator._agents import build_agent, live_models, replay_models
from testbed.orchestrator._call import CallOutcome, call_tool, result_payload
from testbed.orchestrator._experiment import (
    ExperimentFinishedError,
    ExperimentSummary,
    experiment_id,
    outcome_counts,
    prepare_resume,
    run_experiment,
    scene_for_run,
)
from testbed.orchestrator._ray import RayExecutor
from testbed.orchestrator._replay import Divergence, ReplayReport, comparable, first_divergence, replay_experiment
from testbed.orchestrator._run import CLOCK_STEP_S, RunOutcome, execute_run

__all__ = [
    "CLOCK_STEP_S",
    "CallOutcome",
    "Divergence",
    "ExperimentFinishedError",
    "ExperimentSummary",
    "RayExecutor",
    "ReplayReport",
    "RunOutcome",
    "build_agent",
    "call_tool",
    "comparable",
    "execute_run",
    "experiment_id",
    "first_divergence",
    "live_models",
    "outcome_counts",
    "prepare_resume",
    "replay_experiment",
    "replay_models",
    "result_payload",
    "run_experiment",
    "scene_for_run",
]
