"""``testbed reproduce security``: the attack table per vector and agent, and the audit's table B analogue.

Every attack scenario of ``scenarios/security/attacks`` runs with every agent kind, once under attack
and once as its no-attack twin (``attack.clean``), each an ordinary experiment directory
``OUT/attacks/<scenario>/<agent>/<attack|clean>/`` (resumable: a finished one is kept, an unfinished one
continues). Canaries are placed beside each sandbox and checked by hash afterwards. Then a population
sampled from the audit's prevalences runs under ``OUT/population/`` and its security subset gives table B.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import yaml

from testbed._errors import TestbedError
from testbed.metrics import wilson_interval
from testbed.orchestrator import ExperimentFinishedError, run_experiment
from testbed.population import load_prevalence, sample_population, write_population
from testbed.reproduce._audit import AUDIT_PREVALENCE, QUICK_MEMBERS
from testbed.reproduce._calibration import (
    FULL_CALIBRATION_RUNS,
    QUICK_CALIBRATION_RUNS,
    Calibration,
    calibrate,
    calibration_dir,
)
from testbed.reproduce._html import part_page
from testbed.reproduce._measure import Measured, measure_population
from testbed.reproduce._outputs import LEGEND, write_tables
from testbed.reproduce._run import SCENARIO_FILE, WORKFLOWS_DIR, run_workflows
from testbed.reproduce._security_measure import CellMeasure, measure_cell
from testbed.reproduce._security_suite import ATTACKS_DIR, SuiteEntry, agent_sections, load_suite
from testbed.reproduce._tables import Row, audit_rows
from testbed.scenario import load_scenario_text
from testbed.security import AttackSpec, place_canaries, without_attack

__all__ = ["DEFAULT_SECURITY_SEED", "FULL_RUNS", "QUICK_RUNS_SECURITY", "SecurityResult", "reproduce_security"]

DEFAULT_SECURITY_SEED: Final = 2025
QUICK_RUNS_SECURITY: Final = 2
FULL_RUNS: Final = 10
FULL_POPULATION_RUNS: Final = 3
ATTACKS_SUBDIR: Final = "attacks"
POPULATION_SUBDIR: Final = "population"
MANIFEST: Final = "security-manifest.json"
CONDITIONS: Final = ("attack", "clean")
TABLE: Final = "E attacks"

Progress = Callable[[int, int], None]
"""Called with (experiments done, experiments planned)."""


@dataclass(frozen=True)
class SecurityResult:
    """What ``reproduce_security`` measured and wrote."""

    rows: list[Row]
    """The attack table (``E attacks``), then table B over the population's security subset."""
    files: list[Path]
    failed: list[Row] = field(default_factory=list)
    """Rows whose check failed: a canary changed, or a cell that could not run."""


@dataclass(frozen=True)
class _Cell:
    entry: SuiteEntry
    agent: str
    condition: str
    document: dict[str, Any]

    def directory(self, out_dir: Path) -> Path:
        return out_dir / ATTACKS_SUBDIR / self.entry.name / self.agent / self.condition


def _cells(suite: list[SuiteEntry], *, runs: int, seed: int, agents: Collection[str] | None) -> list[_Cell]:
    cells = []
    for entry in suite:
        for agent, section in agent_sections(entry).items():
            if agents is not None and agent not in agents:
                continue
            attacked = {**entry.document, "agent": section, "runs": runs, "seed": seed}
            for condition in CONDITIONS:
                document = attacked if condition == "attack" else without_attack(attacked)
                cells.append(_Cell(entry, agent, condition, document))
    return cells


def _check_manifest(out_dir: Path, identity: dict[str, Any]) -> None:
    path = out_dir / MANIFEST
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise TestbedError(f"{path}: cannot read the manifest: {error}") from None
        if existing != identity:
            raise TestbedError(f"{out_dir}: holds a security run with {existing}, not {identity}; choose another --out")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


async def _run_cell(cell: _Cell, directory: Path) -> list[str]:
    """Run one cell (continuing it if unfinished); returns the canaries it changed (``path: what``)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cell.document, sort_keys=False)
    path = directory / SCENARIO_FILE
    path.write_text(text, encoding="utf-8")
    scenario = load_scenario_text(text, source=str(path), base_dir=directory)
    attack = AttackSpec.model_validate(cell.entry.document["attack"])
    canaries = place_canaries(directory, directory / attack.sandbox)
    with contextlib.suppress(ExperimentFinishedError):  # finished earlier: kept as it is
        await run_experiment(scenario, out_dir=directory, scenario_path=path, transport="inprocess", device="cpu")
    return canaries.changed()


def _percent_row(name: str, unit: str, count: int, total: int, note: str = "", family: str = "") -> Row:
    value = wilson_interval(count, total).scaled(100) if total else None
    return Row(TABLE, name, "output", unit, count, total, value, note=note, family=family)


def _attack_rows(entry: SuiteEntry, agent: str, attacked: CellMeasure, clean: CellMeasure) -> list[Row]:
    prefix = f"{entry.vector} / {agent}"
    return [
        _percent_row(
            f"{prefix}: utility", "% of runs", clean.passed, clean.runs, "no-attack twin, task vs ground truth"
        ),
        _percent_row(f"{prefix}: utility under attack", "% of runs", attacked.passed, attacked.runs),
        _percent_row(
            f"{prefix}: attack success",
            "% of runs",
            attacked.attacked,
            attacked.runs,
            "security.attack_succeeded, judged from the trace",
            family="security",
        ),
        _percent_row(
            f"{prefix}: attacks flagged",
            "% of attacks",
            attacked.flagged,
            attacked.attacked,
            "any other validator finding in the run",
        ),
        _percent_row(
            f"{prefix}: attacks flagged at the call",
            "% of attacks",
            attacked.flagged_at_attack,
            attacked.attacked,
            "another finding whose evidence is the call that met the goal",
        ),
    ]


def _security_subset(population_measured: Measured, subset: set[str]) -> Measured:
    return Measured([m for m in population_measured.workflows if subset & set(m.workflow.members)])


def _population_rows(out_dir: Path, *, quick: bool, seed: int, progress: Progress | None) -> list[Row]:
    prevalence = load_prevalence(AUDIT_PREVALENCE)
    members = QUICK_MEMBERS if quick else prevalence.population_size.value
    population = sample_population(prevalence, n=members, seed=seed)
    directory = out_dir / POPULATION_SUBDIR
    directory.mkdir(parents=True, exist_ok=True)
    write_population(population, directory / "population.yaml")
    runs = QUICK_RUNS_SECURITY if quick else FULL_POPULATION_RUNS
    asyncio.run(run_workflows(population, directory, runs=runs, progress=progress))
    subset = {member.id for member in population.members if member.security_subset}
    measured = _security_subset(measure_population(population, directory / WORKFLOWS_DIR), subset)
    note = f"over the {len(measured.workflows)} workflows with a security-subset server (population {seed})"
    bridging = sum(member.drawn.bridging for member in population.members if member.id in subset)
    perm_note = (
        f"perm.* on the server itself: a bridging helper called beyond the workflow's grants; {bridging} of "
        f"{len(subset)} drawn bridging (input: out-of-band bridging {prevalence.bridging.share:.0%}): nearness to "
        "the paper's figure is configured; the row measures how many of them the validators catch"
    )
    return [
        replace(row, note="; ".join(part for part in (row.note, perm_note if row.row == "perm" else "", note) if part))
        for row in audit_rows(population, prevalence, measured)
        if row.table == "B security"
    ]


_FIGURES: Final = (
    "utility",
    "utility under attack",
    "attack success",
    "attacks flagged",
    "attacks flagged at the call",
)


def _markdown(rows: list[Row]) -> str:
    def cell(row: Row | None) -> str:
        if row is None or row.value is None:
            return "–"
        return f"{row.value.estimate:.0f} [{row.value.low:.0f}, {row.value.high:.0f}] ({row.count}/{row.total:g})"

    by_name = {row.row: row for row in rows if row.table == TABLE}
    pairs = sorted({name.split(":")[0] for name in by_name if " / " in name})
    lines = [
        "| vector | agent | utility | utility under attack | attack success | flagged | flagged at the call |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair in pairs:
        vector, agent = pair.split(" / ")
        figures = [by_name.get(f"{pair}: {what}") for what in _FIGURES]
        lines.append(f"| {vector} | {agent} | " + " | ".join(cell(row) for row in figures) + " |")
    agents = sorted({pair.split(" / ")[1] for pair in pairs})
    vectors = sorted({pair.split(" / ")[0] for pair in pairs})
    lines += ["", "Attack success rate (%, Wilson 95 %), MCPSecBench layout:", "",
              "| vector | " + " | ".join(agents) + " |", "|---|" + "---|" * len(agents)]  # fmt: skip
    for vector in vectors:
        lines.append(
            f"| {vector} | " + " | ".join(cell(by_name.get(f"{vector} / {a}: attack success")) for a in agents) + " |"
        )
    lines += ["", "| table B (security subset) | input/output | ours | paper |", "|---|---|---|---|"]
    for row in rows:
        if row.table == "B security":
            paper = (
                "–" if row.paper is None else f"{row.paper.estimate:.1f} [{row.paper.low:.1f}, {row.paper.high:.1f}]"
            )
            lines.append(f"| {row.row} ({row.unit}) | {row.marking} | {cell(row)} | {paper} |")
    return "\n".join(lines) + "\n"


def reproduce_security(
    out_dir: Path,
    *,
    quick: bool,
    seed: int,
    progress: Progress | None = None,
    suite_dir: Path = ATTACKS_DIR,
    agents: Collection[str] | None = None,
    calibration: Calibration | None = None,
    calibration_runs: int | None = None,
) -> SecurityResult:
    """Run the attack suite and the population's security subset into ``out_dir`` and write the tables.

    Resumable: rerunning with the same ``out_dir``, ``quick`` and ``seed`` keeps what is recorded and continues.

    Args:
        out_dir: where everything is recorded and written.
        quick: 2 runs per cell and a 12-server population (else 10 runs per cell and the full population).
        seed: the seed of every cell and of the population's sampling.
        progress: called with (experiments done, experiments planned) after each attack cell.
        suite_dir: the attack scenarios (default: ``scenarios/security/attacks``).
        agents: run only these agent labels (``scripted``, ``retrieval``, ``llm``, ``llm-openai``); default: all.
        calibration: the validators' calibration reported beside the rows; when ``None``, measured at
            ``calibration_runs`` runs per fault kind (default: the quick or the full size) into :func:`calibration_dir`.

    Raises:
        TestbedError: ``out_dir`` holds a run with another seed or size, or the suite cannot be read.
    """
    runs = QUICK_RUNS_SECURITY if quick else FULL_RUNS
    _check_manifest(out_dir, {"seed": seed, "quick": quick, "runs": runs})
    suite = load_suite(suite_dir)
    cells = _cells(suite, runs=runs, seed=seed, agents=agents)
    measures: dict[tuple[str, str, str], CellMeasure] = {}
    failed: list[Row] = []
    for done, cell in enumerate(cells):
        directory = cell.directory(out_dir)
        label = f"{cell.entry.name} / {cell.agent} / {cell.condition}"
        try:
            changed = asyncio.run(_run_cell(cell, directory))
            measures[(cell.entry.name, cell.agent, cell.condition)] = measure_cell(directory)
        except TestbedError as error:
            failed.append(Row(TABLE, f"{label}: could not run", "output", "experiment", None, None, None,
                              recovered="NO", note=str(error)))  # fmt: skip
            changed = []
        if changed:
            failed.append(Row(TABLE, f"{label}: canaries", "output", "files", len(changed), None, None,
                              recovered="NO", note="; ".join(changed)))  # fmt: skip
        if progress is not None:
            progress(done + 1, len(cells))
    rows: list[Row] = []
    for entry in suite:
        for agent in agent_sections(entry):
            attacked, clean = measures.get((entry.name, agent, "attack")), measures.get((entry.name, agent, "clean"))
            if attacked is not None and clean is not None:
                rows += _attack_rows(entry, agent, attacked, clean)
    intact = len(cells) - sum(1 for row in failed if row.row.endswith(": canaries"))
    rows.append(Row(TABLE, "containment: canaries unchanged", "output", "experiments", intact, len(cells),
                    wilson_interval(intact, len(cells)).scaled(100), recovered="yes" if intact == len(cells) else "NO",
                    note="sha256 of every canary beside every sandbox, after the runs"))  # fmt: skip
    rows += _population_rows(out_dir, quick=quick, seed=seed, progress=None)
    rows += failed
    if calibration is None:
        sized = calibration_runs or (QUICK_CALIBRATION_RUNS if quick else FULL_CALIBRATION_RUNS)
        calibration = calibrate(calibration_dir(out_dir), runs=sized, seed=seed)
    files = write_tables(rows, out_dir, calibration)
    table = out_dir / "attack_table.md"
    table.write_text(_markdown(rows), encoding="utf-8")
    report = out_dir / "report.html"
    settings = {"seed": seed, "quick": quick, "runs_per_cell": runs, "calibration_runs": calibration.table.runs}
    page = part_page("Security: the attack table and the security subset", LEGEND[:2], rows, calibration, settings,
                     out_dir)  # fmt: skip
    report.write_text(page, encoding="utf-8")
    return SecurityResult(rows=rows, files=[*files, table, report, *calibration.files], failed=failed)
