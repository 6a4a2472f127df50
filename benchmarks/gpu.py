"""On a CUDA GPU: inference latency of the shipped models, and runs/s with one and several workers sharing it.

Prints, on the GPU: detect and segment latency (median ms per 640x480 image, no
cache) at 320 and 640 px; runs/s of the in-process detect -> crop scenario with
1 worker and with N workers (each its own process and models, all on the one GPU;
steady rate, from the first run's start to the last run's end as recorded); and
the testbed overhead ratio: one worker's time per run over the detector's own
latency at the servers' image size. Exits with a message where CUDA is absent.
Not run in CI.

    .venv/bin/python benchmarks/gpu.py [--images 20] [--runs 40] [--workers 4] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import anyio
from rich.console import Console
from rich.table import Table

from testbed._seeding import derive_seed_sequence
from testbed.events import RunFinished, RunStarted, read_events
from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario
from testbed.scenes import SceneSpec, generate_scene
from testbed.server_config import ServerConfig
from testbed.vision import InferenceParams, VisionModel

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "v1" / "detect_crop_incompatible.yaml"


def _latency_ms(task: Literal["detect", "segment"], device: str, images: list, imgsz: int) -> float:  # type: ignore[type-arg]
    import torch

    model = VisionModel.shipped(task, device=device)
    model.cache = None
    params = InferenceParams(imgsz=imgsz)
    for image in images[:3]:  # warm-up: the first calls build the predictor and the CUDA kernels
        model.predict(image, params)
    samples = []
    for image in images:
        torch.cuda.synchronize()
        started = time.perf_counter()
        model.predict(image, params)
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _runs_per_second(runs: int, workers: int, device: str) -> float:
    scenario = load_scenario(SCENARIO).model_copy(update={"runs": runs})
    with tempfile.TemporaryDirectory(prefix="testbed-gpu-") as tmp:
        out = Path(tmp) / "exp"
        anyio.run(lambda: run_experiment(scenario, out_dir=out, transport="inprocess", device=device, workers=workers))
        events = read_events(out).events
    first = min(e.time for e in events if isinstance(e, RunStarted))
    last = max(e.time for e in events if isinstance(e, RunFinished))
    return runs / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: CUDA is not available on this machine (torch sees no GPU); nothing to measure")
    console = Console()
    spec = SceneSpec(width=640, height=480, min_size=56, max_size=144)
    images = [generate_scene(spec, derive_seed_sequence(0, "gpu-bench", i)).image for i in range(args.images)]
    latency = Table(title=f"inference on {torch.cuda.get_device_name(0)}, median of {args.images} images of 640x480")
    for column in ("model", "imgsz", "ms/img"):
        latency.add_column(column, justify="left" if column == "model" else "right")
    measured: dict[tuple[str, int], float] = {}
    tasks: tuple[Literal["detect", "segment"], ...] = ("detect", "segment")
    for task in tasks:
        for imgsz in (320, 640):
            measured[(task, imgsz)] = _latency_ms(task, args.device, images, imgsz)
            latency.add_row(task, str(imgsz), f"{measured[(task, imgsz)]:.2f}")
    console.print(latency)

    one = _runs_per_second(args.runs, 1, args.device)
    many = _runs_per_second(args.runs, args.workers, args.device)
    scale = Table(title=f"{SCENARIO.name}, {args.runs} runs, in process, one GPU")
    for column in ("workers", "runs/s", "vs 1 worker"):
        scale.add_column(column, justify="right")
    scale.add_row("1", f"{one:.2f}", "1.00x")
    scale.add_row(str(args.workers), f"{many:.2f}", f"{many / one:.2f}x")
    console.print(scale)
    imgsz = ServerConfig().imgsz
    direct_ms = measured.get(("detect", imgsz)) or _latency_ms("detect", args.device, images, imgsz)
    per_run_ms = 1000 / one
    console.print(
        f"overhead: {per_run_ms:.1f} ms per run (1 worker) / {direct_ms:.2f} ms per detection at {imgsz} px "
        f"= {per_run_ms / direct_ms:.1f}x"
    )


if __name__ == "__main__":
    main()
