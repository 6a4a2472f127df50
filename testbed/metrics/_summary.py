"""Violation rates of one validated experiment: per violation ID and per group of runs.

Two rates are kept apart throughout, because they answer different questions:

* runs affected per 100 runs — the share of runs with at least one occurrence
  (a binomial proportion, Wilson interval): "how often does a run break?";
* occurrences per 100 executions — every occurrence counted, over the calls
  that actually executed (a Poisson rate, exact interval): "how often does a
  call break?". Memory-scope warnings are read this way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from testbed.events import CallEvent, CallOutcomeKind, ExperimentHeader
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
    """Distinct servers in the group with at least one occurrence attributed to them (see :func:`server_identity`)."""
    servers_total: int
    """Distinct servers in the group's runs, over every experiment summarised (see :func:`server_identity`)."""

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
    experiments: tuple[str, ...] = ()
    """Where each experiment was read from, when several are summarised together (empty for one)."""

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


def server_identity(record: RunRecord, alias: str) -> str:
    """What makes ``alias``'s server one distinct server across experiments.

    Its registry name (or, for an external server, its command or URL) and its configuration in the
    scenario, all but the transport (which changes how the server is reached, not what it does): the
    same registered server configured alike in two experiments is one server, configured otherwise two.
    """
    name = _server_names(record)[alias]
    configured = record.header.scenario.get("servers", {}).get(alias, {})
    config = {key: value for key, value in configured.items() if key != "transport"}
    return f"{name} {json.dumps(config, sort_keys=True)}"


def _server_identities(record: RunRecord) -> dict[str, str]:
    return record.memo(
        "server_identities",
        lambda: {server.alias: server_identity(record, server.alias) for server in record.header.servers},
    )


RunKey = tuple[str, int]
"""A run among several experiments: (experiment ID, run index)."""


def _key(record: RunRecord) -> RunKey:
    return record.header.experiment_id, record.started.run


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


def _row(violation_id: str, scope: _Scope, by_run: dict[RunKey, list[Violation]], confidence: float) -> RateRow:
    entry = CATALOG.get(violation_id)
    affected = occurrences = executions = 0
    servers: set[str] = set()
    flagged: set[str] = set()
    for record in scope.runs:
        aliases = scope.aliases(record)
        identities = _server_identities(record)
        servers.update(identities[alias] for alias in (aliases if aliases is not None else identities))
        executions += _executed(record, aliases)
        found = [
            v for v in by_run.get(_key(record), []) if v.id == violation_id and (aliases is None or v.server in aliases)
        ]
        occurrences += len(found)
        affected += bool(found)
        flagged.update(identities[v.server] for v in found if v.server is not None and v.server in identities)
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
    return summarize_experiments([(source, result)], ids=ids, confidence=confidence)


def _scenario_label(header: ExperimentHeader) -> str | None:
    name = header.scenario.get("name")
    version = header.scenario.get("version")
    return f"{name} v{version}" if name is not None and version is not None else (str(name) if name else None)


def _check_distinct(experiments: Sequence[tuple[str | None, ValidationResult]]) -> None:
    seen: dict[str, str | None] = {}
    for source, result in experiments:
        if not result.runs:
            continue
        experiment_id = result.runs[0].header.experiment_id
        if experiment_id in seen:
            raise ValueError(
                f"{source}: the same experiment as {seen[experiment_id]} (experiment id {experiment_id}); "
                "give each experiment once"
            )
        seen[experiment_id] = source


def summarize_experiments(
    experiments: Sequence[tuple[str | None, ValidationResult]],
    *,
    ids: Iterable[str] | None = None,
    confidence: float = 0.95,
) -> Summary:
    """Compute every rate over several validated experiments together, as :func:`summarize` does for one.

    Runs, executions and occurrences add up over the experiments; "servers flagged" counts each
    distinct server (:func:`server_identity`) once, however many experiments it took part in.

    Args:
        experiments: (where it was read from, the validated experiment) for each experiment.
        ids: as for :func:`summarize`.
        confidence: two-sided level of every interval.

    Raises:
        ValueError: the same experiment (by experiment ID) is given twice.
    """
    _check_distinct(experiments)
    records = [record for _, result in experiments for record in sorted(result.runs, key=lambda r: r.started.run)]
    known_runs = {_key(record) for record in records}
    by_run: dict[RunKey, list[Violation]] = {}
    occurred: set[str] = set()
    for _, result in experiments:
        if not result.runs:
            continue
        experiment_id = result.runs[0].header.experiment_id
        for violation in result.violations:
            if (experiment_id, violation.run) in known_runs:
                by_run.setdefault((experiment_id, violation.run), []).append(violation)
                occurred.add(violation.id)
    wanted = sorted(set(ids) if ids is not None else occurred)
    scopes = _scopes(records)
    rows = tuple(_row(violation_id, scope, by_run, confidence) for violation_id in wanted for scope in scopes)

    headers = [result.runs[0].header for _, result in experiments if result.runs]
    planned = sum(header.runs for header in headers) if headers else None
    executions = sum(_executed(record, None) for record in records)
    failures = tuple(failure for _, result in experiments for failure in result.failures)
    notes: list[str] = []
    if not records:
        notes.append("no complete runs: nothing to rate")
    else:
        if planned is not None and planned > len(records):
            kind = "experiment" if len(experiments) == 1 else "experiments"
            notes.append(f"partial {kind}: {len(records)} of {planned} planned runs complete")
        if executions == 0:
            notes.append("no executed calls: per-execution rates are undefined")
        if not wanted:
            notes.append(f"no violations in {len(records)} runs ({executions} executions)")
    if failures:
        failed = sorted({failure.validator for failure in failures})
        notes.append(f"{len(failures)} validator failures ({', '.join(failed)}): rates may be undercounted")
    single = len(experiments) == 1
    labels = sorted({label for header in headers if (label := _scenario_label(header)) is not None})
    if single or len(labels) <= 1:
        scenario = labels[0] if labels else None
    else:
        scenario = ", ".join(labels) if len(labels) <= 3 else f"{len(labels)} scenarios"
    return Summary(
        experiment_id=headers[0].experiment_id if single and headers else None,
        scenario=scenario,
        source=experiments[0][0] if single else None,
        planned_runs=planned,
        runs=len(records),
        executions=executions,
        servers=tuple(sorted({name for record in records for name in _server_names(record).values()})),
        fault_kinds=tuple(sorted({kind for record in records for kind in _fault_kinds(record)})),
        agent_kinds=tuple(sorted({_agent_kind(record) for record in records})),
        ids=tuple(wanted),
        rows=rows,
        failures=failures,
        notes=tuple(notes),
        confidence=confidence,
        truth_modes=tuple(dict.fromkeys(mode for header in headers for mode in server_modes(header))),
        experiments=() if single else tuple(source or "" for source, _ in experiments),
    )
