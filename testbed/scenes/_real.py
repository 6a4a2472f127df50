"""Real images: assets shipped inside installed packages and a user's folder.

Ground truth is read where labels lie beside the images: a COCO JSON file in
the folder, or YOLO ``.txt`` files (boxes or polygons) with the images' stems.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pycocotools import mask as coco_mask

from testbed._errors import TestbedError
from testbed.imaging import load_image
from testbed.scenes._types import GroundTruthObject, Scene, tight_box

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def packaged_images() -> dict[str, Path]:
    """Return the sample images shipped inside installed packages, by name (e.g. ``bus.jpg``)."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        return {}
    assets = Path(spec.origin).parent / "assets"
    return {p.name: p for p in sorted(assets.glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}


def load_scene(path: str | Path) -> Scene:
    """Load one real image as a scene without ground truth."""
    image = load_image(path)
    image.setflags(write=False)
    return Scene(image=image, objects=(), source=f"file:{Path(path).name}", class_names=())


def load_image_folder(folder: str | Path) -> list[Scene]:
    """Load every image in ``folder``, with ground truth from COCO JSON or YOLO txt labels where present.

    Raises:
        TestbedError: the folder is missing or has no images, or a label file is malformed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise TestbedError(f"{root}: not a folder")
    images = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise TestbedError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    coco_files = sorted(root.glob("*.json"))
    if coco_files:
        return _load_with_coco(images, coco_files[0])
    names = _yolo_class_names(root)
    return [_load_with_yolo(path, names) for path in images]


def _load_with_coco(images: list[Path], annotation_file: Path) -> list[Scene]:
    try:
        data = json.loads(annotation_file.read_text())
        categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        by_file = {str(i["file_name"]).split("/")[-1]: i for i in data["images"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TestbedError(f"{annotation_file}: not a COCO annotation file ({error})") from None
    class_names = tuple(categories[k] for k in sorted(categories))
    annotations: dict[int, list[dict[str, Any]]] = {}
    for ann in data.get("annotations", []):
        annotations.setdefault(int(ann["image_id"]), []).append(ann)
    scenes = []
    for path in images:
        image = load_image(path)
        image.setflags(write=False)
        info = by_file.get(path.name)
        objects: list[GroundTruthObject] = []
        for index, ann in enumerate(annotations.get(int(info["id"]), []) if info else []):
            where = f"{annotation_file}: annotation {index} of {path.name}"
            try:
                name = categories[int(ann["category_id"])]
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (KeyError, ValueError, TypeError) as error:
                raise TestbedError(f"{where}: {error}") from None
            mask = _coco_segmentation_mask(ann.get("segmentation"), image.shape[0], image.shape[1])
            objects.append(
                GroundTruthObject(
                    class_id=class_names.index(name), class_name=name, box_xyxy=(x, y, x + w, y + h), mask=mask
                )
            )
        scenes.append(Scene(image=image, objects=tuple(objects), source=f"file:{path.name}", class_names=class_names))
    return scenes


def _coco_segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    if not segmentation:
        return None
    if isinstance(segmentation, list):
        rles = coco_mask.frPyObjects(segmentation, height, width)
        rle = coco_mask.merge(rles)
    elif isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    mask = np.asarray(coco_mask.decode(rle), dtype=bool)
    mask.setflags(write=False)
    return mask


def _yolo_class_names(root: Path) -> tuple[str, ...]:
    classes_txt = root / "classes.txt"
    if classes_txt.exists():
        return tuple(line.strip() for line in classes_txt.read_text().splitlines() if line.strip())
    for candidate in (root / "data.yaml", root.parent / "data.yaml"):
        if candidate.exists():
            names = (yaml.safe_load(candidate.read_text()) or {}).get("names", {})
            if isinstance(names, dict):
                return tuple(str(names[k]) for k in sorted(names))
            return tuple(str(n) for n in names)
    return ()


def _load_with_yolo(path: Path, names: tuple[str, ...]) -> Scene:
    image = load_image(path)
    image.setflags(write=False)
    height, width = image.shape[:2]
    label_file = path.with_suffix(".txt")
    if not label_file.exists() and path.parent.name == "images":
        label_file = path.parent.parent / "labels" / f"{path.stem}.txt"
    objects: list[GroundTruthObject] = []
    if label_file.exists():
        for line_no, line in enumerate(label_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values = [float(v) for v in line.split()]
            except ValueError:
                raise TestbedError(f"{label_file}:{line_no}: not numbers") from None
            class_id = int(values[0])
            coords = values[1:]
            name = names[class_id] if class_id < len(names) else f"class_{class_id}"
            if len(coords) == 4:
                cx, cy, w, h = coords
                box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
                objects.append(GroundTruthObject(class_id=class_id, class_name=name, box_xyxy=box))
            elif len(coords) >= 6 and len(coords) % 2 == 0:
                polygon = np.array(coords, dtype=np.float64).reshape(-1, 2) * (width, height)
                rle = coco_mask.frPyObjects([polygon.ravel().tolist()], height, width)
                mask = coco_mask.decode(coco_mask.merge(rle)).astype(bool)
                if not mask.any():
                    continue
                mask.setflags(write=False)
                objects.append(
                    GroundTruthObject(class_id=class_id, class_name=name, box_xyxy=tight_box(mask), mask=mask)
                )
            else:
                raise TestbedError(
                    f"{label_file}:{line_no}: expected 'class cx cy w h' or 'class x1 y1 x2 y2 x3 y3 ...'"
                )
    return Scene(image=image, objects=tuple(objects), source=f"file:{path.name}", class_names=names)
