"""Scale on one machine: runs per second of the in-process detect -> crop scenario with 1 and N workers.

Two rates per worker count: end to end (wall time of the whole experiment, worker
start and model loading included) and steady (the runs after the first tenth
divided by the span from their first start to the last run's end, as recorded,
so that every worker has started). The ratio of N workers to 1
is printed for both, with the machine's load average before and after (a shared
machine's other work slows every worker). Also the bytes the experiment directory
takes per run (hard links counted once) next to the mean scene PNG.

    .venv/bin/python benchmarks/scale.py [--runs 40] [--workers 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.table import Table

from testbed.events import RunFinished, RunStarted, read_events
from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "v1" / "detect_crop_incompatible.yaml"


def _disk_bytes(directory: Path) -> int:
    """Apparent size of every file and folder under ``directory``, each inode once (as ``du -sb``)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in [directory, *directory.rglob("*")]:
        status = path.lstat()
        key = (status.st_dev, status.st_ino)
        if key not in seen:
            seen.add(key)
            total += status.st_size
    return total


def _measure(runs: int, workers: int, device: str) -> dict[str, float]:
    scenario = load_scenario(SCENARIO).model_copy(update={"runs": runs})
    with tempfile.TemporaryDirectory(prefix="testbed-scale-") as tmp:
        out = Path(tmp) / "exp"
        started = time.perf_counter()
        anyio.run(lambda: run_experiment(scenario, out_dir=out, transport="inprocess", device=device, workers=workers))
        wall = time.perf_counter() - started
        events = read_events(out).events
        starts = sorted(e.time for e in events if isinstance(e, RunStarted))
        first = starts[runs // 10]  # past the first tenth: every worker has its models loaded
        last = max(e.time for e in events if isinstance(e, RunFinished))
        steady_runs = sum(start >= first for start in starts)
        scenes = list((out / "sandbox").glob("run-*/scene.png"))
        return {
            "end_to_end": runs / wall,
            "steady": steady_runs / (last - first),
            "bytes_per_run": _disk_bytes(out) / runs,
            "scene_bytes": sum(p.stat().st_size for p in scenes) / len(scenes),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    console = Console()
    load_before = os.getloadavg()
    one = _measure(args.runs, 1, args.device)
    many = _measure(args.runs, args.workers, args.device)
    load_after = os.getloadavg()
    table = Table(title=f"{SCENARIO.name}, {args.runs} runs, in process, {args.device}")
    table.add_column("measure")
    table.add_column("1 worker", justify="right")
    table.add_column(f"{args.workers} workers", justify="right")
    table.add_column("ratio", justify="right")
    for key, label in (("end_to_end", "runs/s, end to end"), ("steady", "runs/s, steady")):
        table.add_row(label, f"{one[key]:.2f}", f"{many[key]:.2f}", f"{many[key] / one[key]:.2f}x")
    table.add_row("bytes per run", f"{one['bytes_per_run']:,.0f}", f"{many['bytes_per_run']:,.0f}", "")
    table.add_row("  of which the scene PNG", f"{one['scene_bytes']:,.0f}", f"{many['scene_bytes']:,.0f}", "")
    console.print(table)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    console.print(
        f"CPUs usable: {cpus}; load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )


if __name__ == "__main__":
    main()
