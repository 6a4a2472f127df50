"""Replay speed: runs/s replaying recorded responses against runs/s of the same experiment live, in one run.

The live experiment (detect -> segment -> crop over stdio by default, inference
cache off) is recorded first; replay then serves its responses with no
servers or models and recomputes the violations (``replay_experiment``: the
recording is read, the agent is re-run against its responses, the replayed
events are compared with the recorded ones, the recording is validated, and
the replay is validated too unless its events are indistinguishable from the
recording's, when its violations are the same by construction). Live time is
the runs themselves (server start and model loading excluded); replay time is
all of ``replay_experiment``, reading the recording included. Goal (issue 11):
replay at least 100x faster than live on CPU (:data:`GOAL_SPEEDUP`).

    .venv/bin/python benchmarks/replay.py [--runs 30] [--device cpu] [--transport stdio]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from rich.console import Console
from rich.table import Table

from testbed.events import RunFinished, RunStarted, read_events
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "v1" / "detect_segment_crop.yaml"
GOAL_SPEEDUP = 100.0
"""Issue 11: replay, violations recomputed, at least 100x faster than live."""


@dataclass(frozen=True)
class Measurement:
    runs: int
    live_s: float
    """Sum of the live runs' own durations."""
    replay_s: float
    """All of ``replay_experiment``, reading the recording included."""
    violations: int
    direct: bool
    """Whether replay served the recorded responses directly (no MCP sessions)."""
    phases_s: dict[str, float]
    """The kept replay's wall seconds by phase: reading the recording, replaying, validating."""
    replay_cpu_s: float
    """The kept replay's CPU seconds in this process: on a shared machine, wall time also counts waiting for a core."""

    @property
    def speedup(self) -> float:
        return self.live_s / self.replay_s


def measure(runs: int = 30, device: str = "cpu", transport: str = "stdio", repeat: int = 1) -> Measurement:
    """Record ``runs`` live runs of detect -> segment -> crop, then replay them (best of ``repeat`` replays).

    Raises:
        AssertionError: the replay did not reproduce the recording.
    """
    previous = os.environ.get("TESTBED_INFERENCE_CACHE")
    os.environ["TESTBED_INFERENCE_CACHE"] = "0"
    try:
        scenario = load_scenario(SCENARIO).model_copy(update={"runs": runs})
        with tempfile.TemporaryDirectory(prefix="testbed-replay-bench-") as tmp:
            out = Path(tmp) / "exp"

            async def live() -> None:
                await run_experiment(scenario, out_dir=out, device=device, transport=transport)  # type: ignore[arg-type]

            anyio.run(live)
            events = read_events(out).events
            begun = {e.run: e.time for e in events if isinstance(e, RunStarted)}
            live_s = sum(e.time - begun[e.run] for e in events if isinstance(e, RunFinished))
            reports, cpu = [], []
            for _ in range(repeat):
                started = time.process_time()
                reports.append(anyio.run(lambda: replay_experiment(out)))
                cpu.append(time.process_time() - started)
    finally:
        if previous is None:
            os.environ.pop("TESTBED_INFERENCE_CACHE", None)
        else:
            os.environ["TESTBED_INFERENCE_CACHE"] = previous
    for report in reports:
        assert report.divergence is None, f"replay did not reproduce: {report.divergence}"
    kept = min(range(len(reports)), key=lambda index: reports[index].seconds)
    best = reports[kept]
    return Measurement(
        runs=runs,
        live_s=live_s,
        replay_s=best.seconds,
        violations=reports[0].violations,
        direct=all(report.direct for report in reports),
        phases_s=best.phases_s,
        replay_cpu_s=cpu[kept],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--transport", default="stdio", choices=["inprocess", "stdio", "http"])
    parser.add_argument("--repeat", type=int, default=1, help="replays of the one recording (the best is kept)")
    args = parser.parse_args()
    try:
        result = measure(args.runs, args.device, args.transport, args.repeat)
    except AssertionError as error:
        raise SystemExit(str(error)) from None
    live_rate = result.runs / result.live_s
    replay_rate = result.runs / result.replay_s
    table = Table(title=f"{result.runs} runs of detect -> segment -> crop, {args.transport}, cache off, {args.device}")
    for column in ("mode", "seconds", "ms/run", "runs/s", "speed-up"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    table.add_row("live (servers, models; run time only)", f"{result.live_s:.2f}",
                  f"{1000 * result.live_s / result.runs:.1f}", f"{live_rate:.1f}", "1x")  # fmt: skip
    how = "served directly" if result.direct else "through MCP sessions"
    table.add_row(f"replay (recorded responses {how}, violations recomputed)", f"{result.replay_s:.2f}",
                  f"{1000 * result.replay_s / result.runs:.1f}", f"{replay_rate:.1f}",
                  f"{result.speedup:.0f}x (goal >= {GOAL_SPEEDUP:g}x)")  # fmt: skip
    console = Console()
    console.print(table)
    phases = Table(title="where the kept replay's time goes (ms per run)")
    for column in ("phase", "ms/run", "share"):
        phases.add_column(column, justify="right" if column != "phase" else "left")
    for phase, label in (("read", "reading the recording"), ("replay", "replaying and comparing the events"),
                         ("validate", "recomputing the violations")):  # fmt: skip
        seconds = result.phases_s.get(phase, 0.0)
        phases.add_row(label, f"{1000 * seconds / result.runs:.2f}", f"{seconds / result.replay_s:.0%}")
    console.print(phases)
    console.print(f"the kept replay used {1000 * result.replay_cpu_s / result.runs:.2f} ms/run of CPU in this process")


if __name__ == "__main__":
    main()
