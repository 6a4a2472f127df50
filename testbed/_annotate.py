"""Draw ground truth and predictions on an image, with OpenCV's built-in fonts (no downloads)."""

from __future__ import annotations

import cv2
import numpy as np

from testbed._arrays import RGBImage
from testbed.scenes import Scene
from testbed.vision import InferenceResult

_GT_COLOUR = (40, 220, 40)
_PALETTE = ((255, 64, 64), (64, 128, 255), (255, 200, 0), (220, 0, 220), (0, 200, 200), (255, 128, 0))


def annotate(scene: Scene, detections: InferenceResult | None, segmentation: InferenceResult | None) -> RGBImage:
    """Return a copy of the scene's image with ground truth (green), boxes and mask overlays."""
    canvas = np.array(scene.image, copy=True)
    if segmentation is not None and segmentation.masks is not None:
        overlay = canvas.copy()
        for index, mask in enumerate(segmentation.masks):
            overlay[mask] = _PALETTE[int(segmentation.class_ids[index]) % len(_PALETTE)]
        canvas = np.asarray(cv2.addWeighted(overlay, 0.45, canvas, 0.55, 0.0), dtype=np.uint8)
    for obj in scene.objects:
        x1, y1, x2, y2 = (round(v) for v in obj.box_xyxy)
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), _GT_COLOUR, 1, lineType=cv2.LINE_8)
    if detections is not None:
        for index in range(len(detections)):
            colour = _PALETTE[int(detections.class_ids[index]) % len(_PALETTE)]
            x1, y1, x2, y2 = (round(float(v)) for v in detections.boxes_xyxy[index])
            cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), colour, 2, lineType=cv2.LINE_AA)
            text = f"{detections.label(index)} {detections.scores[index]:.2f}"
            cv2.putText(canvas, text, (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return canvas
