"""The built-in scene sources, registered like a plug-in's: ``synthetic`` shape scenes and ``images``.

A scene source turns (its settings, the experiment seed, the run index) into
the run's :class:`Scene`; the same inputs always give the same scene.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from testbed._errors import TestbedError
from testbed._lru import BoundedCache
from testbed._seeding import derive_seed_sequence
from testbed.registry import scene_source
from testbed.scenes._real import load_image_folder, load_scene, packaged_images
from testbed.scenes._synthetic import SceneSpec, generate_scene
from testbed.scenes._types import Scene

__all__ = ["BASE_DIR_CONTEXT", "ImageSet"]

BASE_DIR_CONTEXT: Final = "base_dir"
"""Validation-context key: the folder relative image paths resolve against (the scenario file's folder)."""

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ImageSet(BaseModel):
    """A fixed set of real images, cycled over the runs (run ``i`` uses image ``i % count``). Exactly one field."""

    model_config = ConfigDict(
        **_MODEL_CONFIG,
        json_schema_extra={"oneOf": [{"required": ["packaged"]}, {"required": ["paths"]}, {"required": ["folder"]}]},
    )

    packaged: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(default=None, min_length=1)
    """Names of sample images shipped inside installed packages, e.g. ``bus.jpg``."""
    paths: tuple[Path, ...] | None = Field(default=None, min_length=1)
    """Image files; relative paths resolve against the scenario file's folder."""
    folder: Path | None = None
    """A folder of images (with COCO or YOLO labels where present); relative to the scenario file's folder."""

    @field_validator("paths", "folder")
    @classmethod
    def _resolve_relative(cls, value: Any, info: ValidationInfo) -> Any:
        base = info.context.get(BASE_DIR_CONTEXT) if isinstance(info.context, dict) else None
        if base is None or value is None:
            return value
        # Absolute, so that the resolved scenario (as logged) no longer depends on where its file was.
        if isinstance(value, tuple):
            return tuple((Path(base) / path).absolute() for path in value)
        return (Path(base) / value).absolute()

    @model_validator(mode="after")
    def _check_exactly_one(self) -> Self:
        given = [name for name in ("packaged", "paths", "folder") if getattr(self, name) is not None]
        if len(given) != 1:
            found = f"got {' and '.join(given)}" if given else "got none"
            raise ValueError(f"give exactly one of 'packaged', 'paths' or 'folder' ({found})")
        return self


_drawn: BoundedCache[Scene] = BoundedCache(max_entries=64, max_bytes=64 * 1024 * 1024)
"""Scenes drawn lately: the cells of a factorial experiment draw the same seeded scenes again."""


def forget_drawn_scenes() -> None:
    """Empty the cache of drawn scenes, so the next draw of each pays for drawing it (as benchmarks measure)."""
    _drawn.clear()


@scene_source("synthetic", spec=SceneSpec)
def synthetic_scene(spec: SceneSpec, *, seed: int, run: int, base_dir: Path | None) -> Scene:
    """Run ``run``'s scene, drawn from the experiment seed (a copy: callers own what they get)."""
    key = (spec, seed, run)
    drawn = _drawn.get(key)
    if drawn is None:
        drawn = generate_scene(spec, derive_seed_sequence(seed, "scene", run))
        _drawn.put(key, drawn)
    return drawn.copy()


@scene_source("images", spec=ImageSet)
def image_scene(images: ImageSet, *, seed: int, run: int, base_dir: Path | None) -> Scene:
    """The run-th image of the set (cycled); relative paths resolve against ``base_dir``."""
    if images.packaged:
        available = packaged_images()
        name = images.packaged[run % len(images.packaged)]
        if name not in available:
            raise TestbedError(f"scene.images.packaged: no packaged image {name!r}; known: {', '.join(available)}")
        return load_scene(available[name])
    if images.paths:
        path = Path(images.paths[run % len(images.paths)])
        return load_scene(path if path.is_absolute() or base_dir is None else base_dir / path)
    folder = Path(images.folder or ".")
    scenes = load_image_folder(folder if folder.is_absolute() or base_dir is None else base_dir / folder)
    return scenes[run % len(scenes)]
