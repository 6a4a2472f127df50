"""Running a plan: each cell an ordinary experiment directory ``OUT/cells/<id>/``, under one manifest.

``OUT/design.json`` records the design file's text, every scenario file it read, the runs per
cell, the seed, each cell's experiment ID and the package versions; ``--resume OUT`` plans the
experiment again from it alone. A cell that a killed process left unfinished continues through
the orchestrator's own resume; a finished one is left as it is. Each cell starts with a cold
inference cache (see :func:`run_cells`), after a discarded warm-up (see :func:`_warm_up`).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from testbed._errors import TestbedError
from testbed._versions import package_versions
from testbed.events import EVENTS_FILE
from testbed.experiment._design import load_design_text
from testbed.experiment._plan import Plan, plan_experiment
from testbed.orchestrator import ExperimentFinishedError, experiment_id, run_experiment
from testbed.transport import TransportKind
from testbed.vision import shared_inference_cache

__all__ = ["CELLS_DIR", "MANIFEST_FILE", "CellRun", "cell_dir", "plan_from_manifest", "run_cells", "write_manifest"]

MANIFEST_FILE: Final = "design.json"
CELLS_DIR: Final = "cells"
MANIFEST_FORMAT: Final = 1
"""Bump when a field of the manifest changes meaning."""

Progress = Callable[[int, int], None]
"""Called with (runs recorded over all cells, runs planned over all cells)."""


@dataclass(frozen=True)
class CellRun:
    """What running one cell did."""

    cell: str
    recorded: int
    """Runs recorded by this process (0 for a cell an earlier process finished)."""
    resumed: int
    """Runs an earlier process had already recorded."""
    note: str | None = None


def cell_dir(out_dir: Path, cell_id: str) -> Path:
    return out_dir / CELLS_DIR / cell_id


def _manifest(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": MANIFEST_FORMAT,
        "name": plan.loaded.design.name,
        "design_path": str(plan.loaded.path.absolute()),
        "design_text": plan.loaded.path.read_text(encoding="utf-8") if plan.loaded.path.is_file() else None,
        "seed": plan.seed,
        "runs": plan.runs,
        "factors": {name: list(labels) for name, labels in plan.factors},
        "cells": [
            {"id": cell.id, "levels": dict(cell.levels), "experiment_id": experiment_id(cell.scenario)}
            for cell in plan.cells
        ],
        "contrasts": [{"name": contrast.name, "strata": contrast.strata} for contrast in plan.contrasts],
        "scenarios": dict(plan.scenario_texts),
        "versions": package_versions(("mcp-vision-testbed", "mcp", "numpy", "scipy", "statsmodels", "pandas")),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _identity(manifest: dict[str, Any]) -> tuple[object, ...]:
    return manifest["seed"], manifest["runs"], [(cell["id"], cell["experiment_id"]) for cell in manifest["cells"]]


def write_manifest(plan: Plan, out_dir: Path, *, text: str | None = None) -> None:
    """Write ``design.json`` for a new experiment, or check that the one there records this plan.

    Args:
        plan: the plan.
        out_dir: the experiment directory.
        text: the design file's text to record (default: read from its path).

    Raises:
        TestbedError: ``out_dir`` holds another design (other cells, seed or runs per cell).
    """
    manifest = _manifest(plan)
    if text is not None:
        manifest["design_text"] = text
    path = out_dir / MANIFEST_FILE
    if path.exists():
        existing = _read_manifest(out_dir)
        if _identity(existing) != _identity(manifest):
            raise TestbedError(
                f"{out_dir}: holds experiment {existing.get('name')!r} with other cells, seed or runs per cell "
                f"({existing['runs']} runs, seed {existing['seed']}); choose another --out"
            )
        return
    if manifest["design_text"] is None:
        raise TestbedError(f"{plan.loaded.path}: cannot record the design: the file is gone")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TestbedError(
            f"{out_dir}: no {MANIFEST_FILE}: not an experiment directory of testbed experiment"
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise TestbedError(f"{path}: cannot read the manifest: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != MANIFEST_FORMAT:
        raise TestbedError(f"{path}: not a manifest of format {MANIFEST_FORMAT}")
    return manifest


def plan_from_manifest(out_dir: Path) -> tuple[Plan, str]:
    """Plan the experiment ``out_dir/design.json`` records, from the texts recorded there alone.

    Returns:
        The plan and the design file's text.

    Raises:
        TestbedError: no manifest, or this testbed plans other cells from it (changed since).
    """
    manifest = _read_manifest(out_dir)
    texts: dict[str, str] = manifest["scenarios"]
    loaded = load_design_text(manifest["design_text"], path=Path(manifest["design_path"]))
    plan = plan_experiment(loaded, runs=manifest["runs"], force=True, read=lambda path: texts.get(str(path)))
    if _identity(_manifest(plan)) != _identity(manifest):
        raise TestbedError(
            f"{out_dir / MANIFEST_FILE}: this testbed plans other cells from the recorded design "
            "(its scenario model changed since); rerun the design into a new --out"
        )
    return plan, manifest["design_text"]


WARM_UP_RUNS: Final = 3
"""Runs of the first cell's scenario made, and discarded, before the cells (see :func:`_warm_up`)."""


async def _warm_up(plan: Plan, out_dir: Path, *, device: str, transport: TransportKind | None) -> None:
    """Run the first unfinished cell's scenario a few times into a throw-away directory.

    The first inferences of a process pay one-time costs (loading the models, the first passes through
    their kernels). Without a warm-up they fall on the first cells run, so a latency contrast would
    measure the order of the cells."""
    pending = [cell for cell in plan.cells if not (cell_dir(out_dir, cell.id) / EVENTS_FILE).exists()]
    if not pending:
        return
    scenario = pending[0].scenario.model_copy(update={"runs": min(WARM_UP_RUNS, plan.runs)})
    with tempfile.TemporaryDirectory(prefix="testbed-warm-up-") as directory:
        await run_experiment(
            scenario,
            out_dir=Path(directory) / "warm-up",
            scenario_path=pending[0].source,
            transport=transport,
            device=device,
            workers=1,
        )


async def run_cells(
    plan: Plan,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    device: str = "auto",
    transport: TransportKind | None = None,
    workers: int | None = 1,
) -> list[CellRun]:
    """Run every cell of ``plan`` not yet finished under ``out_dir``, in plan order.

    Raises:
        TestbedError: a cell directory holds another experiment, or a server cannot start.
    """
    total = plan.runs * len(plan.cells)
    results = []
    await _warm_up(plan, out_dir, device=device, transport=transport)
    for position, cell in enumerate(plan.cells):
        before = plan.runs * position

        def report(done: int, _total: int, before: int = before) -> None:
            if progress is not None:
                progress(before + done, total)

        directory = cell_dir(out_dir, cell.id)
        # Every cell sees the same scenes, so in-process servers would answer later cells from inference cached
        # by earlier ones: latency would measure the order of the cells. Each cell starts cold, as it would alone.
        shared_inference_cache().clear()
        try:  # a cell with spans (observability: {spans: true}) runs in this process, into its spans.otlp.jsonl
            summary = await run_experiment(
                cell.scenario,
                out_dir=directory,
                scenario_path=cell.source,
                transport=transport,
                device=device,
                progress=report,
                workers=workers,
            )
        except ExperimentFinishedError:
            report(plan.runs, total)
            results.append(CellRun(cell.id, recorded=0, resumed=plan.runs))
            continue
        results.append(CellRun(cell.id, summary.runs - summary.resumed_runs, summary.resumed_runs, summary.resume_note))
    return results
