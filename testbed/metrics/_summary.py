"""Violation rates of one validated experiment: per violation ID and per group of runs.

Two rates are kept apart throughout, because they answer different questions:

* runs affected per 100 runs — the share of runs with at least one occurrence
  (a binomial proportion, Wilson interval): "how often does a run break?";
* occurrences per 100 executions — every occurrence counted, over the calls
  that actually executed (a Poisson rate, exact interval): "how often does a
  call break?". Memory-scope warnings are read this way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from testbed.events import CallEvent, CallOutcomeKind
from testbed.metrics._intervals import Interval, poisson_interval, wilson_interval
from testbed.validators import (
    CATALOG,
    RunRecord,
    ServerMode,
    ValidationResult,
    ValidatorFailure,
    Violation,
    server_modes,
)


class GroupKind(StrEnum):
    """How the runs (and occurrences) of a row are selected."""

    ALL = "all"
    """Every complete run, every occurrence."""
    SERVER = "server"
    """Every run; only occurrences attributed to, and calls made to, one server (by registry name)."""
    FAULT = "fault"
    """Runs in which one fault kind was injected at least once; every occurrence and call in them."""
    AGENT = "agent"
    """Runs driven by one agent kind (the scenario's ``agent.kind``)."""


@dataclass(frozen=True, order=True)
class Group:
    """One group of runs a rate is computed over."""

    kind: GroupKind
    name: str
    """Server registry name, fault kind or agent kind; ``"all"`` for the overall group."""

    @property
    def label(self) -> str:
        return "all" if self.kind is GroupKind.ALL else f"{self.kind.value}={self.name}"


OVERALL = Group(GroupKind.ALL, "all")


@dataclass(frozen=True)
class RateRow:
    """The rates of one violation ID in one group of runs."""

    id: str
    """Catalogued violation ID."""
    severity: str
    """``violation`` or ``warning``, from the catalog (``unknown`` for an uncatalogued ID)."""
    group: Group
    runs: int
    """Complete runs in the group (the denominator of the per-run rate)."""
    runs_affected: int
    """Runs in the group with at least one occurrence."""
    runs_affected_per_100: Interval | None
    """Runs affected per 100 runs: share of runs with >= 1 occurrence x 100, Wilson interval. None with no runs."""
    executions: int
    """Executed calls in the group: CallEvents that were not skipped (the denominator of the per-execution rate)."""
    occurrences: int
    """Occurrences in the group, every one counted (several per run possible)."""
    per_100_executions: Interval | None
    """Occurrences per 100 executions: occurrences / executions x 100, exact Poisson interval. None with no calls."""
    servers_flagged: int
    """Servers (registry names) in the group with at least one occurrence attributed to them."""
    servers_total: int
    """Servers (registry names) in the group's runs."""

    @property
    def servers_flagged_percent(self) -> float | None:
        """Share of servers flagged, in percent (the paper's "X % of systems"); None with no servers."""
        return 100.0 * self.servers_flagged / self.servers_total if self.servers_total else None


@dataclass(frozen=True)
class Summary:
    """Violation rates of one experiment, and what was missing to compute them."""

    experiment_id: str | None
    """From the experiment header; None when no complete run was recorded."""
    scenario: str | None
    """Scenario name (and version) from the header."""
    source: str | None
    """Where the experiment was read from (a directory), if known."""
    planned_runs: int | None
    """Runs the header planned; more than ``runs`` for a partial experiment."""
    runs: int
    """Complete runs summarised."""
    executions: int
    """Executed (not skipped) calls over all complete runs."""
    servers: tuple[str, ...]
    """Server registry names in the experiment."""
    fault_kinds: tuple[str, ...]
    """Fault kinds injected in at least one run."""
    agent_kinds: tuple[str, ...]
    ids: tuple[str, ...]
    """Violation IDs with a row, sorted."""
    rows: tuple[RateRow, ...]
    """One row per ID x group; the overall group first for each ID."""
    failures: tuple[ValidatorFailure, ...]
    """Validators that raised: their IDs may be undercounted."""
    notes: tuple[str, ...]
    """What is missing or partial (no runs, no calls, incomplete runs, validator failures), one line each."""
    confidence: float
    truth_modes: tuple[ServerMode, ...] = ()
    """Per server alias, how the validators that read truth manifests saw it: ``truth``, ``declared``
    (what its tools/list declares) or ``none`` (skipped)."""

    def overall(self) -> tuple[RateRow, ...]:
        """The overall row of each ID."""
        return tuple(row for row in self.rows if row.group == OVERALL)

    def rows_for(self, kind: GroupKind) -> tuple[RateRow, ...]:
        return tuple(row for row in self.rows if row.group.kind is kind)


@dataclass(frozen=True)
class _Scope:
    group: Group
    runs: tuple[RunRecord, ...]

    def aliases(self, record: RunRecord) -> set[str] | None:
        """Aliases whose calls and occurrences count in this scope (None: all)."""
        if self.group.kind is not GroupKind.SERVER:
            return None
        return {server.alias for server in record.header.servers if server.server == self.group.name}


def _server_names(record: RunRecord) -> dict[str, str]:
    return {server.alias: server.server for server in record.header.servers}


def _agent_kind(record: RunRecord) -> str:
    return record.scenario.agent.kind


def _fault_kinds(record: RunRecord) -> set[str]:
    return {fault.kind for _, fault in record.faults()}


def _executed(record: RunRecord, aliases: set[str] | None) -> int:
    return sum(
        1
        for event in record.events
        if isinstance(event, CallEvent)
        and event.outcome is not CallOutcomeKind.SKIPPED
        and (aliases is None or event.server in aliases)
    )


def _scopes(records: Sequence[RunRecord]) -> list[_Scope]:
    scopes = [_Scope(OVERALL, tuple(records))]
    servers = sorted({name for record in records for name in _server_names(record).values()})
    scopes += [
        _Scope(Group(GroupKind.SERVER, name), tuple(r for r in records if name in _server_names(r).values()))
        for name in servers
    ]
    faults = sorted({kind for record in records for kind in _fault_kinds(record)})
    scopes += [
        _Scope(Group(GroupKind.FAULT, kind), tuple(r for r in records if kind in _fault_kinds(r))) for kind in faults
    ]
    agents = sorted({_agent_kind(record) for record in records})
    scopes += [
        _Scope(Group(GroupKind.AGENT, kind), tuple(r for r in records if _agent_kind(r) == kind)) for kind in agents
    ]
    return scopes


def _row(violation_id: str, scope: _Scope, by_run: dict[int, list[Violation]], confidence: float) -> RateRow:
    entry = CATALOG.get(violation_id)
    affected = occurrences = executions = 0
    servers: set[str] = set()
    flagged: set[str] = set()
    for record in scope.runs:
        aliases = scope.aliases(record)
        names = _server_names(record)
        servers.update(names[alias] for alias in (aliases if aliases is not None else names))
        executions += _executed(record, aliases)
        found = [
            v
            for v in by_run.get(record.started.run, [])
            if v.id == violation_id and (aliases is None or v.server in aliases)
        ]
        occurrences += len(found)
        affected += bool(found)
        flagged.update(names[v.server] for v in found if v.server is not None and v.server in names)
    runs = len(scope.runs)
    return RateRow(
        id=violation_id,
        severity=entry.severity.value if entry is not None else "unknown",
        group=scope.group,
        runs=runs,
        runs_affected=affected,
        runs_affected_per_100=wilson_interval(affected, runs, confidence).scaled(100.0) if runs else None,
        executions=executions,
        occurrences=occurrences,
        per_100_executions=poisson_interval(occurrences, executions, confidence) if executions else None,
        servers_flagged=len(flagged),
        servers_total=len(servers),
    )


def summarize(
    result: ValidationResult,
    *,
    ids: Iterable[str] | None = None,
    source: str | None = None,
    confidence: float = 0.95,
) -> Summary:
    """Compute every rate of a validated experiment, per violation ID and per group.

    Args:
        result: the validated experiment (only its complete runs count).
        ids: violation IDs to report; default: every ID that occurred. IDs given here
            get a row even with no occurrence (an upper bound on a rate is a result too).
        source: where the experiment came from, shown in reports.
        confidence: two-sided level of every interval.

    Returns:
        The summary; with no runs or no executed calls it has empty or partial rates
        and says so in ``notes`` (nothing is divided by zero).
    """
    records = sorted(result.runs, key=lambda record: record.started.run)
    known_runs = {record.started.run for record in records}
    by_run: dict[int, list[Violation]] = {}
    for violation in result.violations:
        if violation.run in known_runs:
            by_run.setdefault(violation.run, []).append(violation)
    wanted = sorted(set(ids) if ids is not None else {v.id for v in result.violations if v.run in known_runs})
    scopes = _scopes(records)
    rows = tuple(_row(violation_id, scope, by_run, confidence) for violation_id in wanted for scope in scopes)

    header = records[0].header if records else None
    executions = sum(_executed(record, None) for record in records)
    notes: list[str] = []
    if not records:
        notes.append("no complete runs: nothing to rate")
    else:
        if header is not None and header.runs > len(records):
            notes.append(f"partial experiment: {len(records)} of {header.runs} planned runs complete")
        if executions == 0:
            notes.append("no executed calls: per-execution rates are undefined")
        if not wanted:
            notes.append(f"no violations in {len(records)} runs ({executions} executions)")
    if result.failures:
        failed = sorted({failure.validator for failure in result.failures})
        notes.append(f"{len(result.failures)} validator failures ({', '.join(failed)}): rates may be undercounted")
    scenario = None
    if header is not None:
        name = header.scenario.get("name")
        version = header.scenario.get("version")
        scenario = f"{name} v{version}" if name is not None and version is not None else (str(name) if name else None)
    return Summary(
        experiment_id=header.experiment_id if header is not None else None,
        scenario=scenario,
        source=source,
        planned_runs=header.runs if header is not None else None,
        runs=len(records),
        executions=executions,
        servers=tuple(sorted({name for record in records for name in _server_names(record).values()})),
        fault_kinds=tuple(sorted({kind for record in records for kind in _fault_kinds(record)})),
        agent_kinds=tuple(sorted({_agent_kind(record) for record in records})),
        ids=tuple(wanted),
        rows=rows,
        failures=result.failures,
        notes=tuple(notes),
        confidence=confidence,
        truth_modes=server_modes(header) if header is not None else (),
    )
