"""Recording small v1 experiments in-process, shared by the test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"


def record_v1(name: str, out: Path, runs: int, **updates: Any) -> Path:
    """Run ``scenarios/v1/<name>.yaml`` for ``runs`` runs (other fields overridden by ``updates``) into ``out``."""
    scenario = load_scenario(V1 / f"{name}.yaml").model_copy(update={"runs": runs, **updates})
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    return out
