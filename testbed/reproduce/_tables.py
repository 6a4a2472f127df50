"""The audit's tables from a measured population: every figure marked input (configured) or output (measured)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, Literal

from testbed.metrics import Interval, poisson_interval, wilson_interval
from testbed.population import MODES, PROPERTIES, Member, Population, Prevalence
from testbed.protocol import SchemaStyle
from testbed.reproduce._measure import FAMILIES, Measured
from testbed.reproduce._scenarios import EXECUTED_AGENT

__all__ = ["PAPER", "RECOVERY_IDS", "Row", "audit_rows", "recovery_failed"]

Marking = Literal["input", "output"]


@dataclass(frozen=True)
class Row:
    """One figure: ours (input or output) beside the paper's, where it has one."""

    table: str
    row: str
    marking: Marking
    unit: str
    count: int | None
    total: float | None
    value: Interval | None
    paper: Interval | None = None
    recovered: str = ""
    """Recovery check rows only: ``yes``, ``NO`` or ``not measurable``."""
    note: str = ""
    family: str = ""
    """The validator family whose findings the row counts (its calibration is read beside it); empty if none."""


PAPER: Final[dict[str, Interval]] = {
    "schema": Interval(78.0, 68.45, 85.28),
    "coords": Interval(24.6, 16.90, 34.36),
    "mask": Interval(17.3, 10.90, 26.35),
    "perm": Interval(41.0, 28.02, 55.37),
    "untyped": Interval(89.0, 76.80, 95.19),
    "memory_per_100": Interval(33.8, 28.4, 39.9),
}
"""The audit's published results (PAPER.md), Wilson 95 % or exact Poisson as it states."""


RECOVERY_IDS: Final[dict[str, tuple[str, ...]]] = {
    "undeclared_conventions": ("coords.undeclared",),
    "schema_divergence": (
        "schema.output_schema_loose",
        "schema.output_schema_missing",
        "schema.text_json_without_schema",
    ),
    "memory_retention": (
        "memory.unbounded_store",
        "memory.retention_exceeded",
        "memory.handle_out_of_scope",
        "memory.handle_expired",
    ),
    "bridging": ("perm.tool_not_granted",),
}
"""The violation IDs that measure each controlled property on the server it is attributed to."""

_APPLIES: Final[dict[str, Callable[[Member], bool]]] = {
    "undeclared_conventions": lambda member: member.capability != "crop-mask",  # the only server without a box
}


def _undeclared_in_effect(member: Member) -> bool:
    """Drawn undeclared, or a producer whose divergent output schema has no box property to declare it on."""
    no_place = member.capability in ("detect", "segment") and member.profile.schema_style is not SchemaStyle.FULL
    return member.drawn.undeclared_conventions or no_place


_REALISED: Final[dict[str, Callable[[Member], bool]]] = {"undeclared_conventions": _undeclared_in_effect}
"""Where a property's effect on the wire differs from the draw, the realised share counts the effect."""
_UNMEASURED_NOTE: Final = "no validator reads it from a recording (input only)"


def _percent(k: int, n: int) -> Interval | None:
    return wilson_interval(k, n).scaled(100) if n > 0 else None


_FAMILY_NOTES: Final[dict[str, str]] = {
    "coords": (
        "servers with any coords.* finding, coords.undeclared included: it fires on every server that declares no "
        "convention (configured 87 %), so this reads the paper's 'missing or inconsistent' literally"
    ),
    "perm": "servers flagged in the security subset",
}
_COORDS_MISMATCH: Final = "coords: mismatch found"
_COORDS_MISMATCH_NOTE: Final = (
    "servers with a coords.* finding other than coords.undeclared (a convention that went wrong on the wire); the "
    "paper's 24.6 % beside 87 % undeclared fits only this reading"
)


def _server_row(table: str, name: str, flagged: int, pool: int, family: str, note: str) -> Row:
    return Row(table, name, "output", "% of servers", flagged, pool, _percent(flagged, pool), PAPER.get(family),
               note=note, family=family)  # fmt: skip


def _family_rows(population: Population, measured: Measured) -> list[Row]:
    rows = []
    members = list(population.members)
    for family in (*(family for family in FAMILIES if family != "perm"), "perm"):
        pool = [m for m in members if m.security_subset] if family == "perm" else members
        flagged = sum(measured.flagged(m.id, family) for m in pool)
        table = "B security" if family == "perm" else "A validators"
        note = _FAMILY_NOTES.get(family, "servers flagged")
        rows.append(_server_row(table, family, flagged, len(pool), family, note))
        if family == "coords":
            mismatched = sum(
                any(found.startswith("coords.") and found != "coords.undeclared" for found in measured.ids_of(m.id))
                for m in pool
            )
            rows.append(_server_row(table, _COORDS_MISMATCH, mismatched, len(pool), family, _COORDS_MISMATCH_NOTE))
    return rows


def _edges(measured: Measured) -> tuple[int, int]:
    untyped = total = 0
    for measure in measured.workflows:
        for producer, consumer in pairwise(measure.workflow.members):
            total += 1
            untyped += producer in measure.undeclared and consumer in measure.undeclared
    return untyped, total


def _security_rows(measured: Measured) -> list[Row]:
    untyped, edges = _edges(measured)
    executions = sum(m.executions for m in measured.workflows)
    warnings = sum(m.memory_warnings for m in measured.workflows)
    memory = poisson_interval(warnings, executions) if executions else None
    return [
        Row(
            "B security",
            "untyped connections",
            "output",
            "% of edges",
            untyped,
            edges,
            _percent(untyped, edges),
            PAPER["untyped"],
            note="edges where neither recorded tool listing declares a convention",
            family="conn",
        ),
        Row(
            "B security",
            "memory warnings",
            "output",
            "per 100 executions",
            warnings,
            executions,
            memory,
            PAPER["memory_per_100"],
            note="memory.* occurrences over executed calls, exact Poisson",
            family="memory",
        ),
    ]


_MODE_FAMILIES: Final = ("any", "schema", "coords", "mask", "memory")
_EXECUTED_NOTE: Final = "executed as a fixed script of its tool chain (see EXECUTED_AGENT)"


def _mode_rows(population: Population, prevalence: Prevalence, measured: Measured) -> list[Row]:
    rows = []
    workflows = len(population.workflows)
    for mode in MODES:
        in_mode = [m for m in measured.workflows if m.workflow.mode == mode]
        share = prevalence.orchestration_modes.shares.get(mode, 0.0) * 100
        runs = sum(m.runs for m in in_mode)
        executions = sum(m.executions for m in in_mode)
        warnings = sum(m.memory_warnings for m in in_mode)
        agents = {EXECUTED_AGENT[m.workflow.agent] for m in in_mode}
        note = _EXECUTED_NOTE if agents == {"scripted"} and mode != "static" else ""
        rows += [
            Row("C modes", f"{mode}: configured share", "input", "% of workflows", None, None,
                Interval(share, share, share), note="the paper's share, configured"),
            Row("C modes", f"{mode}: sampled share", "input", "% of workflows", len(in_mode), workflows,
                _percent(len(in_mode), workflows), note=note),
        ]  # fmt: skip
        for family in _MODE_FAMILIES:
            affected = sum(m.runs_with.get(family, 0) for m in in_mode)
            what = "a violation" if family == "any" else f"a {family} finding"
            rows.append(Row("C modes", f"{mode}: runs with {what}", "output", "% of runs", affected, runs,
                            _percent(affected, runs), family="" if family == "any" else family))  # fmt: skip
        rows.append(Row("C modes", f"{mode}: memory warnings", "output", "per 100 executions", warnings, executions,
                        poisson_interval(warnings, executions) if executions else None,
                        family="memory"))  # fmt: skip
    return rows


def _applies(prop: str, member: Member) -> bool:
    check = _APPLIES.get(prop)
    return check is None or check(member)


def _has(prop: str, member: Member) -> bool:
    check = _REALISED.get(prop)
    return check(member) if check is not None else bool(getattr(member.drawn, prop))


def _measured_row(prop: str, pool: list[Member], target: Interval, measured: Measured) -> Row:
    ids = RECOVERY_IDS.get(prop)
    row = f"{prop}: measured"
    if ids is None:
        return Row("D recovery", row, "output", "% of servers", None, None, None, recovered="not measurable",
                   note=_UNMEASURED_NOTE)  # fmt: skip
    flagged = {m.id for m in pool if measured.ids_of(m.id) & set(ids)}
    disagree = sum(_has(prop, m) != (m.id in flagged) for m in pool)
    inside = target.low - 1e-12 <= len(flagged) / len(pool) <= target.high + 1e-12
    note = (
        f"{'within' if inside else 'outside'} the Wilson interval of the realised share; "
        f"{disagree} server(s) measured otherwise than drawn"
    )
    return Row("D recovery", row, "output", "% of servers", len(flagged), len(pool), _percent(len(flagged), len(pool)),
               recovered="yes" if inside else "NO", note=note, family=ids[0].split(".")[0])  # fmt: skip


def _recovery_rows(population: Population, prevalence: Prevalence, measured: Measured) -> list[Row]:
    rows = []
    for prop in PROPERTIES:
        share = prevalence.share(prop) * 100
        pool = [m for m in population.members if _applies(prop, m)]
        if not pool:
            continue
        realised = sum(_has(prop, m) for m in pool)
        target = wilson_interval(realised, len(pool))
        rows += [
            Row(
                "D recovery", f"{prop}: configured", "input", "% of servers", None, None, Interval(share, share, share)
            ),
            Row("D recovery", f"{prop}: realised", "input", "% of servers", realised, len(pool), target.scaled(100)),
            _measured_row(prop, pool, target.scaled(1), measured),
        ]
    return rows


def audit_rows(population: Population, prevalence: Prevalence, measured: Measured) -> list[Row]:
    """Every row of the audit's tables A-C and the recovery check (D), in a fixed order."""
    return [
        *_family_rows(population, measured),
        *_security_rows(measured),
        *_mode_rows(population, prevalence, measured),
        *_recovery_rows(population, prevalence, measured),
    ]


def recovery_failed(rows: list[Row]) -> list[Row]:
    """The recovery rows whose measured rate missed its target."""
    return [row for row in rows if row.recovered == "NO"]
