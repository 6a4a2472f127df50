"""Replay speed: runs/s replaying recorded responses against runs/s of the same experiment live, in one run.

The live experiment (detect -> segment -> crop over stdio by default, inference
cache off) is recorded first; replay then serves its responses with no
servers or models. Goal: replay at least 50x faster than live on CPU.

    .venv/bin/python benchmarks/replay.py [--runs 30] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import anyio
from rich.console import Console
from rich.table import Table

from testbed.events import RunFinished, RunStarted, read_events
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "v1" / "detect_segment_crop.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--transport", default="stdio", choices=["inprocess", "stdio", "http"])
    args = parser.parse_args()
    os.environ["TESTBED_INFERENCE_CACHE"] = "0"
    scenario = load_scenario(SCENARIO).model_copy(update={"runs": args.runs})
    with tempfile.TemporaryDirectory(prefix="testbed-replay-bench-") as tmp:
        out = Path(tmp) / "exp"
        anyio.run(lambda: run_experiment(scenario, out_dir=out, device=args.device, transport=args.transport))
        events = read_events(out).events
        begun = {e.run: e.time for e in events if isinstance(e, RunStarted)}
        # Live time is the runs themselves (server start and model loading excluded); replay's includes its setup.
        live_s = sum(e.time - begun[e.run] for e in events if isinstance(e, RunFinished))
        report = anyio.run(lambda: replay_experiment(out))
    if report.divergence is not None:
        raise SystemExit(f"replay did not reproduce: {report.divergence}")
    live_rate = args.runs / live_s
    replay_rate = args.runs / report.seconds
    table = Table(title=f"{args.runs} runs of detect -> segment -> crop, {args.transport}, cache off, {args.device}")
    for column in ("mode", "seconds", "runs/s", "speed-up"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    table.add_row("live (servers, models; run time only)", f"{live_s:.2f}", f"{live_rate:.1f}", "1x")
    table.add_row("replay (recorded responses)", f"{report.seconds:.2f}", f"{replay_rate:.1f}",
                  f"{replay_rate / live_rate:.0f}x (goal >= 50x)")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
