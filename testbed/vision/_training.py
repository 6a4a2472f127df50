"""Train and evaluate the shipped shape models on seeded synthetic scenes.

``testbed models train`` runs ``train_shipped_models``: the detector from
scratch, then the segmenter initialised from the detector (it shares the
backbone and converges much faster than from scratch).
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed._seeding import derive_int_seed
from testbed.imaging import encode_png
from testbed.vision._dataset import TRAINING_SCENE_SPEC, Task, export_yolo_dataset, split_scenes, yolo_label_lines
from testbed.vision._offline import import_ultralytics
from testbed.vision._weights import (
    SHIPPED_MODELS,
    WEIGHTS_DIR,
    ShippedModel,
    WeightsManifest,
    file_sha256,
    read_manifest,
    write_manifest,
)

ARCHITECTURES: dict[Task, str] = {"detect": "yolo11n.yaml", "segment": "yolo11n-seg.yaml"}
REPRODUCIBILITY_TOLERANCE = 0.05


@dataclass(frozen=True)
class TrainingPlan:
    """What ``testbed models train`` does; the defaults are what produced the shipped weights."""

    seed: int = 0
    train_images: int = 480
    val_images: int = 60
    detect_epochs: int = 30
    segment_epochs: int = 15
    imgsz: int = 320
    batch: int = 16
    eval_images: int = 100
    device: str = "cpu"

    def command(self, task: Task | str = "all") -> str:
        return (
            f"testbed models train --task {task} --seed {self.seed} --train-images {self.train_images}"
            f" --val-images {self.val_images} --detect-epochs {self.detect_epochs}"
            f" --segment-epochs {self.segment_epochs} --imgsz {self.imgsz} --batch {self.batch}"
            f" --eval-images {self.eval_images} --device {self.device}"
        )


def train_model(
    *,
    task: Task,
    plan: TrainingPlan,
    work_dir: Path,
    output: Path,
    init_weights: Path | None = None,
    quiet: bool = False,
) -> float:
    """Train one model on freshly generated synthetic data and copy its best weights to ``output``.

    Returns:
        Training wall time in seconds.
    """
    ultralytics = import_ultralytics(quiet=quiet)
    data_file = export_yolo_dataset(
        work_dir / f"data-{task}",
        spec=TRAINING_SCENE_SPEC,
        seed=plan.seed,
        train_images=plan.train_images,
        val_images=plan.val_images,
        task=task,
    )
    model = ultralytics.YOLO(ARCHITECTURES[task], task=task)
    if init_weights is not None:
        model.load(str(init_weights))
    epochs = plan.detect_epochs if task == "detect" else plan.segment_epochs
    started = time.perf_counter()
    model.train(
        data=str(data_file),
        epochs=epochs,
        imgsz=plan.imgsz,
        batch=plan.batch,
        device=plan.device,
        workers=2,
        seed=derive_int_seed(plan.seed, "train", task),
        deterministic=True,
        pretrained=init_weights is not None,
        amp=False,
        plots=False,
        project=str(work_dir / "runs"),
        name=task,
        exist_ok=True,
        verbose=not quiet,
    )
    elapsed = time.perf_counter() - started
    best = work_dir / "runs" / task / "weights" / "best.pt"
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, output)
    return elapsed


def evaluate_model(
    weights: Path, *, task: Task, seed: int, images: int, imgsz: int, device: str = "cpu", quiet: bool = True
) -> dict[str, float]:
    """Measure box (and mask) mAP on ``images`` held-out scenes that no training split used."""
    ultralytics = import_ultralytics(quiet=quiet)
    with tempfile.TemporaryDirectory(prefix="testbed-eval-") as tmp:
        root = Path(tmp)
        export_yolo_dataset(root / "data", spec=TRAINING_SCENE_SPEC, seed=seed, train_images=0, val_images=0, task=task)
        # The held-out split comes from its own seed stream ("heldout"), never used in training.

        image_dir = root / "data" / "images" / "val"
        label_dir = root / "data" / "labels" / "val"
        for index, scene in enumerate(split_scenes(TRAINING_SCENE_SPEC, seed, "heldout", images)):
            (image_dir / f"heldout_{index:05d}.png").write_bytes(encode_png(scene.image))
            (label_dir / f"heldout_{index:05d}.txt").write_text(
                "".join(f"{line}\n" for line in yolo_label_lines(scene, task))
            )
        model = ultralytics.YOLO(str(weights), task=task)
        metrics: Any = model.val(
            data=str(root / "data" / "data.yaml"),
            imgsz=imgsz,
            batch=16,
            device=device,
            plots=False,
            project=str(root / "runs"),
            name="val",
            verbose=not quiet,
        )
    results = {"box_map50": float(metrics.box.map50), "box_map50_95": float(metrics.box.map)}
    if task == "segment":
        results["mask_map50"] = float(metrics.seg.map50)
        results["mask_map50_95"] = float(metrics.seg.map)
    return results


def train_shipped_models(
    plan: TrainingPlan, *, tasks: tuple[Task, ...] = ("detect", "segment"), weights_dir: Path = WEIGHTS_DIR
) -> WeightsManifest:
    """Train the requested shipped models, evaluate them on held-out scenes and update the manifest."""
    import torch

    ultralytics = import_ultralytics(quiet=False)
    manifest = read_manifest(weights_dir / "manifest.json")
    models = dict(manifest.models)
    with tempfile.TemporaryDirectory(prefix="testbed-train-") as tmp:
        for task in tasks:
            output = weights_dir / SHIPPED_MODELS[task]
            init = weights_dir / SHIPPED_MODELS["detect"] if task == "segment" else None
            if init is not None and not init.exists():
                raise FileNotFoundError(f"{init}: train the detector first (--task detect)")
            seconds = train_model(task=task, plan=plan, work_dir=Path(tmp), output=output, init_weights=init)
            metrics = evaluate_model(
                output, task=task, seed=plan.seed, images=plan.eval_images, imgsz=plan.imgsz, device=plan.device
            )
            models[task] = ShippedModel(
                file=output.name,
                task=task,
                architecture=ARCHITECTURES[task],
                sha256=file_sha256(output),
                size_bytes=output.stat().st_size,
                command=plan.command(task),
                seed=plan.seed,
                train_images=plan.train_images,
                val_images=plan.val_images,
                epochs=plan.detect_epochs if task == "detect" else plan.segment_epochs,
                imgsz=plan.imgsz,
                init_weights=init.name if init is not None else None,
                metrics={k: round(v, 4) for k, v in metrics.items()},
                eval_images=plan.eval_images,
                train_seconds=round(seconds, 1),
                trained_on=(
                    f"{plan.device} ({platform.processor() or platform.machine()}), torch {torch.__version__},"
                    f" ultralytics {ultralytics.__version__}"
                ),
                reproducibility_tolerance=REPRODUCIBILITY_TOLERANCE,
            )
            updated = WeightsManifest(models=models)
            write_manifest(updated, weights_dir / "manifest.json")
    return WeightsManifest(models=models)
