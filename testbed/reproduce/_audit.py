"""``testbed reproduce audit``: sample (or read) a population, run its workflows, measure, tabulate."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from testbed._errors import TestbedError
from testbed.population import (
    Population,
    Prevalence,
    load_population,
    load_prevalence,
    population_hash,
    sample_population,
    write_population,
)
from testbed.reproduce._calibration import FULL_CALIBRATION_RUNS, Calibration, calibrate, calibration_dir
from testbed.reproduce._html import audit_page
from testbed.reproduce._measure import measure_population
from testbed.reproduce._outputs import check_manifest, manifest_document, write_manifest, write_tables
from testbed.reproduce._run import WORKFLOWS_DIR, Progress, run_workflows
from testbed.reproduce._tables import Row, audit_rows, recovery_failed

__all__ = [
    "AUDIT_PREVALENCE",
    "DEFAULT_SEED",
    "QUICK_MEMBERS",
    "QUICK_RUNS",
    "AuditResult",
    "reproduce_audit",
]

AUDIT_PREVALENCE: Final = Path(__file__).resolve().parents[2] / "scenarios" / "populations" / "audit-2025.yaml"
DEFAULT_SEED: Final = 2025
DEFAULT_RUNS: Final = 3
QUICK_MEMBERS: Final = 12
QUICK_RUNS: Final = 2


@dataclass(frozen=True)
class AuditResult:
    rows: list[Row]
    failed: list[Row]
    """Recovery rows whose measured rate missed the realised prevalence's interval."""
    recorded: int
    """Runs recorded by this process: the workflows' and the calibration's."""
    files: list[Path]
    calibration: Calibration


def _population(population_file: Path | None, prevalence: Prevalence, members: int | None, seed: int) -> Population:
    if population_file is not None:
        return load_population(population_file)
    return sample_population(prevalence, n=members or prevalence.population_size.value, seed=seed)


def reproduce_audit(
    out_dir: Path,
    *,
    population_file: Path | None = None,
    prevalence_file: Path = AUDIT_PREVALENCE,
    members: int | None = None,
    seed: int = DEFAULT_SEED,
    runs: int = DEFAULT_RUNS,
    progress: Progress | None = None,
    calibration_runs: int = FULL_CALIBRATION_RUNS,
    calibration: Calibration | None = None,
) -> AuditResult:
    """Run the audit into ``out_dir`` (resuming what an earlier process left there) and write its outputs.

    The report carries the validators' calibration: ``calibration`` when given, else measured at
    ``calibration_runs`` runs per fault kind into :func:`calibration_dir` (resumable too).

    Raises:
        TestbedError: bad input, or ``out_dir`` holds another population or run count.
    """
    if runs < 2:
        raise TestbedError(f"--runs-per-workflow: at least 2 (a store's growth shows across runs), not {runs}")
    prevalence_text = Path(prevalence_file).read_text(encoding="utf-8") if Path(prevalence_file).is_file() else ""
    prevalence = load_prevalence(prevalence_file)
    population = _population(population_file, prevalence, members, seed)
    if population.prevalence != prevalence.name:
        raise TestbedError(
            f"{population_file}: prevalence: sampled from {population.prevalence!r}, but --prevalence "
            f"{prevalence_file} is {prevalence.name!r}; pass the file it was sampled from"
        )
    manifest = manifest_document(
        seed=population.seed, runs=runs, population_hash=population_hash(population), prevalence_text=prevalence_text
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    check_manifest(out_dir, manifest)
    write_population(population, out_dir / "population.yaml")
    (out_dir / "prevalence.yaml").write_text(prevalence_text, encoding="utf-8")
    write_manifest(out_dir, manifest)
    recorded = asyncio.run(run_workflows(population, out_dir, runs=runs, progress=progress))
    if calibration is None:
        calibration = calibrate(calibration_dir(out_dir), runs=calibration_runs, seed=seed)
        recorded += calibration.recorded
    rows = audit_rows(population, prevalence, measure_population(population, out_dir / WORKFLOWS_DIR))
    files = write_tables(rows, out_dir, calibration)
    report = out_dir / "report.html"
    report.write_text(audit_page(rows, manifest, calibration, out_dir), encoding="utf-8")
    return AuditResult(
        rows=rows,
        failed=recovery_failed(rows),
        recorded=recorded,
        files=[*files, report, *calibration.files],
        calibration=calibration,
    )
