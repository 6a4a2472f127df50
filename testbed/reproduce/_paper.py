"""``testbed reproduce paper``: the calibration, the audit, the case studies and the security tables in one directory.

The parts are a small table (:data:`PARTS`): each runs into ``OUT/<name>/`` and resumes there; the cases and
security parts are looked up on :mod:`testbed.reproduce` when they run, so a build without one still reproduces
the rest and says so. ``manifest.json`` records the seed and sizes; ``--manifest`` re-runs from it.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from testbed._errors import TestbedError
from testbed._seeding import derive_int_seed
from testbed._versions import package_versions
from testbed.reproduce._audit import (
    AUDIT_PREVALENCE,
    DEFAULT_RUNS,
    DEFAULT_SEED,
    QUICK_MEMBERS,
    QUICK_RUNS,
    reproduce_audit,
)
from testbed.reproduce._calibration import (
    CALIBRATION_DIR,
    FULL_CALIBRATION_RUNS,
    QUICK_CALIBRATION_RUNS,
    Calibration,
    calibrate,
    calibration_csv,
)
from testbed.reproduce._cases_model import CASES_DIR, load_cases
from testbed.reproduce._html import Figure, PartSection, paper_page
from testbed.reproduce._outputs import COLUMNS, VERSIONED_PACKAGES, record_cells, write_csv_and_parquet
from testbed.reproduce._plots import calibration_png, comparison_png
from testbed.reproduce._security import FULL_POPULATION_RUNS, FULL_RUNS, QUICK_RUNS_SECURITY
from testbed.reproduce._tables import Row

__all__ = [
    "FULL_SIZES",
    "PAPER_COMMAND",
    "PARTS",
    "QUICK_SECURITY_AGENTS",
    "QUICK_SIZES",
    "PaperResult",
    "PaperSizes",
    "Part",
    "load_paper_manifest",
    "reproduce_paper",
]

PAPER_COMMAND: Final = "reproduce paper"
_MANIFEST: Final = "manifest.json"
_FORMAT: Final = 1

PartProgress = Callable[[str, int, int], None]
"""Called with (part, done, planned)."""


@dataclass(frozen=True)
class PaperSizes:
    """How large a paper run is: ``quick`` for the cases and security parts, the rest explicit."""

    quick: bool
    members: int | None
    """Servers the audit samples (``None``: the prevalence file's population size)."""
    runs_per_workflow: int
    calibration_runs: int
    """Runs per fault kind in the calibration."""


QUICK_SIZES: Final = PaperSizes(True, QUICK_MEMBERS, QUICK_RUNS, QUICK_CALIBRATION_RUNS)
FULL_SIZES: Final = PaperSizes(False, None, DEFAULT_RUNS, FULL_CALIBRATION_RUNS)
QUICK_SECURITY_AGENTS: Final = ("scripted", "retrieval")
"""The attack suite's agents in a quick run. The embedded LLM takes about 10 s per run (two calls of about 5 s,
one decoding thread): its 16 cells took 5.6 of a quick run's 6 minutes, so it runs in the full run only (the
quick report says so)."""


class PartResult(Protocol):
    """What a part returns: its rows (input/output marked, beside the paper's) and the checks that failed."""

    @property
    def rows(self) -> list[Row]: ...

    @property
    def failed(self) -> list[Row]: ...


PartRun = Callable[[Path, PaperSizes, int, Calibration, Callable[[int, int], None] | None], PartResult]


@dataclass(frozen=True)
class Part:
    name: str
    title: str
    resolve: Callable[[], PartRun | None]
    """The part's runner, or ``None`` when this build has none."""
    sized: Callable[[PaperSizes], str] = lambda sizes: ""
    """How large the part runs at these sizes, in words (the report marks every quick-sized part with it)."""


def _audit(
    out_dir: Path, sizes: PaperSizes, seed: int, calibration: Calibration, progress: Callable[[int, int], None] | None
) -> PartResult:
    return reproduce_audit(
        out_dir,
        members=sizes.members,
        seed=seed,
        runs=sizes.runs_per_workflow,
        progress=progress,
        calibration=calibration,
    )


def _published(function: str, **quick_options: Any) -> Callable[[], PartRun | None]:
    """A part run by ``testbed.reproduce.<function>(out_dir, *, quick, seed, progress, calibration)``, if this build
    has it; ``quick_options`` are passed too when the run is quick."""

    def resolve() -> PartRun | None:
        found = getattr(importlib.import_module("testbed.reproduce"), function, None)
        if found is None:
            return None

        def run(
            out_dir: Path,
            sizes: PaperSizes,
            seed: int,
            calibration: Calibration,
            progress: Callable[[int, int], None] | None,
        ) -> PartResult:
            options = quick_options if sizes.quick else {}
            result: PartResult = found(
                out_dir, quick=sizes.quick, seed=seed, progress=progress, calibration=calibration, **options
            )
            return result

        return run

    return resolve


def _audit_size(sizes: PaperSizes) -> str:
    members = sizes.members or f"the population size of {AUDIT_PREVALENCE.name}:"
    return f"{members} servers sampled, {sizes.runs_per_workflow} runs per workflow"


def _cases_size(sizes: PaperSizes) -> str:
    try:
        cases = load_cases(CASES_DIR)
    except TestbedError as error:
        return str(error)
    return ", ".join(f"{case.system} {case.runs(sizes.quick)} of {case.size}" for case in cases)


def _security_size(sizes: PaperSizes) -> str:
    if not sizes.quick:
        return f"{FULL_RUNS} runs per cell, every agent; the full population at {FULL_POPULATION_RUNS} runs"
    return (
        f"{QUICK_RUNS_SECURITY} runs per cell, agents {' and '.join(QUICK_SECURITY_AGENTS)} only (the embedded LLM "
        f"runs in the full run); a {QUICK_MEMBERS}-server population at {QUICK_RUNS_SECURITY} runs"
    )


PARTS: Final = (
    Part(
        "audit",
        "Tables A-C: the audit over a sampled population, and the recovery check",
        lambda: _audit,
        _audit_size,
    ),
    Part("cases", "Table D: the case studies", _published("reproduce_cases"), _cases_size),
    Part(
        "security",
        "Security: the attack table and the security subset",
        _published("reproduce_security", agents=QUICK_SECURITY_AGENTS),
        _security_size,
    ),
)
"""The paper's parts, in report order; the calibration runs before them and is shared by all."""


@dataclass
class PaperResult:
    directory: Path
    sections: list[PartSection]
    calibration: Calibration
    failed: list[tuple[str, Row]]
    """(part, row) for every check that failed."""
    errors: list[str]
    """Parts that stopped with an error (one line each)."""
    recorded: int
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors


def _seeds(seed: int) -> dict[str, int]:
    return {"seed": seed, "calibration_scenario_seed": derive_int_seed(seed, "calibration")}


def _manifest(seed: int, sizes: PaperSizes) -> dict[str, Any]:
    return {
        "command": PAPER_COMMAND,
        "format_version": _FORMAT,
        "seeds": _seeds(seed),
        "sizes": asdict(sizes),
        "parts": [part.name for part in PARTS],
        "rerun": f"testbed reproduce paper --manifest {_MANIFEST} --out .",
        "versions": package_versions(VERSIONED_PACKAGES),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def load_paper_manifest(path: Path) -> tuple[int, PaperSizes]:
    """The seed and sizes a paper manifest records.

    Raises:
        TestbedError: the file cannot be read or is not a paper manifest, naming the field.
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TestbedError(f"{path}: cannot read the manifest: {error}") from None
    if not isinstance(document, dict) or document.get("command") != PAPER_COMMAND:
        raise TestbedError(f"{path}: command: not a `testbed {PAPER_COMMAND}` manifest")
    try:
        seed = document["seeds"]["seed"]
        sizes = PaperSizes(**document["sizes"])
    except (KeyError, TypeError) as error:
        raise TestbedError(f"{path}: seeds/sizes: {error}") from None
    if not isinstance(seed, int) or seed < 0:
        raise TestbedError(f"{path}: seeds.seed: a non-negative integer, not {seed!r}")
    return seed, sizes


def _check_directory(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse a directory that a paper run of another seed or size (or something else) started."""
    path = out_dir / _MANIFEST
    if not path.exists():
        return
    seed, sizes = load_paper_manifest(path)
    if (seed, asdict(sizes)) != (manifest["seeds"]["seed"], manifest["sizes"]):
        raise TestbedError(
            f"{out_dir}: holds a paper run at seed {seed} with {asdict(sizes)}, not this one; choose another --out"
        )


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = out_dir / _MANIFEST
    if not path.exists():  # the first run's record stands (its created_at included)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    return path


def _tables_csv(sections: list[PartSection], calibration: Calibration, sizes: PaperSizes) -> str:
    """Every part's rows, each marked with the sizes it ran at (``quick`` rows are smoke-test sizes, never the
    paper's)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("part", "sizes", *COLUMNS))
    sized = "quick" if sizes.quick else "full"
    for section in sections:
        writer.writerows((section.name, sized, *record_cells(row, calibration)) for row in section.rows)
    return buffer.getvalue()


def _settings(now: dict[str, Any], started: dict[str, Any]) -> dict[str, Any]:
    """The seeds, sizes and versions the report states: today's versions, and the first run's where they differ."""
    settings = {key: now[key] for key in ("seeds", "sizes", "versions", "rerun")}
    if started.get("versions") != now["versions"]:
        settings["versions_when_started"] = started.get("versions")
    return settings


def _figure(png: bytes | None, caption: str) -> Figure | None:
    return None if png is None else Figure(caption, png)


def _write_figures(out_dir: Path, figures: dict[str, Figure | None]) -> list[Path]:
    directory = out_dir / "plots"
    directory.mkdir(exist_ok=True)
    written = []
    for name, figure in figures.items():
        if figure is not None:
            path = directory / f"{name}.png"
            path.write_bytes(figure.png)
            written.append(path)
    return written


def _run_part(
    part: Part, out_dir: Path, sizes: PaperSizes, seed: int, calibration: Calibration, progress: PartProgress | None
) -> tuple[PartSection, PartResult | None]:
    runner = part.resolve()
    if runner is None:
        return PartSection(part.name, part.title, "not run: this build has no such part yet"), None
    quick = f"quick sizes: {part.sized(sizes)}" if sizes.quick else ""

    def report(done: int, planned: int) -> None:
        if progress is not None:
            progress(part.name, done, planned)

    try:
        result = runner(out_dir / part.name, sizes, seed, calibration, report)
    except TestbedError as error:
        return PartSection(part.name, part.title, f"stopped: {error}", quick=quick), None
    figure = _figure(comparison_png(result.rows, f"{part.name}: ours beside the paper's"), f"{part.title}: ours "
                     "(measured) beside the paper's published values")  # fmt: skip
    return PartSection(part.name, part.title, "ran", tuple(result.rows), figure, quick), result


def reproduce_paper(
    out_dir: Path,
    *,
    seed: int = DEFAULT_SEED,
    sizes: PaperSizes = FULL_SIZES,
    progress: PartProgress | None = None,
    calibration_progress: Callable[[str], None] | None = None,
) -> PaperResult:
    """Run the calibration and every part into ``out_dir`` (resuming an interrupted run) and write the report.

    Writes ``report.html``, ``tables.csv``/``.parquet`` (every part's rows), ``calibration.csv``/``.parquet``,
    ``plots/`` and ``manifest.json``. A part that stops with a :class:`TestbedError` is reported, not fatal.

    Raises:
        TestbedError: ``out_dir`` holds a paper run of another seed or size.
    """
    manifest = _manifest(seed, sizes)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_directory(out_dir, manifest)
    manifest_path = _write_manifest(out_dir, manifest)  # before the parts: they find the shared calibration by it
    calibration = calibrate(
        out_dir / CALIBRATION_DIR, runs=sizes.calibration_runs, seed=seed, progress=calibration_progress
    )
    sections: list[PartSection] = []
    failed: list[tuple[str, Row]] = []
    errors: list[str] = []
    recorded = calibration.recorded
    for part in PARTS:
        section, result = _run_part(part, out_dir, sizes, seed, calibration, progress)
        sections.append(section)
        if section.status.startswith("stopped"):
            errors.append(f"{part.name}: {section.status}")
        if result is not None:
            failed += [(part.name, row) for row in result.failed]
            recorded += int(getattr(result, "recorded", 0))
    calibration_figure = _figure(calibration_png(calibration.table), "validator calibration per fault kind")
    files = [
        *write_csv_and_parquet(_tables_csv(sections, calibration, sizes), out_dir / "tables.csv", ("count",)),
        *write_csv_and_parquet(calibration_csv(calibration.table), out_dir / "calibration.csv"),
        *_write_figures(out_dir, {s.name: s.figure for s in sections} | {"calibration": calibration_figure}),
    ]
    report = out_dir / "report.html"
    settings = _settings(manifest, json.loads(manifest_path.read_text(encoding="utf-8")))
    report.write_text(paper_page(sections, calibration, calibration_figure, settings, out_dir), encoding="utf-8")
    files += [report, manifest_path]
    return PaperResult(out_dir, sections, calibration, failed, errors, recorded, files)
