"""Running a case family: its units drawn among its variants, each variant an ordinary experiment directory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import yaml

from testbed._seeding import derive_int_seed, derive_rng
from testbed.orchestrator import ExperimentFinishedError, run_experiment
from testbed.reproduce._cases_model import CaseFamily
from testbed.reproduce._run import SCENARIO_FILE
from testbed.scenario import load_scenario_text

__all__ = ["CaseProgress", "allocate", "run_case", "variant_scenario"]

CaseProgress = Callable[[str, int, int], None]
"""Called with (case, variants done, variants planned)."""


def allocate(case: CaseFamily, *, runs: int, seed: int) -> dict[str, int]:
    """How many of ``runs`` units each variant takes: one seeded multinomial draw from the configured shares."""
    names = list(case.variants)
    shares = [case.variants[name].share for name in names]
    counts = derive_rng(seed, "case", case.case, "allocation").multinomial(runs, shares)
    return {name: int(count) for name, count in zip(names, counts, strict=True)}


def variant_scenario(case: CaseFamily, variant: str, *, runs: int, seed: int) -> dict[str, object]:
    """The scenario document of one variant, seeded from the family's seed."""
    return {
        "name": f"case_{case.case}_{variant}",
        "version": 1,
        "description": f"{case.system}: {variant} ({case.unit})",
        "seed": derive_int_seed(seed, "case", case.case, variant),
        "runs": runs,
        **case.variants[variant].scenario,
    }


async def run_case(
    case: CaseFamily, out_dir: Path, *, runs: int, seed: int, progress: CaseProgress | None = None
) -> dict[str, int]:
    """Run every variant not yet finished under ``out_dir/<variant>/``; returns the runs allocated to each.

    A variant allocated no unit has no directory. An unfinished one continues through the orchestrator's
    own resume, without losing or repeating a run.

    Raises:
        TestbedError: a directory holds another experiment, or a server cannot start.
    """
    counts = allocate(case, runs=runs, seed=seed)
    for done, (variant, count) in enumerate(counts.items()):
        if count > 0:
            directory = out_dir / variant
            directory.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(variant_scenario(case, variant, runs=count, seed=seed), sort_keys=False)
            path = directory / SCENARIO_FILE
            path.write_text(text, encoding="utf-8")
            scenario = load_scenario_text(text, source=str(path), base_dir=directory)
            with contextlib.suppress(ExperimentFinishedError):  # finished earlier: nothing left to run
                await run_experiment(scenario, out_dir=directory, scenario_path=path, transport="inprocess")
        if progress is not None:
            progress(case.case, done + 1, len(counts))
    return counts
