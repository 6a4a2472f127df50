"""Violation rates with confidence intervals: per ID, per server, per fault kind, per agent kind.

Runs affected per 100 runs (Wilson interval) and occurrences per 100 executions
(exact Poisson interval) are always reported side by side and never mixed.
"""

from __future__ import annotations

from testbed.metrics._intervals import Interval, poisson_interval, wilson_interval
from testbed.metrics._modes import ModeRow, mode_row
from testbed.metrics._summary import OVERALL, Group, GroupKind, RateRow, Summary, summarize

__all__ = [
    "OVERALL",
    "Group",
    "GroupKind",
    "Interval",
    "ModeRow",
    "RateRow",
    "Summary",
    "mode_row",
    "poisson_interval",
    "summarize",
    "wilson_interval",
]
