"""Scenes and their ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from testbed._arrays import BoolMask, RGBImage

__all__ = ["BoolMask", "GroundTruthObject", "RGBImage", "Scene", "tight_box"]


@dataclass(frozen=True)
class GroundTruthObject:
    """One object of a scene, with everything a validator may score against.

    ``box_xyxy`` is in the testbed's canonical convention: pixel units, top-left
    origin, ``(x_min, y_min, x_max, y_max)`` with pixel-edge coordinates, so a
    pixel at column ``i`` spans ``[i, i + 1)`` and a tight box around a mask is
    ``(min_col, min_row, max_col + 1, max_row + 1)``.
    """

    class_id: int
    class_name: str
    box_xyxy: tuple[float, float, float, float]
    mask: BoolMask | None = field(repr=False, default=None)
    """The object's visible pixels; ``None`` where only a box is known (box-only labels)."""


@dataclass(frozen=True)
class Scene:
    """An image with its ground truth. ``source`` says where it came from."""

    image: RGBImage = field(repr=False)
    objects: tuple[GroundTruthObject, ...]
    source: str
    class_names: tuple[str, ...]

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def has_ground_truth(self) -> bool:
        return self.source.startswith("synthetic:") or bool(self.objects)

    @property
    def nbytes(self) -> int:
        """Bytes held by the image and the objects' masks."""
        return self.image.nbytes + sum(obj.mask.nbytes for obj in self.objects if obj.mask is not None)

    def copy(self) -> Scene:
        """An equal scene owning its own arrays, so that changing one never changes the other."""
        objects = tuple(obj if obj.mask is None else replace(obj, mask=obj.mask.copy()) for obj in self.objects)
        return replace(self, image=self.image.copy(), objects=objects)


def tight_box(mask: BoolMask) -> tuple[float, float, float, float]:
    """Return the canonical pixel-edge xyxy box enclosing ``mask``.

    Raises:
        ValueError: if the mask is empty.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("cannot box an empty mask")
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
