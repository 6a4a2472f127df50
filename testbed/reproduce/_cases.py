"""``testbed reproduce cases``: the paper's five case studies (table D), each a family of experiment directories.

Each case runs into ``OUT/<case>/<variant>/`` (ordinary experiment directories, resumable); the table's
deterministic rows go to ``tables.csv`` (same seed, same bytes), the wall-clock ones to ``timings.csv``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from testbed._errors import TestbedError
from testbed.reproduce._calibration import (
    FULL_CALIBRATION_RUNS,
    QUICK_CALIBRATION_RUNS,
    Calibration,
    calibrate,
    calibration_dir,
)
from testbed.reproduce._cases_measure import case_rows, measure_variant, timing_rows
from testbed.reproduce._cases_model import CASES_DIR, CaseFamily, load_cases
from testbed.reproduce._cases_run import run_case
from testbed.reproduce._html import part_page
from testbed.reproduce._outputs import MANIFEST_FILE, csv_text, write_csv_and_parquet, write_tables
from testbed.reproduce._tables import Row, recovery_failed

__all__ = ["CASES_LEGEND", "DEFAULT_CASES_SEED", "CasesResult", "reproduce_cases"]

DEFAULT_CASES_SEED: Final = 2025
_FORMAT: Final = 1
CASES_LEGEND: Final = (
    "input: the case's size and the share of units that take each route (the affected route's share is the "
    "paper's finding, configured); counts are a seeded draw. output: measured by the validators over the "
    "recorded runs.",
    "A finding row is 'recovered' when the share of runs the validators flag lies in the Wilson interval of "
    "the realised share of runs with the mechanism: it measures the instrument, not the paper's systems.",
)
"""Printed under the terminal table."""
TIMINGS_NOTE: Final = ("Call latencies are wall clock: in timings.csv, not in this table (never byte-reproducible).",)


@dataclass(frozen=True)
class CasesResult:
    rows: list[Row]
    """Table D's deterministic rows (``tables.csv``)."""
    timings: list[Row]
    """Wall-clock rows (``timings.csv``): latency of first and repeated calls."""
    failed: list[Row]
    """Finding rows whose measured share missed the realised share's interval (empty: passed)."""
    files: list[Path]
    calibration: Calibration


def _cases_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.yaml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _manifest(seed: int, quick: bool, cases_hash: str) -> dict[str, Any]:
    return {
        "command": "testbed reproduce cases",
        "format_version": _FORMAT,
        "seed": seed,
        "quick": quick,
        "cases_hash": cases_hash,
        "rerun": f"testbed reproduce cases --seed {seed}{' --quick' if quick else ''} --out .",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _claim(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest, or check that the one there records the same seed, size and case files."""
    path = out_dir / MANIFEST_FILE
    identity = ("seed", "quick", "cases_hash")
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
            same = all(existing[key] == manifest[key] for key in identity)
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise TestbedError(f"{path}: cannot read the manifest: {error}") from None
        if not same:
            raise TestbedError(
                f"{out_dir}: holds the cases at seed {existing['seed']}, quick={existing['quick']}, case files "
                f"{existing['cases_hash']}; not this run's: choose another --out"
            )
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _run_one(
    case: CaseFamily, out_dir: Path, *, quick: bool, seed: int, on_variant: Callable[[str, int, int], None]
) -> tuple[list[Row], list[Row]]:
    directory = out_dir / case.case
    counts = asyncio.run(run_case(case, directory, runs=case.runs(quick), seed=seed, progress=on_variant))
    measures = [
        measure_variant(directory / name, name, case.variants[name].affected, case.finding.ids)
        for name, count in counts.items()
        if count > 0
    ]
    return case_rows(case, counts, measures), timing_rows(case, measures)


def reproduce_cases(
    out_dir: Path,
    *,
    quick: bool,
    seed: int = DEFAULT_CASES_SEED,
    progress: Callable[[int, int], None] | None = None,
    cases_dir: Path = CASES_DIR,
    calibration: Calibration | None = None,
    calibration_runs: int | None = None,
) -> CasesResult:
    """Run the case families of ``cases_dir`` into ``out_dir`` (resuming what is there) and write table D.

    Args:
        out_dir: the output directory; ``OUT/<case>/<variant>/`` are experiment directories.
        quick: each case at its ``quick_size`` instead of its (the paper's) ``size``.
        seed: the one seed; every variant's scenario seed and every allocation derive from it.
        progress: called with (variants done, variants planned) over all cases.
        cases_dir: the case files (default: ``scenarios/cases``).
        calibration: the validators' calibration to report beside the rows; when ``None``, measured at
            ``calibration_runs`` runs per fault kind (default: the quick or the full size) into
            :func:`calibration_dir` (a paper run's shared one when this is its part), resumable.

    Raises:
        TestbedError: a bad case file (one line naming it and the field), or ``out_dir`` holds another run.
    """
    cases = load_cases(cases_dir)
    if not cases:
        raise TestbedError(f"{cases_dir}: no case files (*.yaml)")
    out_dir.mkdir(parents=True, exist_ok=True)
    _claim(out_dir, _manifest(seed, quick, _cases_hash(cases_dir)))
    planned = sum(len(case.variants) for case in cases)
    done = 0

    def on_variant(case: str, variant: int, variants: int) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, planned)

    rows: list[Row] = []
    timings: list[Row] = []
    for case in cases:
        case_table, case_timings = _run_one(case, out_dir, quick=quick, seed=seed, on_variant=on_variant)
        rows += case_table
        timings += case_timings
    if calibration is None:
        runs = calibration_runs or (QUICK_CALIBRATION_RUNS if quick else FULL_CALIBRATION_RUNS)
        calibration = calibrate(calibration_dir(out_dir), runs=runs, seed=seed)
    files = write_tables(rows, out_dir, calibration)
    files += write_csv_and_parquet(csv_text(timings), out_dir / "timings.csv", ("count",))
    report = out_dir / "report.html"
    settings = {"seed": seed, "quick": quick, "calibration_runs_per_fault_kind": calibration.table.runs}
    report.write_text(
        part_page("Table D: the case studies", (*CASES_LEGEND, *TIMINGS_NOTE), rows, calibration, settings, out_dir),
        encoding="utf-8",
    )
    files += [report, *calibration.files]
    return CasesResult(rows, timings, recovery_failed(rows), files, calibration)
