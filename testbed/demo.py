"""``testbed demo``: one seeded scene through detection and segmentation, scored against ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from testbed._annotate import annotate
from testbed._seeding import derive_seed_sequence
from testbed.conventions import mask_iou
from testbed.imaging import encode_png
from testbed.scenes import Scene, SceneSpec, generate_scene, load_scene
from testbed.vision import InferenceParams, InferenceResult, VisionModel, match_predictions, recall


@dataclass(frozen=True)
class DemoReport:
    """Where the demo wrote its outputs, and its headline numbers."""

    png: Path
    json: Path
    ground_truth_objects: int
    detection_recall: float | None
    """Share of ground-truth objects found at IoU >= 0.5 (None for a real image without labels)."""
    segmentation_recall: float | None
    mean_mask_iou: float | None


def run_demo(
    *,
    seed: int = 0,
    out_dir: Path = Path("demo-output"),
    device: str = "auto",
    detector: Path | None = None,
    segmenter: Path | None = None,
    image: Path | None = None,
    imgsz: int = 320,
) -> DemoReport:
    """Generate a scene (or load ``image``), run both models and write ``demo.png`` and ``demo.json``."""
    scene = load_scene(image) if image is not None else generate_scene(SceneSpec(), derive_seed_sequence(seed, "demo"))
    det_model = VisionModel(detector, device=device) if detector else VisionModel.shipped("detect", device=device)
    seg_model = VisionModel(segmenter, device=device) if segmenter else VisionModel.shipped("segment", device=device)
    params = InferenceParams(imgsz=imgsz)
    detections = det_model.predict(scene.image, params)
    segmentation = seg_model.predict(scene.image, params)

    det_records, det_recall = _score(scene, detections)
    seg_records, seg_recall = _score(scene, segmentation)
    mask_ious = [r["mask_iou"] for r in seg_records if r.get("mask_iou") is not None]
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "demo.png"
    png.write_bytes(encode_png(annotate(scene, detections, segmentation)))
    document = {
        "seed": seed,
        "scene": {
            "source": scene.source,
            "width": scene.width,
            "height": scene.height,
            "ground_truth": [
                {
                    "class": o.class_name,
                    "box_xyxy": list(o.box_xyxy),
                    "area": int(o.mask.sum()) if o.mask is not None else None,
                }
                for o in scene.objects
            ],
        },
        "box_convention": "xyxy, pixel, top-left origin, pixel-edge coordinates",
        "models": {
            "detect": {
                "weights": str(det_model.weights_path),
                "sha256": det_model.weights_sha256,
                "device": det_model.device,
            },
            "segment": {
                "weights": str(seg_model.weights_path),
                "sha256": seg_model.weights_sha256,
                "device": seg_model.device,
            },
        },
        "params": {"imgsz": params.imgsz, "conf": params.conf, "iou": params.iou},
        "detections": det_records,
        "segments": seg_records,
        "summary": {
            "ground_truth_objects": len(scene.objects),
            "detection_recall_iou50": det_recall,
            "segmentation_recall_iou50": seg_recall,
            "mean_mask_iou": float(np.mean(mask_ious)) if mask_ious else None,
        },
    }
    json_path = out_dir / "demo.json"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    return DemoReport(
        png=png,
        json=json_path,
        ground_truth_objects=len(scene.objects),
        detection_recall=det_recall,
        segmentation_recall=seg_recall,
        mean_mask_iou=document["summary"]["mean_mask_iou"],  # type: ignore[index]
    )


def _score(scene: Scene, result: InferenceResult) -> tuple[list[dict[str, Any]], float | None]:
    gt_boxes = np.array([o.box_xyxy for o in scene.objects], dtype=np.float64).reshape(-1, 4)
    gt_classes = np.array([o.class_id for o in scene.objects], dtype=np.int64)
    matches = match_predictions(gt_boxes, gt_classes, result.boxes_xyxy, result.class_ids)
    records: list[dict[str, Any]] = []
    for index in range(len(result)):
        match = matches[index] if scene.has_ground_truth else None
        record: dict[str, Any] = {
            "class": result.label(index),
            "score": round(float(result.scores[index]), 4),
            "box_xyxy": [round(float(v), 2) for v in result.boxes_xyxy[index]],
            "ground_truth": match.ground_truth if match else None,
            "iou": round(match.iou, 4) if match else None,
        }
        if result.masks is not None:
            gt_mask = scene.objects[match.ground_truth].mask if match and match.ground_truth is not None else None
            record["mask_area"] = int(result.masks[index].sum())
            record["mask_iou"] = round(mask_iou(result.masks[index], gt_mask), 4) if gt_mask is not None else None
        records.append(record)
    return records, (recall(matches, len(scene.objects)) if scene.has_ground_truth else None)
