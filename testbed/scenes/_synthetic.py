"""Seeded synthetic scenes of simple shapes with exact ground truth.

The shape world is designed so a nano YOLO model converges in minutes on two
CPU cores: four classes with distinct geometry, saturated object colours on
low-saturation backgrounds, and thin or tiny distractors that are not objects.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from testbed.scenes._types import GroundTruthObject, Scene, tight_box

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""The synthetic world's classes, in class-id order (shared with the shipped weights)."""

_MAX_PLACEMENT_ATTEMPTS = 60
_MIN_VISIBLE_FRACTION = 0.6


class SceneSpec(BaseModel):
    """Parameters of the synthetic scene generator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(default=320, ge=64, le=4096)
    """Image width in pixels."""
    height: int = Field(default=240, ge=64, le=4096)
    """Image height in pixels (not equal to the width by default, so swapped axes are detectable)."""
    min_objects: int = Field(default=1, ge=0, le=50)
    """Fewest objects to place."""
    max_objects: int = Field(default=5, ge=0, le=50)
    """Most objects to place (fewer if they do not fit under the overlap limit)."""
    min_size: int = Field(default=28, ge=8)
    """Smallest object extent in pixels."""
    max_size: int = Field(default=72, ge=8)
    """Largest object extent in pixels."""
    max_overlap: float = Field(default=0.0, ge=0.0, le=0.9)
    """Largest IoU allowed between two objects' boxes; above 0 later objects may occlude earlier ones."""
    classes: tuple[str, ...] = SHAPE_CLASSES
    """Which shape classes to draw (a subset of the world's classes)."""
    background: Literal["noise", "gradient", "texture", "mixed"] = "mixed"
    """Background style; ``mixed`` picks one per scene."""
    noise_sigma: float = Field(default=6.0, ge=0.0, le=64.0)
    """Standard deviation of the pixel noise added to the whole image."""
    max_distractors: int = Field(default=4, ge=0, le=50)
    """Most thin lines and specks drawn as non-objects."""

    @model_validator(mode="after")
    def _check_ranges(self) -> SceneSpec:
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) exceeds max_objects ({self.max_objects})")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) exceeds max_size ({self.max_size})")
        if self.max_size > min(self.width, self.height) - 4:
            raise ValueError(f"max_size ({self.max_size}) does not fit a {self.width}x{self.height} image")
        unknown = [c for c in self.classes if c not in SHAPE_CLASSES]
        if unknown or not self.classes:
            raise ValueError(f"classes must be a non-empty subset of {list(SHAPE_CLASSES)}, got {list(self.classes)}")
        return self


def generate_scene(spec: SceneSpec, seed: int | np.random.SeedSequence) -> Scene:
    """Draw one scene. The same spec and seed give identical image bytes and ground truth."""
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.default_rng(sequence)
    h, w = spec.height, spec.width

    image = _background(spec, rng)
    _draw_distractors(image, spec, rng)

    target_count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    placed: list[tuple[str, np.ndarray, tuple[float, float, float, float], tuple[int, int, int]]] = []
    attempts = 0
    while len(placed) < target_count and attempts < _MAX_PLACEMENT_ATTEMPTS * max(target_count, 1):
        attempts += 1
        class_name = spec.classes[int(rng.integers(len(spec.classes)))]
        size = float(rng.uniform(spec.min_size, spec.max_size))
        cx = float(rng.uniform(size / 2 + 2, w - size / 2 - 2))
        cy = float(rng.uniform(size / 2 + 2, h - size / 2 - 2))
        angle = float(rng.uniform(0.0, 2 * math.pi))
        mask = _shape_mask(class_name, (h, w), cx, cy, size, angle)
        if mask.sum() < 16:
            continue
        box = tight_box(mask)
        if any(_box_iou(box, other_box) > spec.max_overlap for _, _, other_box, _ in placed):
            continue
        placed.append((class_name, mask, box, _object_colour(rng)))

    objects: list[GroundTruthObject] = []
    drawn: list[tuple[np.ndarray, tuple[int, int, int]]] = []
    occluders = np.zeros((h, w), dtype=bool)
    for class_name, mask, _, colour in reversed(placed):  # topmost first, so occlusion is known
        visible = mask & ~occluders
        if visible.sum() < _MIN_VISIBLE_FRACTION * mask.sum():
            continue  # mostly hidden: leave it out entirely rather than draw an unfair object
        occluders |= mask
        drawn.append((mask, colour))
        objects.append(
            GroundTruthObject(
                class_id=SHAPE_CLASSES.index(class_name),
                class_name=class_name,
                box_xyxy=tight_box(visible),
                mask=visible,
            )
        )
    for mask, colour in reversed(drawn):  # paint bottom-up so the topmost colour wins
        image[mask] = colour
    objects.reverse()

    if spec.noise_sigma > 0:
        noise = rng.normal(0.0, spec.noise_sigma, size=image.shape)
        image = np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    for obj in objects:
        if obj.mask is not None:
            obj.mask.setflags(write=False)
    image.setflags(write=False)
    source = f"synthetic:entropy={sequence.entropy},spawn_key={list(sequence.spawn_key)}"
    return Scene(image=image, objects=tuple(objects), source=source, class_names=SHAPE_CLASSES)


def _background(spec: SceneSpec, rng: np.random.Generator) -> np.ndarray:
    h, w = spec.height, spec.width
    style = spec.background
    if style == "mixed":
        style = ("noise", "gradient", "texture")[int(rng.integers(3))]
    base = _muted_colour(rng)
    if style == "noise":
        image = np.broadcast_to(np.array(base, dtype=np.float64), (h, w, 3)).copy()
        image += rng.normal(0.0, 18.0, size=(h, w, 3))
    elif style == "gradient":
        other = np.array(_muted_colour(rng), dtype=np.float64)
        t = np.linspace(0.0, 1.0, w if rng.integers(2) else h)
        ramp = t[None, :, None] if t.size == w else t[:, None, None]
        image = np.array(base, dtype=np.float64) * (1 - ramp) + other * ramp
        image = np.broadcast_to(image, (h, w, 3)).copy()
    else:
        coarse = rng.normal(0.0, 1.0, size=(max(h // 16, 2), max(w // 16, 2), 1))
        blotches = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        if blotches.ndim == 2:
            blotches = blotches[:, :, None]
        image = np.array(base, dtype=np.float64) + 28.0 * blotches
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_distractors(image: np.ndarray, spec: SceneSpec, rng: np.random.Generator) -> None:
    h, w = spec.height, spec.width
    for _ in range(int(rng.integers(0, spec.max_distractors + 1))):
        colour = tuple(int(c) for c in _object_colour(rng))
        if rng.integers(2):
            p1 = (int(rng.integers(w)), int(rng.integers(h)))
            p2 = (int(rng.integers(w)), int(rng.integers(h)))
            cv2.line(image, p1, p2, colour, thickness=1, lineType=cv2.LINE_8)
        else:
            centre = (int(rng.integers(w)), int(rng.integers(h)))
            cv2.circle(image, centre, int(rng.integers(1, 4)), colour, thickness=-1, lineType=cv2.LINE_8)


def _shape_mask(class_name: str, shape: tuple[int, int], cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    canvas = np.zeros(shape, dtype=np.uint8)
    if class_name == "circle":
        cv2.circle(canvas, (round(cx), round(cy)), round(size / 2), 1, thickness=-1, lineType=cv2.LINE_8)
    else:
        cv2.fillPoly(canvas, [_polygon(class_name, cx, cy, size, angle)], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


def _polygon(class_name: str, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    r = size / 2
    if class_name == "square":
        side = size / math.sqrt(2)
        local = [(-side / 2, -side / 2), (side / 2, -side / 2), (side / 2, side / 2), (-side / 2, side / 2)]
    elif class_name == "triangle":
        local = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif class_name == "cross":
        arm, half = r, r / 3
        local = [
            (-half, -arm), (half, -arm), (half, -half), (arm, -half), (arm, half), (half, half),
            (half, arm), (-half, arm), (-half, half), (-arm, half), (-arm, -half), (-half, -half),
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown shape class {class_name!r}")
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    points = [(cx + x * cos_a - y * sin_a, cy + x * sin_a + y * cos_a) for x, y in local]
    return np.round(np.array(points)).astype(np.int32)


def _object_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    hue = float(rng.uniform(0, 180))
    saturation = float(rng.uniform(170, 255))
    value = float(rng.uniform(170, 255))
    hsv = np.array([[[hue, saturation, value]]], dtype=np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    grey = float(rng.uniform(50, 200))
    tint = rng.uniform(-20, 20, size=3)
    rgb = np.clip(grey + tint, 0, 255)
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
