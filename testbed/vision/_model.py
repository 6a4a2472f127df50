"""Ultralytics YOLO detection and instance segmentation behind one small interface.

One ``VisionModel`` per server process: loading is slow, inference is guarded
by a lock (Ultralytics predictors are not thread-safe), and results are cached
by (weights hash, image hash, parameters).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from testbed._arrays import BoolMask, BoxArray, RGBImage
from testbed._errors import WeightsError
from testbed.imaging import image_digest
from testbed.vision._cache import InferenceCache
from testbed.vision._device import resolve_device
from testbed.vision._offline import import_ultralytics
from testbed.vision._weights import file_sha256, shipped_weights

Task = Literal["detect", "segment"]


@dataclass(frozen=True)
class InferenceParams:
    """Inference parameters; part of the cache key."""

    imgsz: int = 320
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 100


@dataclass(frozen=True)
class InferenceResult:
    """What a model found in one image.

    Boxes are canonical (pixel, xyxy, top-left origin). ``masks`` are at image
    resolution; ``model_masks`` at the model's own (letterboxed input) resolution.
    """

    boxes_xyxy: BoxArray
    scores: NDArray[np.float64]
    class_ids: NDArray[np.int64]
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    """(width, height) of the input image."""
    masks: NDArray[np.bool_] | None = field(default=None, repr=False)
    model_masks: NDArray[np.bool_] | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        total = self.boxes_xyxy.nbytes + self.scores.nbytes + self.class_ids.nbytes
        for masks in (self.masks, self.model_masks):
            if masks is not None:
                total += masks.nbytes
        return total

    def __len__(self) -> int:
        return int(self.boxes_xyxy.shape[0])

    def label(self, index: int) -> str:
        return self.class_names[int(self.class_ids[index])]

    def mask(self, index: int) -> BoolMask:
        if self.masks is None:
            raise ValueError("this result has no masks (a detection model produced it)")
        mask: BoolMask = self.masks[index]
        return mask


_shared_cache: InferenceCache[InferenceResult] = InferenceCache()


def shared_inference_cache() -> InferenceCache[InferenceResult]:
    """The process-wide cache used by models that are not given their own."""
    return _shared_cache


class VisionModel:
    """A YOLO model loaded from a local weights file.

    Args:
        weights: path to an Ultralytics ``.pt`` file. Hub names are never downloaded.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        cache: where to cache results; ``None`` disables caching.
        quiet: silence Ultralytics (required inside stdio MCP servers).

    Raises:
        WeightsError: the file is missing, unreadable or not Ultralytics weights.
        DeviceError: the device is unknown or unavailable.
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str = "auto",
        cache: InferenceCache[InferenceResult] | None = _shared_cache,
        quiet: bool = True,
    ) -> None:
        path = Path(weights)
        if not path.is_file():
            hint = " (weights load only by local path; hub names are never downloaded)" if path.parent == Path() else ""
            raise WeightsError(f"{weights}: weights file not found{hint}")
        self.weights_path = path
        self.weights_sha256 = file_sha256(path)
        self.device = resolve_device(device)
        self.cache = cache
        self._lock = threading.Lock()
        self._warmed: set[InferenceParams] = set()
        ultralytics = import_ultralytics(quiet=quiet)
        try:
            self._yolo: Any = ultralytics.YOLO(str(path))
        except Exception as error:  # any load failure means the file is not usable weights
            message = str(error).splitlines()[0] if str(error) else error.__class__.__name__
            raise WeightsError(f"{path}: not valid Ultralytics weights ({message})") from None
        task = self._yolo.task
        if task not in ("detect", "segment"):
            raise WeightsError(f"{path}: a {task} model; the testbed needs detect or segment weights")
        self.task: Task = task
        self.class_names: tuple[str, ...] = tuple(self._yolo.names[i] for i in sorted(self._yolo.names))

    @classmethod
    def shipped(cls, task: Task, **kwargs: Any) -> VisionModel:
        """Load the project's own weights for ``task``."""
        return cls(shipped_weights(task), **kwargs)

    def predict(self, image: RGBImage, params: InferenceParams | None = None) -> InferenceResult:
        """Run the model on one RGB image (cached)."""
        params = params or InferenceParams()
        if self.cache is None:
            return self._infer(image, params)
        key = (self.weights_sha256, image_digest(image), params)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        result = self._infer(image, params)
        self.cache.put(key, result)
        return result

    def warm_up(self, params: InferenceParams | None = None) -> None:
        """Run once on a blank image, outside the cache, so the first real call pays no set-up cost;
        a model already warmed with these parameters is left as it is."""
        params = params or InferenceParams()
        if params in self._warmed:
            return
        self._infer(np.zeros((params.imgsz, params.imgsz, 3), dtype=np.uint8), params)
        self._warmed.add(params)

    def _infer(self, image: RGBImage, params: InferenceParams) -> InferenceResult:
        import torch
        from ultralytics.utils import ops

        bgr = np.ascontiguousarray(image[:, :, ::-1])
        with self._lock:
            results = self._yolo.predict(
                bgr,
                imgsz=params.imgsz,
                conf=params.conf,
                iou=params.iou,
                max_det=params.max_det,
                device=self.device,
                verbose=False,
                retina_masks=False,
            )
        result = results[0]
        boxes = result.boxes
        height, width = image.shape[:2]
        masks = model_masks = None
        if self.task == "segment":
            if result.masks is not None and len(result.masks):
                data = result.masks.data
                model_masks = (data > 0.5).cpu().numpy()
                with torch.no_grad():
                    scaled = ops.scale_masks(data[None].float(), (height, width))[0]
                masks = (scaled > 0.5).cpu().numpy()
            else:
                model_masks = np.zeros((0, *result.orig_shape), dtype=bool)
                masks = np.zeros((0, height, width), dtype=bool)
        output = InferenceResult(
            boxes_xyxy=boxes.xyxy.cpu().numpy().astype(np.float64),
            scores=boxes.conf.cpu().numpy().astype(np.float64),
            class_ids=boxes.cls.cpu().numpy().astype(np.int64),
            class_names=self.class_names,
            image_size=(width, height),
            masks=masks,
            model_masks=model_masks,
        )
        for array in (output.boxes_xyxy, output.scores, output.class_ids, output.masks, output.model_masks):
            if array is not None:
                array.setflags(write=False)
        return output
