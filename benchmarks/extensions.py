"""Per-call latency with each protocol extension on, against none, measured in one process.

Each bundle of the extensions experiment (``testbed.experiment.BUNDLES``: none, declarations, contracts,
declarations+contracts, memory, provenance, all) is planned as the experiment plans it, on one scenario,
and run ``--rounds`` times for ``--runs`` runs, the bundles in a rotated order each round so that drift in machine load
spreads over all of them. Every cell starts with a cold inference cache (as in ``testbed experiment``).
A warm-up cell (none, discarded) loads the models first.

Per bundle: executed calls, the median and p90 of their recorded durations, and the ratio of each
bundle's median to none's with a 95 % percentile bootstrap interval (``scipy.stats.bootstrap`` over
calls, the two samples resampled independently). A bundle the scenario loader refuses (an extension
not built yet) is listed as not measured, with the reason.

    .venv/bin/python benchmarks/extensions.py [--runs 10] [--rounds 3] [--scenario scenarios/v1/detect_crop_ttl.yaml]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table
from scipy import stats

from testbed.analysis import open_experiment
from testbed.events import CallOutcomeKind
from testbed.experiment import BUNDLES, DesignError, Plan, load_design_text, plan_experiment, run_cells, write_manifest

REPOSITORY = Path(__file__).resolve().parent.parent
SCENARIO = REPOSITORY / "scenarios" / "v1" / "detect_crop_ttl.yaml"
BASELINE = "none"


@dataclass(frozen=True)
class BundleLatency:
    bundle: str
    calls: int
    median_ms: float
    p90_ms: float
    ratio: float
    """This bundle's median call latency over none's."""
    ratio_low: float
    ratio_high: float


def _plan(bundle: str, scenario: Path, runs: int, design_dir: Path) -> Plan:
    text = (
        f"name: bench-{bundle.replace('+', '-')}\n"  # a design name takes no '+'
        f"scenario: {json.dumps(str(scenario.absolute()))}\nseed: 0\nruns: {runs}\n"
        f"factors:\n  extensions: {{kind: extensions, levels: [{bundle}]}}\n"
    )
    path = design_dir / f"{bundle}.yaml"
    path.write_text(text, encoding="utf-8")
    return plan_experiment(load_design_text(text, path=path))


def _run(plan: Plan, out: Path, device: str) -> npt.NDArray[np.float64]:
    write_manifest(plan, out)
    anyio.run(lambda: run_cells(plan, out, device=device))
    calls = open_experiment(out / "cells" / plan.cells[0].id).calls
    executed = calls[calls["outcome"] != CallOutcomeKind.SKIPPED.value]
    return np.asarray(executed["duration_s"].to_numpy(dtype=np.float64) * 1000.0, dtype=np.float64)


def _median_ratio(
    treatment: npt.NDArray[np.float64], baseline: npt.NDArray[np.float64], rng: np.random.Generator
) -> tuple[float, float, float]:
    def ratio(t: npt.NDArray[np.float64], b: npt.NDArray[np.float64], axis: int = -1) -> npt.NDArray[np.float64]:
        return np.asarray(np.median(t, axis=axis) / np.median(b, axis=axis), dtype=np.float64)

    interval = stats.bootstrap(
        (treatment, baseline), ratio, vectorized=True, n_resamples=4999, method="percentile", rng=rng
    ).confidence_interval
    return float(ratio(treatment, baseline)), float(interval.low), float(interval.high)


def measure(
    scenario: Path, *, runs: int, rounds: int, device: str, work: Path
) -> tuple[list[BundleLatency], dict[str, str]]:
    """Each plannable bundle's call latencies against none's; the bundles not measured, with the reason."""
    plans: dict[str, Plan] = {}
    skipped: dict[str, str] = {}
    for bundle in BUNDLES:
        try:
            plans[bundle] = _plan(bundle, scenario, runs, work)
        except DesignError as error:
            skipped[bundle] = error.message
    if BASELINE not in plans:
        raise SystemExit(f"{scenario}: the bundle 'none' cannot be planned: {skipped[BASELINE]}")
    _run(plans[BASELINE], work / "warm-up", device)
    durations: dict[str, list[npt.NDArray[np.float64]]] = {bundle: [] for bundle in plans}
    order = list(plans)
    for round_index in range(rounds):
        rotated = order[round_index % len(order) :] + order[: round_index % len(order)]
        for bundle in rotated:
            durations[bundle].append(_run(plans[bundle], work / f"round-{round_index}" / bundle, device))
    pooled = {bundle: np.concatenate(parts) for bundle, parts in durations.items()}
    rng = np.random.default_rng(0)
    rows = []
    for bundle, values in pooled.items():
        ratio, low, high = _median_ratio(values, pooled[BASELINE], rng)
        rows.append(
            BundleLatency(
                bundle=bundle,
                calls=len(values),
                median_ms=float(np.median(values)),
                p90_ms=float(np.quantile(values, 0.9)),
                ratio=ratio,
                ratio_low=low,
                ratio_high=high,
            )
        )
    return rows, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--runs", type=int, default=10, help="runs per bundle per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-extensions-") as work:
        rows, skipped = measure(args.scenario, runs=args.runs, rounds=args.rounds, device=args.device, work=Path(work))
    table = Table(title=f"per-call latency by extension bundle ({args.scenario.name}, {args.rounds} rounds x "
                  f"{args.runs} runs, device {args.device})")  # fmt: skip
    table.add_column("bundle")
    for name in ("calls", "median ms", "p90 ms", "median / none [95 % CI]"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(
            row.bundle,
            str(row.calls),
            f"{row.median_ms:.2f}",
            f"{row.p90_ms:.2f}",
            f"{row.ratio:.3f} [{row.ratio_low:.3f}, {row.ratio_high:.3f}]",
        )
    console = Console()
    console.print(table)
    for bundle, reason in skipped.items():
        console.print(f"not measured: {bundle}: {reason}")
    if args.json is not None:
        document = {"rows": [asdict(row) for row in rows], "skipped": skipped}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
