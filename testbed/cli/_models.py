"""``testbed models``: train, evaluate and list the shipped weights."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from testbed._seeding import derive_seed_sequence
from testbed.scenes import generate_scene
from testbed.vision import TRAINING_SCENE_SPEC, ShippedModel, VisionModel, match_predictions, read_manifest
from testbed.vision._dataset import Task
from testbed.vision._training import TrainingPlan, evaluate_model, train_shipped_models

_DEFAULT = TrainingPlan()


@click.group()
def models() -> None:
    """Train, evaluate and list the project's own YOLO weights."""


@models.command()
@click.option("--task", type=click.Choice(["all", "detect", "segment"]), default="all", show_default=True)
@click.option("--seed", type=int, default=_DEFAULT.seed, show_default=True)
@click.option("--train-images", type=int, default=_DEFAULT.train_images, show_default=True)
@click.option("--val-images", type=int, default=_DEFAULT.val_images, show_default=True)
@click.option("--detect-epochs", type=int, default=_DEFAULT.detect_epochs, show_default=True)
@click.option("--segment-epochs", type=int, default=_DEFAULT.segment_epochs, show_default=True)
@click.option("--imgsz", type=int, default=_DEFAULT.imgsz, show_default=True)
@click.option("--batch", type=int, default=_DEFAULT.batch, show_default=True)
@click.option("--eval-images", type=int, default=_DEFAULT.eval_images, show_default=True)
@click.option("--device", default=_DEFAULT.device, show_default=True)
@click.option("--weights-dir", type=click.Path(path_type=Path), default=None, help="Where to write (default: shipped).")
def train(
    task: str,
    seed: int,
    train_images: int,
    val_images: int,
    detect_epochs: int,
    segment_epochs: int,
    imgsz: int,
    batch: int,
    eval_images: int,
    device: str,
    weights_dir: Path | None,
) -> None:
    """Train the detector (from scratch) and the segmenter (from the detector) on synthetic scenes."""
    plan = TrainingPlan(
        seed=seed,
        train_images=train_images,
        val_images=val_images,
        detect_epochs=detect_epochs,
        segment_epochs=segment_epochs,
        imgsz=imgsz,
        batch=batch,
        eval_images=eval_images,
        device=device,
    )
    tasks = ("detect", "segment") if task == "all" else (task,)
    kwargs = {"weights_dir": weights_dir} if weights_dir is not None else {}
    manifest = train_shipped_models(plan, tasks=tasks, **kwargs)  # type: ignore[arg-type]
    _print_manifest(manifest.models)


@models.command(name="eval")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the held-out scenes.")
@click.option("--images", type=int, default=100, show_default=True, help="Held-out scenes for mAP.")
@click.option("--recall-scenes", type=int, default=20, show_default=True, help="Fresh scenes for recall @ IoU 0.5.")
@click.option("--device", default="auto", show_default=True)
@click.option("--detector", type=click.Path(path_type=Path), default=None, help="Detection weights (default: shipped).")
@click.option(
    "--segmenter", type=click.Path(path_type=Path), default=None, help="Segmentation weights (default: shipped)."
)
def evaluate(
    seed: int, images: int, recall_scenes: int, device: str, detector: Path | None, segmenter: Path | None
) -> None:
    """Print box and mask mAP50 on held-out synthetic scenes, and recall at IoU 0.5 on fresh ones."""
    table = Table(title=f"held-out evaluation ({images} scenes for mAP, {recall_scenes} for recall; seed {seed})")
    for column in ("model", "box mAP50", "box mAP50-95", "mask mAP50", "recall@0.5"):
        table.add_column(column, justify="right" if column != "model" else "left")
    pairs: tuple[tuple[Task, Path | None], ...] = (("detect", detector), ("segment", segmenter))
    for task, override in pairs:
        model = VisionModel(override, device=device) if override else VisionModel.shipped(task, device=device)
        metrics = evaluate_model(
            model.weights_path, task=task, seed=seed, images=images, imgsz=320, device=model.device
        )
        found = total = 0
        for index in track(range(recall_scenes), description=f"recall ({task})", transient=True):
            scene = generate_scene(TRAINING_SCENE_SPEC, derive_seed_sequence(seed, "recall", index))
            result = model.predict(scene.image)
            gt = np.array([o.box_xyxy for o in scene.objects]).reshape(-1, 4)
            matches = match_predictions(
                gt, np.array([o.class_id for o in scene.objects]), result.boxes_xyxy, result.class_ids
            )
            found += sum(m.ground_truth is not None for m in matches)
            total += len(scene.objects)
        table.add_row(
            f"{task} ({model.weights_path.name})",
            f"{metrics['box_map50']:.3f}",
            f"{metrics['box_map50_95']:.3f}",
            f"{metrics['mask_map50']:.3f}" if "mask_map50" in metrics else "-",
            f"{found / total:.3f} ({found}/{total})" if total else "n/a",
        )
    Console().print(table)


@models.command(name="list")
def list_models() -> None:
    """List the shipped weights, their hashes and their recorded metrics."""
    _print_manifest(read_manifest().models)


def _print_manifest(entries: dict[str, ShippedModel]) -> None:
    table = Table(title="shipped weights")
    for column in ("task", "file", "size", "sha256", "epochs", "metrics"):
        table.add_column(column)
    for task, entry in entries.items():
        metrics = ", ".join(f"{name}={value:.3f}" for name, value in entry.metrics.items())
        table.add_row(
            task, entry.file, f"{entry.size_bytes / 1e6:.1f} MB", entry.sha256[:12], str(entry.epochs), metrics
        )
    Console().print(table)
