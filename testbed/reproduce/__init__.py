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
from testbed.reproduce._measure import FAMILIES, Measured, WorkflowMeasure, measure_population, measure_workflow
from testbed.reproduce._outputs import COLUMNS, LEGEND, MANIFEST_FILE, csv_text, rich_table
from testbed.reproduce._run import SCENARIO_FILE, WORKFLOWS_DIR, run_workflows
from testbed.reproduce._scenarios import EXECUTED_AGENT, workflow_scenario
from testbed.reproduce._tables import PAPER, RECOVERY_IDS, Row, audit_rows, recovery_failed

__all__ = [
    "AUDIT_PREVALENCE",
    "COLUMNS",
    "DEFAULT_SEED",
    "EXECUTED_AGENT",
    "FAMILIES",
    "LEGEND",
    "MANIFEST_FILE",
    "PAPER",
    "QUICK_MEMBERS",
    "QUICK_RUNS",
    "RECOVERY_IDS",
    "SCENARIO_FILE",
    "WORKFLOWS_DIR",
    "AuditResult",
    "Measured",
    "Row",
    "WorkflowMeasure",
    "audit_rows",
    "csv_text",
    "measure_population",
    "measure_workflow",
    "recovery_failed",
    "reproduce_audit",
    "rich_table",
    "run_workflows",
    "workflow_scenario",
]
