"""Export seeded synthetic scenes as a YOLO dataset (images, labels, data.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml

from testbed._seeding import derive_seed_sequence
from testbed.imaging import encode_png
from testbed.scenes import SHAPE_CLASSES, Scene, SceneSpec, generate_scene

Task = Literal["detect", "segment"]

TRAINING_SCENE_SPEC = SceneSpec(max_objects=6, max_overlap=0.1)
"""The scene distribution the shipped weights are trained on: the default world with mild overlap."""


def split_scenes(spec: SceneSpec, seed: int, split: str, count: int) -> list[Scene]:
    """Generate ``count`` scenes for a named split; splits never share a seed stream."""
    return [generate_scene(spec, derive_seed_sequence(seed, "dataset", split, index)) for index in range(count)]


def export_yolo_dataset(
    root: Path, *, spec: SceneSpec, seed: int, train_images: int, val_images: int, task: Task
) -> Path:
    """Write a YOLO-format dataset under ``root`` and return its ``data.yaml``.

    Detection labels are ``class cx cy w h``; segmentation labels are the
    object's outer contour as a normalized polygon.
    """
    for split, count in (("train", train_images), ("val", val_images)):
        image_dir = root / "images" / split
        label_dir = root / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for index, scene in enumerate(split_scenes(spec, seed, split, count)):
            stem = f"{split}_{index:05d}"
            (image_dir / f"{stem}.png").write_bytes(encode_png(scene.image))
            (label_dir / f"{stem}.txt").write_text("".join(f"{line}\n" for line in yolo_label_lines(scene, task)))
    data_file = root / "data.yaml"
    data = {
        "path": str(root.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(SHAPE_CLASSES)),
    }
    data_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_file


def yolo_label_lines(scene: Scene, task: Task) -> list[str]:
    """Return one YOLO label line per ground-truth object."""
    lines = []
    w, h = scene.width, scene.height
    for obj in scene.objects:
        if task == "detect" or obj.mask is None:
            x1, y1, x2, y2 = obj.box_xyxy
            values = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
        else:
            values = _outer_contour(obj.mask, w, h)
            if len(values) < 6:
                continue
        lines.append(f"{obj.class_id} " + " ".join(f"{v:.6f}" for v in values))
    return lines


def _outer_contour(mask: np.ndarray, width: int, height: int) -> list[float]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    largest = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    # Contour points are pixel centres; shift to pixel edges' frame and normalize.
    largest += 0.5
    largest /= (width, height)
    return [float(v) for v in np.clip(largest, 0.0, 1.0).ravel()]
