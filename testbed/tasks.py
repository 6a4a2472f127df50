"""Task checkers: did the workflow achieve what the scenario asked, judged against ground truth?

Checkers read what servers returned (or were sent) through the servers' truth
manifests, so they measure the pipeline's outcome, never what a server merely
declares. A model that misses an object fails a task; that is detection
quality, not a protocol violation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from testbed.agent import NodeResult
from testbed.conventions import (
    ImageSize,
    MaskResolution,
    box_iou,
    decode_masks,
    mask_iou,
    resize_masks,
    to_canonical,
)
from testbed.imaging import decode_base64_image
from testbed.protocol import SemanticRole, ToolTruth
from testbed.registry import registry, task_checker
from testbed.scenes import Scene
from testbed.transport import Connection
from testbed.workflow import BindingError, read_path

MATCH_IOU = 0.5


def check_task(
    kind: str,
    *,
    nodes: tuple[str, ...],
    class_name: str | None,
    scene: Scene,
    results: dict[str, NodeResult],
    connections: dict[str, Connection],
) -> tuple[bool | None, str]:
    """Check one run's task over the results of ``nodes`` (merged); returns (passed, a one-line explanation).

    ``none`` tasks, and nodes whose servers have no truth manifest, return ``(None, reason)``.
    """
    if kind == "none" or not nodes:
        return None, "no task"
    readings: list[tuple[NodeResult, ToolTruth]] = []
    for node in nodes:
        result = results.get(node)
        if result is None:
            return False, f"node {node!r} did not run"
        if not result.calls:
            continue  # a fan-out over an empty list contributes nothing
        connection = connections.get(result.server)
        if connection is None or connection.truth is None:
            return None, f"node {node!r}: no truth manifest for server {result.server!r}; task not checkable"
        readings.append((result, connection.truth.tool(result.tool)))
    size = ImageSize(width=scene.width, height=scene.height)
    checker = registry().task(kind).check
    try:
        return checker(readings, scene, size, class_name=class_name)
    except (BindingError, ValueError, KeyError, TypeError) as error:
        return False, f"output unreadable through the truth manifest ({error})"


Readings = list[tuple[NodeResult, ToolTruth]]
"""What a task checker reads: each checked node's result, with the truth manifest of the tool it called."""


@task_checker("none")
def _no_task(readings: Readings, scene: Scene, size: ImageSize, *, class_name: str | None) -> tuple[bool | None, str]:
    return None, "no task"


def _gt_boxes(scene: Scene, class_name: str | None = None) -> np.ndarray:
    boxes = [o.box_xyxy for o in scene.objects if class_name is None or o.class_name == class_name]
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _failure(readings: Readings) -> str | None:
    for result, _ in readings:
        for call in result.calls:
            if call.outcome != "ok":
                return f"node {result.node!r} failed ({call.outcome}: {call.error})"
    return None


@task_checker("detect_all")
def _detect_all(readings: Readings, scene: Scene, size: ImageSize, *, class_name: str | None) -> tuple[bool, str]:
    failure = _failure(readings)
    if failure:
        return False, failure
    boxes = [np.zeros((0, 4))]
    for result, truth in readings:
        if truth.box_convention is None:
            raise ValueError(f"tool {truth.name} has no box convention")
        raw = read_path(result.payload, truth.paths[SemanticRole.BOUNDING_BOX])
        boxes.append(to_canonical(np.array(raw, dtype=np.float64).reshape(-1, 4), truth.box_convention, size))
    found = _matched(_gt_boxes(scene), np.concatenate(boxes))
    return found == len(scene.objects), f"found {found}/{len(scene.objects)} objects at IoU >= {MATCH_IOU}"


@task_checker("crop_every")
def _crop_every(readings: Readings, scene: Scene, size: ImageSize, *, class_name: str | None) -> tuple[bool, str]:
    class_name = class_name or ""
    crops = [np.zeros((0, 4))]
    count = 0
    for result, truth in readings:
        if truth.box_convention is None:
            raise ValueError(f"tool {truth.name} has no box convention")
        argument = truth.inputs[SemanticRole.BOUNDING_BOX]
        sent = [
            call.arguments[argument] for call in result.calls if call.outcome == "ok" and argument in call.arguments
        ]
        count += len(sent)
        crops.append(to_canonical(np.array(sent, dtype=np.float64).reshape(-1, 4), truth.box_convention, size))
    wanted = _gt_boxes(scene, class_name)
    found = _matched(wanted, np.concatenate(crops))
    detail = f"cropped {found}/{len(wanted)} {class_name} objects at IoU >= {MATCH_IOU} ({count} crops)"
    return found == len(wanted), detail


@task_checker("segment_all")
def _segment_all(readings: Readings, scene: Scene, size: ImageSize, *, class_name: str | None) -> tuple[bool, str]:
    failure = _failure(readings)
    if failure:
        return False, failure
    masks: list[np.ndarray] = []
    for result, truth in readings:
        if truth.mask_encoding is None:
            raise ValueError(f"tool {truth.name} has no mask encoding")
        payload = read_path(result.payload, truth.paths[SemanticRole.MASK])
        if truth.mask_resolution is MaskResolution.MODEL:
            grid = _payload_grid(payload, truth)
            decoded = decode_masks(payload, truth.mask_encoding, grid, normalized_polygons=truth.normalized_polygons)
            masks.extend(unletterbox_masks(decoded, size))
        else:
            masks.extend(
                decode_masks(payload, truth.mask_encoding, size, normalized_polygons=truth.normalized_polygons)
            )
    found = 0
    for obj in scene.objects:
        if obj.mask is not None and any(mask_iou(mask, obj.mask) >= MATCH_IOU for mask in masks):
            found += 1
    return found == len(scene.objects), f"segmented {found}/{len(scene.objects)} objects at mask IoU >= {MATCH_IOU}"


def _payload_grid(payload: Any, truth: ToolTruth) -> ImageSize:
    if isinstance(payload, list) and payload and isinstance(payload[0], str):
        first = decode_base64_image(payload[0], what="mask")
        return ImageSize(width=first.shape[1], height=first.shape[0])
    raise ValueError(f"cannot tell the model grid of {truth.name}'s masks")


def unletterbox_masks(masks: np.ndarray, size: ImageSize) -> np.ndarray:
    """Map masks from a letterboxed model grid back to the image, as Ultralytics pads (centred)."""
    if masks.size == 0:
        return np.zeros((masks.shape[0], size.height, size.width), dtype=bool)
    grid_h, grid_w = masks.shape[1:]
    gain = min(grid_h / size.height, grid_w / size.width)
    pad_w = (grid_w - round(size.width * gain)) / 2
    pad_h = (grid_h - round(size.height * gain)) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    bottom, right = top + round(size.height * gain), left + round(size.width * gain)
    content = np.ascontiguousarray(masks[:, top:bottom, left:right])
    return resize_masks(content, size)


def _matched(truth_boxes: np.ndarray, predicted: np.ndarray) -> int:
    if len(truth_boxes) == 0 or len(predicted) == 0:
        return 0
    ious = box_iou(truth_boxes, predicted)
    return int((ious.max(axis=1) >= MATCH_IOU).sum())
