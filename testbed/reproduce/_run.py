"""Running a population's workflows: each an ordinary experiment directory ``OUT/workflows/<id>/``, resumable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

import yaml

from testbed.orchestrator import ExperimentFinishedError, run_experiment
from testbed.population import Population
from testbed.reproduce._scenarios import workflow_scenario
from testbed.scenario import load_scenario_text
from testbed.transport import TransportKind

__all__ = ["SCENARIO_FILE", "WORKFLOWS_DIR", "run_workflows"]

WORKFLOWS_DIR: Final = "workflows"
SCENARIO_FILE: Final = "scenario.yaml"

Progress = Callable[[int, int], None]
"""Called with (workflows done, workflows planned)."""


async def run_workflows(
    population: Population,
    out_dir: Path,
    *,
    runs: int,
    transport: TransportKind | None = "inprocess",
    progress: Progress | None = None,
) -> int:
    """Run every workflow not yet finished under ``out_dir/workflows/``; finished ones are left as they are.

    Each workflow's scenario document is written beside its recording (``scenario.yaml``), so ``testbed replay``
    and ``testbed report`` work on the directory alone; an unfinished one continues through the orchestrator's
    own resume, without losing or repeating a run.

    Returns:
        Runs recorded by this process.

    Raises:
        TestbedError: a directory holds another experiment, or a server cannot start.
    """
    recorded = 0
    for done, workflow in enumerate(population.workflows):
        directory = out_dir / WORKFLOWS_DIR / workflow.id
        directory.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(workflow_scenario(population, workflow, runs=runs), sort_keys=False)
        path = directory / SCENARIO_FILE
        path.write_text(text, encoding="utf-8")
        scenario = load_scenario_text(text, source=str(path), base_dir=directory)
        try:
            summary = await run_experiment(scenario, out_dir=directory, scenario_path=path, transport=transport)
            recorded += summary.runs - summary.resumed_runs
        except ExperimentFinishedError:
            pass
        if progress is not None:
            progress(done + 1, len(population.workflows))
    return recorded
