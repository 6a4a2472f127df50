"""Violation rates with confidence intervals: per ID, per server, per fault kind, per agent kind.

Runs affected per 100 runs (Wilson interval) and occurrences per 100 executions
(exact Poisson interval) are always reported side by side and never mixed.
"""

from __future__ import annotations

from testbed.metrics._intervals import Interval, poisson_interval, wilson_interval
from testbed.metrics._modes import ModeRow, combined_mode, mode_row
from testbed.metrics._summary import (
    OVERALL,
    Group,
    GroupKind,
    RateRow,
    Summary,
    server_identity,
    summarize,
    summarize_experiments,
)

__all__ = [
    "OVERALL",
    "Group",
    "GroupKind",
    "Interval",
    "ModeRow",
    "RateRow",
    "Summary",
    "combined_mode",
    "mode_row",
    "poisson_interval",
    "server_identity",
    "summarize",
    "summarize_experiments",
    "wilson_interval",
]
