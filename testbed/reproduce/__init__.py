"""Reproducing the paper's tables: ``testbed reproduce audit`` over a sampled population of servers.

Every figure is marked *input* (configured from the paper) or *output* (measured by the validators over
recorded runs); a recovery check compares each measured property rate with its realised prevalence.
"""

from testbed.reproduce._audit import (
    AUDIT_PREVALENCE,
    DEFAULT_SEED,
    QUICK_MEMBERS,
    QUICK_RUNS,
    AuditResult,
    reproduce_audit,
)
from testbed.reproduce._calibration import (
    FULL_CALIBRATION_RUNS,
    QUICK_CALIBRATION_RUNS,
    Calibration,
    calibrate,
    calibration_dir,
)
from testbed.reproduce._cases import CASES_LEGEND, DEFAULT_CASES_SEED, CasesResult, reproduce_cases
from testbed.reproduce._cases_model import CASES_DIR, CaseFamily, load_case, load_cases
from testbed.reproduce._html import calibration_section
from testbed.reproduce._measure import FAMILIES, Measured, WorkflowMeasure, measure_population, measure_workflow
from testbed.reproduce._outputs import COLUMNS, LEGEND, MANIFEST_FILE, csv_text, rich_table
from testbed.reproduce._paper import (
    FULL_SIZES,
    PARTS,
    QUICK_SIZES,
    PaperResult,
    PaperSizes,
    load_paper_manifest,
    reproduce_paper,
)
from testbed.reproduce._run import SCENARIO_FILE, WORKFLOWS_DIR, run_workflows
from testbed.reproduce._scenarios import EXECUTED_AGENT, workflow_scenario
from testbed.reproduce._security import (
    DEFAULT_SECURITY_SEED,
    QUICK_RUNS_SECURITY,
    SecurityResult,
    reproduce_security,
)
from testbed.reproduce._tables import PAPER, RECOVERY_IDS, Row, audit_rows, recovery_failed

__all__ = [
    "AUDIT_PREVALENCE",
    "CASES_DIR",
    "CASES_LEGEND",
    "COLUMNS",
    "DEFAULT_CASES_SEED",
    "DEFAULT_SECURITY_SEED",
    "DEFAULT_SEED",
    "EXECUTED_AGENT",
    "FAMILIES",
    "FULL_CALIBRATION_RUNS",
    "FULL_SIZES",
    "LEGEND",
    "MANIFEST_FILE",
    "PAPER",
    "PARTS",
    "QUICK_CALIBRATION_RUNS",
    "QUICK_MEMBERS",
    "QUICK_RUNS",
    "QUICK_RUNS_SECURITY",
    "QUICK_SIZES",
    "RECOVERY_IDS",
    "SCENARIO_FILE",
    "WORKFLOWS_DIR",
    "AuditResult",
    "Calibration",
    "CaseFamily",
    "CasesResult",
    "Measured",
    "PaperResult",
    "PaperSizes",
    "Row",
    "SecurityResult",
    "WorkflowMeasure",
    "audit_rows",
    "calibrate",
    "calibration_dir",
    "calibration_section",
    "csv_text",
    "load_case",
    "load_cases",
    "load_paper_manifest",
    "measure_population",
    "measure_workflow",
    "recovery_failed",
    "reproduce_audit",
    "reproduce_cases",
    "reproduce_paper",
    "reproduce_security",
    "rich_table",
    "run_workflows",
    "workflow_scenario",
]
