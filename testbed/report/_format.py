"""Shared wording and number formatting for every report format."""

from __future__ import annotations

from testbed.metrics import Interval, RateRow, Summary
from testbed.validators import TRUTH_READERS

RUNS_METRIC = "runs affected /100 runs"
EXEC_METRIC = "per 100 executions"

COLUMNS = ("ID", "severity", "group", RUNS_METRIC, EXEC_METRIC, "servers flagged")


def interval_text(interval: Interval | None) -> str:
    """``12.3 [4.5–20.1]``, or ``n/a`` where the rate is undefined."""
    if interval is None:
        return "n/a"
    return f"{interval.estimate:.1f} [{interval.low:.1f}–{interval.high:.1f}]"


def servers_text(row: RateRow) -> str:
    percent = row.servers_flagged_percent
    return "n/a" if percent is None else f"{row.servers_flagged}/{row.servers_total} ({percent:.0f} %)"


def row_cells(row: RateRow) -> tuple[str, ...]:
    return (
        row.id,
        row.severity,
        row.group.label,
        f"{interval_text(row.runs_affected_per_100)} ({row.runs_affected}/{row.runs})",
        f"{interval_text(row.per_100_executions)} ({row.occurrences}/{row.executions})",
        servers_text(row),
    )


def title(summary: Summary) -> str:
    name = summary.scenario or "unknown scenario"
    if summary.experiments:
        return f"{name} — {len(summary.experiments)} experiments"
    experiment = summary.experiment_id or "no experiment id"
    return f"{name} — experiment {experiment}"


def sources_line(summary: Summary) -> str | None:
    """Where the summarised experiments were read from: one directory, or every one of several."""
    if summary.experiments:
        return f"experiment directories ({len(summary.experiments)}): {', '.join(summary.experiments)}"
    return f"experiment directory: {summary.source}" if summary.source else None


def metric_legend(summary: Summary) -> tuple[str, ...]:
    """One line per metric saying exactly what it counts."""
    level = f"{summary.confidence * 100:.0f} %"
    return (
        f"{RUNS_METRIC}: share of runs with at least one occurrence x 100, Wilson {level} interval (k/n runs).",
        f"{EXEC_METRIC}: every occurrence over executed (not skipped) calls x 100, exact Poisson {level} interval "
        "(occurrences/executions).",
        "servers flagged: servers with at least one occurrence attributed to them / servers in the group.",
        "groups: all = every run; server=NAME = occurrences and calls of that server only; "
        "fault=KIND = runs where that fault was injected; agent=KIND = runs driven by that agent kind.",
    )


def scope_line(summary: Summary) -> str:
    planned = f" of {summary.planned_runs} planned" if summary.planned_runs is not None else ""
    return (
        f"{summary.runs} complete runs{planned}, {summary.executions} executions, "
        f"servers: {', '.join(summary.servers) or 'none'}; faults: {', '.join(summary.fault_kinds) or 'none'}; "
        f"agents: {', '.join(summary.agent_kinds) or 'none'}"
    )


def truth_mode_lines(summary: Summary) -> tuple[str, ...]:
    """Which validators read truth manifests, then per server the mode they ran in (none without servers)."""
    if not summary.truth_modes:
        return ()
    heading = f"validators that read truth manifests ({', '.join(TRUTH_READERS)}) ran per server as follows:"
    return (heading, *(f"{m.alias} ({m.server}): {m.mode}, {m.meaning}" for m in summary.truth_modes))
