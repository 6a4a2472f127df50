"""What the validators find in a case family's recorded variants, and table D's rows from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from testbed.events import CallEvent, CallOutcomeKind
from testbed.metrics import Interval, wilson_interval
from testbed.reproduce._cases_model import CaseFamily
from testbed.reproduce._tables import Row
from testbed.validators import ValidationResult, validate_experiment

__all__ = ["TABLE", "VariantMeasure", "case_rows", "measure_variant", "timing_rows"]

TABLE: Final = "D cases"
PAPER_RETAINED_BYTES: Final = 1.3e9
"""Blender-RCP: "up to 1.3 GB state retained per session"."""
PAPER_PEAK_LATENCY_MS: Final = 2300.0
"""ParaView-MCP: "latency peaks over 2.3 s from repeated rendering without memoisation"."""


@dataclass(frozen=True)
class VariantMeasure:
    """One variant's recorded runs as the validators read them."""

    name: str
    affected: bool
    runs: int
    flagged: int
    """Runs with at least one of the finding's IDs."""
    occurrences: int
    retained_bytes: tuple[int, ...]
    """Per run: the largest ``retained_bytes`` a call of the run reported (runs that reported none: absent)."""
    first_calls_ms: tuple[float, ...]
    """Milliseconds of the first calls, in their run, of tools that were then called again alike."""
    repeated_calls_ms: tuple[float, ...]
    """Milliseconds of calls repeating an earlier call of their run (same server, tool and arguments)."""


def _calls(result: ValidationResult, run: int) -> list[CallEvent]:
    record = result.runs[run]
    return [event for event in record.events if isinstance(event, CallEvent)]


def _durations(calls: list[CallEvent]) -> tuple[list[float], list[float]]:
    """Milliseconds of the first and the repeated calls of every tool that the run called again alike."""
    seen: set[str] = set()
    repeated_tools = set()
    keyed = []
    for call in calls:
        if call.outcome is not CallOutcomeKind.OK:
            continue
        key = json.dumps([call.server, call.tool, call.arguments], sort_keys=True, default=str)
        keyed.append((call, key in seen))
        if key in seen:
            repeated_tools.add((call.server, call.tool))
        seen.add(key)
    first = [c.duration_s * 1000 for c, again in keyed if not again and (c.server, c.tool) in repeated_tools]
    repeated = [c.duration_s * 1000 for c, again in keyed if again]
    return first, repeated


def _retained(calls: list[CallEvent]) -> int | None:
    values = [
        call.payload["retained_bytes"]
        for call in calls
        if isinstance(call.payload, dict) and isinstance(call.payload.get("retained_bytes"), int)
    ]
    return max(values) if values else None


def measure_variant(directory: Path, name: str, affected: bool, ids: tuple[str, ...]) -> VariantMeasure:
    """Validate one variant's experiment directory with every registered validator."""
    result = validate_experiment(directory)
    found = [violation for violation in result.violations if violation.id in ids]
    retained: list[int] = []
    first: list[float] = []
    repeated: list[float] = []
    for index in range(len(result.runs)):
        calls = _calls(result, index)
        kept = _retained(calls)
        if kept is not None:
            retained.append(kept)
        new, again = _durations(calls)
        first += new
        repeated += again
    return VariantMeasure(
        name=name,
        affected=affected,
        runs=len(result.runs),
        flagged=len({violation.run for violation in found}),
        occurrences=len(found),
        retained_bytes=tuple(retained),
        first_calls_ms=tuple(first),
        repeated_calls_ms=tuple(repeated),
    )


def _percent(k: int, n: int) -> Interval | None:
    return wilson_interval(k, n).scaled(100) if n > 0 else None


def _point(value: float) -> Interval:
    return Interval(value, value, value)


def _size_row(case: CaseFamily, runs: int) -> Row:
    paper = _point(case.size) if case.size_from_paper else None
    note = "the paper's size" if case.size_from_paper else "the paper gives no size; this testbed's"
    if runs != case.size:
        note += f"; --quick runs {runs} of {case.size}"
    return Row(TABLE, f"{case.system}: size", "input", case.unit, runs, None, _point(runs), paper, note=note)


def _variant_rows(case: CaseFamily, counts: dict[str, int], runs: int) -> list[Row]:
    rows = []
    for name, variant in case.variants.items():
        source = "the paper's finding" if variant.affected and case.finding.paper is not None else "this testbed"
        rows.append(
            Row(TABLE, f"{case.system}: {name} units", "input", f"% of {case.unit}", counts[name], runs,
                _point(variant.share * 100),
                note=f"share configured from {source}; count: seeded draw per unit"
                + ("; has the mechanism" if variant.affected else ""))
        )  # fmt: skip
    return rows


def _finding_rows(case: CaseFamily, measures: list[VariantMeasure]) -> list[Row]:
    runs = sum(m.runs for m in measures)
    expected = sum(m.runs for m in measures if m.affected)
    flagged = sum(m.flagged for m in measures)
    hits = sum(m.flagged for m in measures if m.affected)
    clean = runs - expected
    false_flags = flagged - hits
    target = wilson_interval(expected, runs) if runs else None
    inside = target is not None and target.low - 1e-12 <= flagged / runs <= target.high + 1e-12
    ids = ", ".join(case.finding.ids)
    family = case.finding.ids[0].split(".")[0]
    paper = _point(case.finding.paper) if case.finding.paper is not None else None
    note = (
        f"runs with {ids}: {hits}/{expected} with the mechanism caught, {false_flags}/{clean} without it flagged; "
        f"{'within' if inside else 'outside'} the Wilson interval of the realised share"
    )
    return [
        Row(TABLE, f"{case.system}: {case.finding.what}", "output", f"% of {case.unit}", flagged, runs,
            _percent(flagged, runs), paper, recovered="yes" if inside else "NO", note=note, family=family),
        Row(TABLE, f"{case.system}: {case.finding.what}, occurrences", "output", f"per {case.unit[:-1]}",
            sum(m.occurrences for m in measures), runs,
            _point(sum(m.occurrences for m in measures) / runs) if runs else None, family=family),
        Row(TABLE, f"{case.system}: false flags", "output", f"% of {case.unit} without the mechanism", false_flags,
            clean, _percent(false_flags, clean), family=family),
    ]  # fmt: skip


def _retained_rows(case: CaseFamily, measures: list[VariantMeasure]) -> list[Row]:
    sessions = [value for m in measures for value in m.retained_bytes]
    if not sessions:
        return [Row(TABLE, f"{case.system}: state retained per session", "output", "bytes", None, None, None,
                    note="no session reported its retained state")]  # fmt: skip
    return [
        Row(TABLE, f"{case.system}: state retained per session, largest", "output", "bytes", len(sessions),
            None, _point(max(sessions)), _point(PAPER_RETAINED_BYTES),
            note="what the server reports its session scene holds (linked and orphaned datablocks); "
            "our scenes are small synthetic images, the paper's up to 1.3 GB"),
        Row(TABLE, f"{case.system}: state retained per session, mean", "output", "bytes", len(sessions), None,
            _point(sum(sessions) / len(sessions))),
    ]  # fmt: skip


def case_rows(case: CaseFamily, counts: dict[str, int], measures: list[VariantMeasure]) -> list[Row]:
    """Table D's deterministic rows for one case: size and variants (inputs), the finding and extras (outputs)."""
    runs = sum(counts.values())
    rows = [_size_row(case, runs), *_variant_rows(case, counts, runs), *_finding_rows(case, measures)]
    if "retained_bytes" in case.extras:
        rows += _retained_rows(case, measures)
    return rows


def timing_rows(case: CaseFamily, measures: list[VariantMeasure]) -> list[Row]:
    """Wall-clock rows (``latency`` extra): first and repeated calls per variant; never byte-reproducible."""
    if "latency" not in case.extras:
        return []
    rows = []
    for m in measures:
        for what, durations in (("first calls", m.first_calls_ms), ("repeated calls", m.repeated_calls_ms)):
            if not durations:
                continue
            peak = max(durations)
            rows += [
                Row(TABLE, f"{case.system}: {m.name}, {what}, peak", "output", "ms", len(durations), None,
                    _point(peak), _point(PAPER_PEAK_LATENCY_MS) if not m.name.startswith("with_") else None,
                    note="recorded call durations (wall clock)"),
                Row(TABLE, f"{case.system}: {m.name}, {what}, mean", "output", "ms", len(durations), None,
                    _point(sum(durations) / len(durations))),
            ]  # fmt: skip
    return rows
