"""The weights the project ships, their manifest, and file hashing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from testbed._errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST_FILE = WEIGHTS_DIR / "manifest.json"
MANIFEST_FORMAT_VERSION = 1
"""Bump when a manifest field changes meaning or is removed."""

SHIPPED_MODELS: dict[str, str] = {"detect": "shapes-det.pt", "segment": "shapes-seg.pt"}


class ShippedModel(BaseModel):
    """One trained weights file and how it was made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    """File name inside ``testbed/weights``."""
    task: Literal["detect", "segment"]
    """What the model predicts."""
    architecture: str
    """The Ultralytics model definition it was built from."""
    sha256: str
    """Hash of the shipped file."""
    size_bytes: int
    """Size of the shipped file."""
    command: str
    """The command that reproduces it."""
    seed: int
    """The seed of training and of its synthetic data."""
    train_images: int
    """Synthetic training images."""
    val_images: int
    """Synthetic validation images used during training."""
    epochs: int
    """Training epochs."""
    imgsz: int
    """Training and evaluation image size."""
    init_weights: str | None
    """Weights it started from (the detector, for the segmenter), or None for from scratch."""
    metrics: dict[str, float]
    """Held-out metrics (``box_map50``, ``mask_map50``, ...) on ``eval_images`` fresh scenes."""
    eval_images: int
    """Held-out synthetic scenes the metrics were measured on."""
    train_seconds: float
    """Wall time of training on the machine named in ``trained_on``."""
    trained_on: str
    """Device and library versions used."""
    reproducibility_tolerance: float
    """Retraining with ``command`` gives each metric within this absolute tolerance."""


class WeightsManifest(BaseModel):
    """All shipped weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = MANIFEST_FORMAT_VERSION
    models: dict[str, ShippedModel] = {}


def read_manifest(path: Path = MANIFEST_FILE) -> WeightsManifest:
    """Read the weights manifest (an empty one if the file does not exist yet)."""
    if not path.exists():
        return WeightsManifest()
    return WeightsManifest.model_validate(json.loads(path.read_text()))


def write_manifest(manifest: WeightsManifest, path: Path = MANIFEST_FILE) -> None:
    """Write the manifest atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def shipped_weights(task: Literal["detect", "segment"]) -> Path:
    """Path of the shipped weights for a task.

    Raises:
        WeightsError: the file is missing (train it with ``testbed models train``).
    """
    path = WEIGHTS_DIR / SHIPPED_MODELS[task]
    if not path.exists():
        raise WeightsError(f"{path}: shipped {task} weights are missing; run 'testbed models train'")
    return path


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file's bytes.

    Raises:
        WeightsError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as error:
        raise WeightsError(f"{path}: cannot read weights ({error.strerror or error})") from None
    return digest.hexdigest()


def manifest_entry_for(path: Path) -> ShippedModel | None:
    """The manifest entry whose file is ``path``, if it is a shipped model."""
    for entry in read_manifest().models.values():
        if WEIGHTS_DIR / entry.file == path.resolve():
            return entry
    return None


def as_json_dict(entry: ShippedModel) -> dict[str, Any]:
    return entry.model_dump(mode="json")
