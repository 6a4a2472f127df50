"""Scale: runs per second of the in-process detect -> crop scenario with 1 and N local workers, and on Ray.

Three set-ups on the same scenario in one run: one worker (the runs in this
process), N local worker processes, and N Ray actors on a local Ray cluster of N
CPUs (left out, with a note, where Ray is not installed). Two rates each: end to
end (wall time of the whole experiment, worker start and model loading included;
the Ray cluster's own start is printed apart, since an existing cluster does not
pay it) and steady (the runs after the first tenth divided by the span from their
first start to the last run's end, as recorded, so that every worker has started).
Each is printed with its ratio to one worker, and the machine's load average before
and after (a shared machine's other work slows every worker). Also the bytes the
experiment directory takes per run (hard links counted once) next to the mean scene PNG.

    .venv/bin/python benchmarks/scale.py [--runs 40] [--workers 2] [--device cpu] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.table import Table

from testbed._errors import TestbedError
from testbed.events import BLOBS_DIR, RunFinished, RunStarted, read_events
from testbed.orchestrator import RayExecutor, run_experiment
from testbed.orchestrator._workers import Executor
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


def _measure(runs: int, workers: int, device: str, executor: Executor | None = None) -> dict[str, float]:
    scenario = load_scenario(SCENARIO).model_copy(update={"runs": runs})
    with tempfile.TemporaryDirectory(prefix="testbed-scale-") as tmp:
        out = Path(tmp) / "exp"
        started = time.perf_counter()
        anyio.run(
            lambda: run_experiment(
                scenario, out_dir=out, transport="inprocess", device=device, workers=workers, executor=executor
            )
        )
        wall = time.perf_counter() - started
        events = read_events(out).events
        starts = sorted(e.time for e in events if isinstance(e, RunStarted))
        first = starts[runs // 10]  # past the first tenth: every worker has its models loaded
        last = max(e.time for e in events if isinstance(e, RunFinished))
        steady_runs = sum(start >= first for start in starts)
        blobs = out / BLOBS_DIR
        scenes = [blobs / f"{e.image_blob}.png" for e in events if isinstance(e, RunStarted)]
        return {
            "end_to_end": runs / wall,
            "steady": steady_runs / (last - first),
            "bytes_per_run": _disk_bytes(out) / runs,
            "scene_bytes": sum(p.stat().st_size for p in scenes) / len(scenes),
        }


def _measure_on_ray(runs: int, workers: int, device: str, console: Console) -> dict[str, float] | None:
    """The rates with ``workers`` Ray actors on a local cluster of as many CPUs; None where Ray is not installed."""
    started = time.perf_counter()
    try:
        with RayExecutor(num_cpus=workers) as executor:
            console.print(f"Ray: local cluster of {workers} CPUs started in {time.perf_counter() - started:.1f} s")
            return _measure(runs, workers, device, executor)
    except TestbedError as error:
        console.print(f"Ray: left out: {error}")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="Leave the Ray set-up out.")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)  # a log file keeps the table unwrapped
    load_before = os.getloadavg()
    columns = {"1 worker": _measure(args.runs, 1, args.device)}
    columns[f"{args.workers} workers"] = _measure(args.runs, args.workers, args.device)
    on_ray = _measure_on_ray(args.runs, args.workers, args.device, console) if args.ray else None
    if on_ray is not None:
        columns[f"Ray, {args.workers} CPUs"] = on_ray
    load_after = os.getloadavg()
    one = columns["1 worker"]
    table = Table(title=f"{SCENARIO.name}, {args.runs} runs, in process, {args.device}")
    table.add_column("measure")
    for name in columns:
        table.add_column(name, justify="right")
    for name in list(columns)[1:]:
        table.add_column(f"{name} / 1", justify="right")
    for key, label in (("end_to_end", "runs/s, end to end"), ("steady", "runs/s, steady")):
        rates = [f"{column[key]:.2f}" for column in columns.values()]
        ratios = [f"{column[key] / one[key]:.2f}x" for column in list(columns.values())[1:]]
        table.add_row(label, *rates, *ratios)
    for key, label in (("bytes_per_run", "bytes per run"), ("scene_bytes", "  of which the scene PNG")):
        table.add_row(label, *(f"{column[key]:,.0f}" for column in columns.values()))
    console.print(table)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    console.print(
        f"CPUs usable: {cpus}; load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )


if __name__ == "__main__":
    main()
