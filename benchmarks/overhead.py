"""Testbed overhead: wall time per run of detect -> segment -> crop through the testbed
(in-process and over stdio) divided by the same model calls made directly, in one run.

The inference cache is off everywhere, so every run really infers. Per-run time
comes from the recorded events (run started -> run finished), so server start
and model loading are excluded; the first run (lazy model load) is dropped.

    .venv/bin/python benchmarks/overhead.py [--runs 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import numpy as np
from rich.console import Console
from rich.table import Table

from testbed.events import RunFinished, RunStarted, read_events
from testbed.orchestrator import run_experiment, scene_for_run
from testbed.scenario import Scenario, load_scenario
from testbed.vision import InferenceParams, VisionModel

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "v1" / "detect_segment_crop.yaml"


def _per_run_seconds(directory: Path) -> list[float]:
    events = read_events(directory).events
    started = {e.run: e.time for e in events if isinstance(e, RunStarted)}
    finished = {e.run: e.time for e in events if isinstance(e, RunFinished)}
    return [finished[run] - started[run] for run in sorted(started) if run > 0]


def _testbed(scenario: Scenario, transport: str, device: str, profile: bool) -> tuple[list[float], pstats.Stats | None]:
    with tempfile.TemporaryDirectory(prefix="testbed-overhead-") as tmp:
        out = Path(tmp) / transport
        profiler = cProfile.Profile() if profile else None

        async def main() -> None:
            await run_experiment(scenario, out_dir=out, transport=transport, device=device)  # type: ignore[arg-type]

        if profiler is not None:
            profiler.enable()
        anyio.run(main)
        if profiler is not None:
            profiler.disable()
        return _per_run_seconds(out), pstats.Stats(profiler) if profiler is not None else None


def _direct(scenario: Scenario, device: str) -> list[float]:
    detector = VisionModel.shipped("detect", device=device, cache=None)
    segmenter = VisionModel.shipped("segment", device=device, cache=None)
    params = InferenceParams()
    seconds = []
    for run in range(scenario.runs):
        image = scene_for_run(scenario, run, None).image
        started = time.perf_counter()
        detections = detector.predict(image, params)
        segments = segmenter.predict(image, params)
        for box in segments.boxes_xyxy:  # the crops themselves: array slices
            x1, y1, x2, y2 = (int(v) for v in np.round(box))
            _ = image[y1:y2, x1:x2].copy()
        assert detections is not None
        if run > 0:
            seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ["TESTBED_INFERENCE_CACHE"] = "0"
    scenario = load_scenario(SCENARIO).model_copy(update={"runs": args.runs})

    direct = statistics.median(_direct(scenario, args.device))
    inprocess_runs, stats = _testbed(scenario, "inprocess", args.device, profile=True)
    stdio_runs, _ = _testbed(scenario, "stdio", args.device, profile=False)
    inprocess, stdio = statistics.median(inprocess_runs), statistics.median(stdio_runs)

    table = Table(title=f"detect -> segment -> crop, median of {args.runs - 1} runs, cache off, {args.device}")
    for column in ("path", "s/run", "ratio to direct", "goal"):
        table.add_column(column, justify="right" if column != "path" else "left")
    table.add_row("direct model calls", f"{direct:.3f}", "1.00", "")
    table.add_row("testbed, in-process", f"{inprocess:.3f}", f"{inprocess / direct:.2f}", "<= 1.10")
    table.add_row("testbed, stdio", f"{stdio:.3f}", f"{stdio / direct:.2f}", "<= 1.25")
    console = Console()
    console.print(table)
    if stats is not None:
        console.print("in-process run: top functions by own time (where the overhead goes)")
        stats.sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
