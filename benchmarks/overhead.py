"""Testbed overhead: wall time per run of detect -> segment -> crop through the testbed
(in-process and over stdio) divided by the same model calls made directly, in one run.

The inference cache is off everywhere, so every run really infers. Per-run time
comes from the recorded events (run started -> run finished), so server start
and model loading are excluded; the first run (lazy model load) is dropped. A
second table splits a run into its calls (wall time seen by the orchestrator)
and the rest (agent, binding, recording).

    .venv/bin/python benchmarks/overhead.py [--runs 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import numpy as np
from rich.console import Console
from rich.table import Table

from testbed.events import CallEvent, RunFinished, RunStarted, read_events
from testbed.orchestrator import run_experiment, scene_for_run
from testbed.scenario import Scenario, load_scenario
from testbed.vision import InferenceParams, VisionModel

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "v1" / "detect_segment_crop.yaml"


def _per_run_seconds(directory: Path) -> list[float]:
    events = read_events(directory).events
    started = {e.run: e.time for e in events if isinstance(e, RunStarted)}
    finished = {e.run: e.time for e in events if isinstance(e, RunFinished)}
    return [finished[run] - started[run] for run in sorted(started) if run > 0]


def _node_seconds(directory: Path) -> dict[str, float]:
    """Median per run of each node's wall time (a fan-out node's calls overlap: its step's span)."""
    spans: dict[tuple[str, int], list[float]] = {}
    for event in read_events(directory).events:
        if isinstance(event, CallEvent) and event.run > 0 and event.outcome.value != "skipped":
            spans.setdefault((event.node, event.run), []).append(event.duration_s)
    by_node: dict[str, list[float]] = {}
    for (node, _), durations in spans.items():
        by_node.setdefault(node, []).append(max(durations))
    return {node: statistics.median(values) for node, values in by_node.items()}


def _testbed(scenario: Scenario, transport: str, device: str) -> tuple[list[float], dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="testbed-overhead-") as tmp:
        out = Path(tmp) / transport

        async def main() -> None:
            await run_experiment(scenario, out_dir=out, transport=transport, device=device)  # type: ignore[arg-type]

        anyio.run(main)
        return _per_run_seconds(out), _node_seconds(out)


def _direct(scenario: Scenario, device: str) -> tuple[list[float], dict[str, float]]:
    detector = VisionModel.shipped("detect", device=device, cache=None)
    segmenter = VisionModel.shipped("segment", device=device, cache=None)
    params = InferenceParams()
    seconds: list[float] = []
    parts: dict[str, list[float]] = {"detect": [], "segment": [], "crop": []}
    for run in range(scenario.runs):
        image = scene_for_run(scenario, run, None).image
        started = time.perf_counter()
        detector.predict(image, params)
        detected = time.perf_counter()
        segments = segmenter.predict(image, params)
        segmented = time.perf_counter()
        for box in segments.boxes_xyxy:  # the crops themselves: array slices
            x1, y1, x2, y2 = (int(v) for v in np.round(box))
            _ = image[y1:y2, x1:x2].copy()
        finished = time.perf_counter()
        if run > 0:
            seconds.append(finished - started)
            parts["detect"].append(detected - started)
            parts["segment"].append(segmented - detected)
            parts["crop"].append(finished - segmented)
    return seconds, {part: statistics.median(values) for part, values in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ["TESTBED_INFERENCE_CACHE"] = "0"
    scenario = load_scenario(SCENARIO).model_copy(update={"runs": args.runs})

    direct_runs, direct_parts = _direct(scenario, args.device)
    direct = statistics.median(direct_runs)
    inprocess_runs, inprocess_nodes = _testbed(scenario, "inprocess", args.device)
    stdio_runs, stdio_nodes = _testbed(scenario, "stdio", args.device)
    inprocess, stdio = statistics.median(inprocess_runs), statistics.median(stdio_runs)

    table = Table(title=f"detect -> segment -> crop, median of {args.runs - 1} runs, cache off, {args.device}")
    for column in ("path", "s/run", "ratio to direct", "goal"):
        table.add_column(column, justify="right" if column != "path" else "left")
    table.add_row("direct model calls", f"{direct:.4f}", "1.00", "")
    table.add_row("testbed, in-process", f"{inprocess:.4f}", f"{inprocess / direct:.2f}", "<= 1.10")
    table.add_row("testbed, stdio", f"{stdio:.4f}", f"{stdio / direct:.2f}", "<= 1.25")
    console = Console()
    console.print(table)

    parts = Table(title="where a run's time goes (median ms per run)")
    for column in ("part", "direct", "in-process", "stdio"):
        parts.add_column(column, justify="right" if column != "part" else "left")
    for node, label in (("detect", "detect"), ("segment", "segment"), ("crop", "crop (fan-out step)")):
        parts.add_row(
            label,
            f"{direct_parts[node] * 1000:.1f}",
            f"{inprocess_nodes.get(node, 0) * 1000:.1f}",
            f"{stdio_nodes.get(node, 0) * 1000:.1f}",
        )
    parts.add_row(
        "orchestration and recording",
        "-",
        f"{(inprocess - sum(inprocess_nodes.values())) * 1000:.1f}",
        f"{(stdio - sum(stdio_nodes.values())) * 1000:.1f}",
    )
    console.print(parts)


if __name__ == "__main__":
    main()
