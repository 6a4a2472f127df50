"""Viewer generation time over an N-run experiment, beside the time it took to record those runs.

Records ``scenarios/v1/detect_crop_incompatible.yaml`` in process on the CPU
with the inference cache off (``--record-runs``, default ``--runs``), then generates the viewer site over
``--runs`` runs (goal: under 10 s for 1,000). Recording 1,000 runs takes
minutes; with ``--record-runs`` smaller than ``--runs`` the recorded runs are
replicated (renumbered copies of the same events) up to ``--runs``, and the
recording time for ``--runs`` is extrapolated linearly; the table says which
figures are measured and which are extrapolated.

    .venv/bin/python benchmarks/viewer.py                          # record 1000 runs, view them
    .venv/bin/python benchmarks/viewer.py --record-runs 100        # record 100, replicate to 1000
    .venv/bin/python benchmarks/viewer.py --experiment runs/big    # view an existing experiment
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.table import Table

from testbed.events import BLOBS_DIR, EVENTS_FILE, RunFinished, RunStarted, read_events
from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario
from testbed.viewer import build_site

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "v1" / "detect_crop_incompatible.yaml"


def record(runs: int, out: Path) -> tuple[float, float]:
    """Record ``runs`` runs into ``out``; returns (wall seconds with server start, seconds inside runs)."""
    scenario = load_scenario(SCENARIO).model_copy(update={"runs": runs})
    started = time.perf_counter()
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    wall = time.perf_counter() - started
    events = read_events(out).events
    begun = {e.run: e.time for e in events if isinstance(e, RunStarted)}
    inside = sum(e.time - begun[e.run] for e in events if isinstance(e, RunFinished))
    return wall, inside


def replicate(source: Path, target: Path, runs: int) -> None:
    """An experiment of ``runs`` runs made of renumbered copies of ``source``'s runs (blobs shared by hard links)."""
    lines = (source / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    head: list[dict[str, object]] = []
    blocks: list[list[dict[str, object]]] = []
    current: list[dict[str, object]] | None = None
    for line in lines:
        event = json.loads(line)
        kind = event["event"]
        if kind == "run_started":
            current = [event]
        elif current is not None:
            current.append(event)
            if kind == "run_finished":
                blocks.append(current)
                current = None
        elif kind != "finished":
            head.append(event)
    target.mkdir(parents=True)
    shutil.copytree(source / BLOBS_DIR, target / BLOBS_DIR, copy_function=_link)
    with (target / EVENTS_FILE).open("w", encoding="utf-8") as handle:
        for event in head:
            if event["event"] == "header":
                event = {**event, "runs": runs}
            handle.write(json.dumps(event) + "\n")
        for run in range(runs):
            for event in blocks[run % len(blocks)]:
                copy = {**event, "run": run} if event.get("run") is not None else dict(event)
                if copy["event"] == "run_started":
                    copy["scope"] = f"run-{run}"
                handle.write(json.dumps(copy) + "\n")
        handle.write(json.dumps({"time": time.time(), "event": "finished", "runs": runs, "finished_at": time.time()}))
        handle.write("\n")


def _link(source: str, target: str) -> None:
    try:
        Path(target).hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs in the experiment the viewer is generated over")
    parser.add_argument("--record-runs", type=int, default=None, help="runs actually recorded (default: --runs)")
    parser.add_argument("--experiment", type=Path, default=None, help="view this recorded experiment instead")
    parser.add_argument("--keep", type=Path, default=None, help="keep the experiment (and its viewer) here")
    args = parser.parse_args()
    os.environ["TESTBED_INFERENCE_CACHE"] = "0"  # recording pays for every model call, as a fresh machine does
    console = Console()
    table = Table(title="viewer generation beside recording (detect_crop_incompatible, in process, CPU)")
    for column in ("measure", "runs", "seconds", "per run", "how"):
        table.add_column(column, justify="left" if column in ("measure", "how") else "right")
    with tempfile.TemporaryDirectory(prefix="testbed-viewer-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.experiment is not None:
            experiment = args.experiment
        else:
            recorded = args.record_runs or args.runs
            source = work / f"recorded-{recorded}"
            console.print(f"recording {recorded} runs into {source} ...")
            wall, inside = record(recorded, source)
            table.add_row(
                "record (wall, incl. server start)", str(recorded), f"{wall:.1f}", f"{wall / recorded:.3f}", "measured"
            )
            table.add_row(
                "record (inside runs)", str(recorded), f"{inside:.1f}", f"{inside / recorded:.3f}", "measured"
            )
            experiment = source
            if recorded < args.runs:
                table.add_row(
                    "record (wall), extrapolated",
                    str(args.runs),
                    f"{wall / recorded * args.runs:.0f}",
                    f"{wall / recorded:.3f}",
                    f"linear from {recorded} runs",
                )
                experiment = work / f"replicated-{args.runs}"
                replicate(source, experiment, args.runs)
        runs = sum(1 for e in read_events(experiment).events if isinstance(e, RunFinished))
        how = (
            "measured"
            if args.experiment is not None or (args.record_runs or args.runs) >= args.runs
            else ("measured, over replicated runs")
        )
        for attempt in ("first", "second"):
            site = build_site([experiment], work / f"viewer-{attempt}")
            table.add_row(f"viewer, {attempt} generation: read + validate", str(runs), f"{site.load_seconds:.2f}",
                          f"{site.load_seconds / runs:.4f}", how)  # fmt: skip
            table.add_row(f"viewer, {attempt} generation: figures + pages", str(runs), f"{site.write_seconds:.2f}",
                          f"{site.write_seconds / runs:.4f}", f"{site.pages} pages")  # fmt: skip
            table.add_row(f"viewer, {attempt} generation: total (goal < 10 s at 1000)", str(runs),
                          f"{site.seconds:.2f}", f"{site.seconds / runs:.4f}", how)  # fmt: skip
        console.print(table)
        if args.keep is not None:
            console.print(f"kept in {work}")


if __name__ == "__main__":
    main()
