"""Self-checks of the testbed: scenarios give exactly their ``expect`` on a fault-free stack, every
configured fault is detected, and validator accuracy (recall, false positives) per fault kind."""

from testbed.check._accuracy import (
    AccuracyRow,
    AccuracyTable,
    RunObservation,
    fault_for,
    measure_accuracy,
    observe,
    score,
    with_clean_runs_from,
)
from testbed.check._calibration import (
    CALIBRATION_FIELDS,
    RECALL_GOAL,
    calibration_record,
    calibration_records,
    hits_needed,
    meets_recall_goal,
)
from testbed.check._experiments import scenes_kept_in_the_inference_cache
from testbed.check._runner import RunResult, in_process, run_and_validate, with_deadline, with_faults
from testbed.check._suite import (
    CheckReport,
    FaultCheck,
    ScenarioCheck,
    check_faults,
    check_scenario,
    check_suite,
    scenario_paths,
)

__all__ = [
    "CALIBRATION_FIELDS",
    "RECALL_GOAL",
    "AccuracyRow",
    "AccuracyTable",
    "CheckReport",
    "FaultCheck",
    "RunObservation",
    "RunResult",
    "ScenarioCheck",
    "calibration_record",
    "calibration_records",
    "check_faults",
    "check_scenario",
    "check_suite",
    "fault_for",
    "hits_needed",
    "in_process",
    "measure_accuracy",
    "meets_recall_goal",
    "observe",
    "run_and_validate",
    "scenario_paths",
    "scenes_kept_in_the_inference_cache",
    "score",
    "with_clean_runs_from",
    "with_deadline",
    "with_faults",
]
