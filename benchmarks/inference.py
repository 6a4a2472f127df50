"""Per-image latency of the shipped detector and segmenter at 320 and 640 px, and the cache-hit speed-up.

Everything is measured in this one run on this machine: the cache speed-up is
the ratio of uncached to cached latency over the same images and parameters.

    .venv/bin/python benchmarks/inference.py [--images 20] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table

from testbed._seeding import derive_seed_sequence
from testbed.scenes import SceneSpec, generate_scene
from testbed.vision import InferenceCache, InferenceParams, InferenceResult, VisionModel


def _median_ms(model: VisionModel, images: list, params: InferenceParams) -> float:  # type: ignore[type-arg]
    samples = []
    for image in images:
        started = time.perf_counter()
        model.predict(image, params)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    spec = SceneSpec(width=640, height=480, min_size=56, max_size=144)
    images = [generate_scene(spec, derive_seed_sequence(0, "bench", i)).image for i in range(args.images)]
    table = Table(title=f"inference latency, median of {args.images} images of 640x480")
    for column in ("model", "imgsz", "uncached ms/img", "cached ms/img", "cache speed-up"):
        table.add_column(column, justify="right" if column != "model" else "left")
    device = "?"
    for task in ("detect", "segment"):
        cache: InferenceCache[InferenceResult] = InferenceCache(max_entries=10_000, max_bytes=8 * 1024**3)
        model = VisionModel.shipped(task, device=args.device, cache=cache)
        device = model.device
        for imgsz in (320, 640):
            params = InferenceParams(imgsz=imgsz)
            model.cache = None
            _median_ms(model, images[:2], params)  # warm-up: first calls build the predictor
            uncached = _median_ms(model, images, params)
            model.cache = cache
            _median_ms(model, images, params)  # fill
            cached = _median_ms(model, images, params)
            table.add_row(task, str(imgsz), f"{uncached:.1f}", f"{cached:.3f}", f"{uncached / cached:.0f}x")
    console = Console()
    console.print(table)
    console.print(f"device: {device}")


if __name__ == "__main__":
    main()
