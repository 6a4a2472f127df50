"""The audit's outputs: a rich table, ``tables.csv`` and Parquet, and ``manifest.json`` (``report.html``: _html)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any, Final

from rich.table import Table

from testbed._errors import TestbedError
from testbed._versions import package_versions
from testbed.metrics import Interval
from testbed.reproduce._calibration import Calibration
from testbed.reproduce._tables import Row

__all__ = [
    "COLUMNS",
    "HEADERS",
    "LEGEND",
    "MANIFEST_FILE",
    "VERSIONED_PACKAGES",
    "check_manifest",
    "csv_text",
    "display_cells",
    "record_cells",
    "rich_table",
    "write_manifest",
    "write_tables",
]

MANIFEST_FILE: Final = "manifest.json"
MANIFEST_FORMAT: Final = 1
COLUMNS: Final = (
    "table", "row", "marking", "unit", "count", "total", "value", "low", "high",
    "paper", "paper_low", "paper_high", "recovered", "note", "family", "calibration",
)  # fmt: skip
VERSIONED_PACKAGES: Final = ("mcp-vision-testbed", "mcp", "numpy", "scipy", "pandas", "pyarrow", "matplotlib")
_PRECISION: Final = 6


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.{_PRECISION}g}"


def _bounds(interval: Interval | None) -> tuple[str, str, str]:
    if interval is None:
        return "", "", ""
    return _number(interval.estimate), _number(interval.low), _number(interval.high)


def calibration_text(row: Row, calibration: Calibration | None) -> str:
    """What the calibration says about the validators behind ``row``; empty for inputs, rows that name no validator
    family, or without a calibration."""
    if calibration is None or row.marking == "input" or not row.family:
        return ""
    return calibration.family_link(row.family)


def record_cells(row: Row, calibration: Calibration | None) -> tuple[str, ...]:
    """A row's CSV cells, in the order of :data:`COLUMNS`."""
    total = "" if row.total is None else _number(row.total)
    count = "" if row.count is None else str(row.count)
    return (row.table, row.row, row.marking, row.unit, count, total, *_bounds(row.value), *_bounds(row.paper),
            row.recovered, row.note, row.family, calibration_text(row, calibration))  # fmt: skip


def csv_text(rows: list[Row], calibration: Calibration | None = None) -> str:
    """The tables as CSV, every number at fixed precision (same rows, same bytes), each output beside its
    validator family's calibration when one is given."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(record_cells(row, calibration) for row in rows)
    return buffer.getvalue()


def write_csv_and_parquet(text: str, path: Path, integer_columns: tuple[str, ...] = ()) -> list[Path]:
    """Write CSV ``text`` to ``path`` and the same table to ``path`` with the suffix ``.parquet`` (always both)."""
    import pandas as pd

    path.write_text(text, encoding="utf-8")
    dtypes = dict.fromkeys(integer_columns, "Int64")
    frame = pd.read_csv(io.StringIO(text), dtype=dtypes, keep_default_na=False, na_values=[""])
    parquet_path = path.with_suffix(".parquet")
    frame.to_parquet(parquet_path, index=False)
    return [path, parquet_path]


def write_tables(rows: list[Row], out_dir: Path, calibration: Calibration | None = None) -> list[Path]:
    """Write ``tables.csv`` and ``tables.parquet``; returns the files written."""
    return write_csv_and_parquet(csv_text(rows, calibration), out_dir / "tables.csv", ("count",))


def _cell(interval: Interval | None, unit: str) -> str:
    if interval is None:
        return "–"
    if interval.low == interval.high == interval.estimate:
        return f"{interval.estimate:.1f}"
    return f"{interval.estimate:.1f} [{interval.low:.1f}, {interval.high:.1f}]"


def display_cells(row: Row) -> tuple[str, ...]:
    """A row's cells for people, in the order of :data:`HEADERS`."""
    counts = f"{row.count}/{row.total:g}" if row.count is not None and row.total is not None else ""
    return (row.table, row.row, row.marking, _cell(row.value, row.unit), counts, row.unit,
            _cell(row.paper, row.unit), row.recovered)  # fmt: skip


LEGEND: Final = (
    "input: configured from the paper or sampled from it; never a reproduction. output: measured by the "
    "validators over the recorded runs.",
    "Intervals: Wilson 95 % for shares of servers, edges, workflows and runs; exact Poisson for rates per 100 "
    "executions. A server is flagged for a family when a run it took part in has a finding attributed to it.",
    "Recovery: each measurable property's measured share must lie in the Wilson interval of its realised share "
    "in the sampled population (the instrument's bias); the configured share is shown beside it.",
    "Retrieval and dynamic workflows run their tool chain as a fixed script here (their agents' choices are "
    "not what a population measures); multi-agent workflows run with the multi agent.",
)
"""Printed under the terminal table and at the top of the HTML report."""

HEADERS: Final = ("table", "figure", "input/output", "ours", "count", "unit", "paper", "recovered")


def rich_table(rows: list[Row], title: str) -> Table:
    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header)
    for row in rows:
        style = "red" if row.recovered == "NO" else ("dim" if row.marking == "input" else None)
        table.add_row(*display_cells(row), style=style)
    return table


def _identity(manifest: dict[str, Any]) -> tuple[object, ...]:
    return manifest["population_hash"], manifest["runs_per_workflow"]


def manifest_document(*, seed: int, runs: int, population_hash: str, prevalence_text: str) -> dict[str, Any]:
    return {
        "format_version": MANIFEST_FORMAT,
        "seed": seed,
        "runs_per_workflow": runs,
        "population_hash": population_hash,
        "population_file": "population.yaml",
        "prevalence_text": prevalence_text,
        "rerun": (
            "testbed reproduce audit --population population.yaml --prevalence prevalence.yaml "
            f"--runs-per-workflow {runs} --out ."
        ),
        "versions": package_versions(VERSIONED_PACKAGES),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def check_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse an output directory that records another population or run count.

    Raises:
        TestbedError: it does, or its manifest cannot be read.
    """
    path = out_dir / MANIFEST_FILE
    if not path.exists():
        return
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
        same = _identity(existing) == _identity(manifest)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise TestbedError(f"{path}: cannot read the manifest: {error}") from None
    if not same:
        raise TestbedError(
            f"{out_dir}: holds population {existing['population_hash']} at {existing['runs_per_workflow']} runs per "
            "workflow, not this one; choose another --out"
        )


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    path = out_dir / MANIFEST_FILE
    if path.exists():
        return  # the first run's record stands (its created_at included)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
