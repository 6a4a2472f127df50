"""What every reference server shares at run time: lazily loaded models, image arguments, crops.

A server process loads each model it needs once, on its first call (so
``tools/list`` answers at once), and keeps it for the life of the process.
Servers built in the same process with the same weights and device share the
loaded model.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from servers._tools import ToolInputError
from testbed._arrays import RGBImage
from testbed._errors import InvalidImageError, TestbedError, WeightsError
from testbed.conventions import BoxConvention, ImageSize, to_canonical
from testbed.imaging import decode_image, sent_pixels
from testbed.server_config import ServerConfig
from testbed.vision import InferenceParams, InferenceResult, VisionModel, shared_inference_cache, shipped_weights

__all__ = [
    "crop_canonical",
    "decode_image_argument",
    "decode_image_data",
    "floats",
    "image_size_of",
    "infer",
    "loaded_model_count",
    "preload_detector",
    "preload_segmenter",
    "vision_model",
]

Task = Literal["detect", "segment"]

_models: dict[tuple[Task, Path, str, bool], VisionModel] = {}

# A pipeline sends the same image to several tools (and one tool many times in a fan-out); decoding a
# PNG costs milliseconds, so a few recently decoded images are kept, keyed by their exact base64 text.
_DECODED_CACHE_SIZE = 8
_decoded: OrderedDict[tuple[str, int], RGBImage] = OrderedDict()
_decoding: dict[tuple[str, int], threading.Event] = {}
"""Images being decoded right now, set once each is cached (or failed)."""
_decoded_lock = threading.Lock()
_models_lock = threading.Lock()

_EDGE_TOLERANCE = 1e-6
"""Box coordinates this close (in pixels) to a pixel edge count as on it (absorbs conversion rounding)."""


def vision_model(task: Task, config: ServerConfig) -> VisionModel:
    """The process's model for ``task`` under ``config``, loaded on first use.

    Raises:
        WeightsError: the weights are missing or unusable, or a detection model was given for segmentation.
        DeviceError: the configured device is unavailable.
    """
    configured = config.detect_weights if task == "detect" else config.segment_weights
    path = (configured or shipped_weights(task)).resolve()
    key = (task, path, config.device, config.inference_cache)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            cache = shared_inference_cache() if config.inference_cache else None
            model = VisionModel(path, device=config.device, quiet=True, cache=cache)
            if task == "segment" and model.task != "segment":
                raise WeightsError(f"{path}: a {model.task} model; a segmentation server needs segment weights")
            _models[key] = model
    return model


def preload_detector(config: ServerConfig) -> None:
    """Load and warm up a detection server's model before it serves (see :func:`_preload`)."""
    _preload("detect", config)


def preload_segmenter(config: ServerConfig) -> None:
    """Load and warm up a segmentation server's model before it serves (see :func:`_preload`)."""
    _preload("segment", config)


def _preload(task: Task, config: ServerConfig) -> None:
    """Otherwise the first call pays for loading (1-2 s on a busy CPU) inside its deadline. A model that
    cannot load is left for the first call to report, as a tool error."""
    try:
        vision_model(task, config).warm_up(InferenceParams(imgsz=config.imgsz, conf=config.conf))
    except TestbedError:
        return


def loaded_model_count() -> int:
    """How many models this process has loaded so far."""
    with _models_lock:
        return len(_models)


def infer(task: Task, image: RGBImage, config: ServerConfig) -> InferenceResult:
    """Run the ``task`` model on an RGB image with the configured inference parameters."""
    params = InferenceParams(imgsz=config.imgsz, conf=config.conf)
    return vision_model(task, config).predict(image, params)


def decode_image_argument(value: str, *, argument: str, config: ServerConfig) -> RGBImage:
    """Decode a base64 image argument (``data:`` URIs accepted).

    Concurrent calls sent the same image (a fan-out of crops) decode it once: the first decodes, the
    others wait for its result.

    Raises:
        InvalidImageError: invalid base64, not an image, or over ``config.max_pixels``; names ``argument``.
    """
    text = value.partition(",")[2] if value.startswith("data:") else value
    key = (text, config.max_pixels)
    while True:
        with _decoded_lock:
            cached = _decoded.get(key)
            if cached is not None:
                _decoded.move_to_end(key)
                return cached
            pending = _decoding.get(key)
            if pending is None:
                _decoding[key] = decoded = threading.Event()
                break
        pending.wait()  # then it is cached, or it failed and this call tries (and reports) it itself
    try:
        image = _decode_text(text, argument=argument, max_pixels=config.max_pixels)
        image.setflags(write=False)  # shared between calls: nobody may draw on it
        with _decoded_lock:
            _decoded[key] = image
            while len(_decoded) > _DECODED_CACHE_SIZE:
                _decoded.popitem(last=False)
        return image
    finally:
        with _decoded_lock:
            del _decoding[key]
        decoded.set()


def _decode_text(text: str, *, argument: str, max_pixels: int) -> RGBImage:
    known = sent_pixels(text, max_pixels)  # a scene the orchestrator sent: its pixels, in process or left for us
    if known is not None:
        return known
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError(f"{argument}: invalid base64") from None
    return decode_image_data(data, argument=argument, max_pixels=max_pixels)


def decode_image_data(data: bytes, *, argument: str, max_pixels: int) -> RGBImage:
    """Decode encoded image bytes (PNG, JPEG, ...) into RGB.

    Raises:
        InvalidImageError: not an image, or over ``max_pixels``; names ``argument``.
    """
    return decode_image(data, what=argument, max_pixels=max_pixels)


def image_size_of(image: RGBImage) -> ImageSize:
    """The size of an ``(H, W, 3)`` image."""
    return ImageSize(width=int(image.shape[1]), height=int(image.shape[0]))


def floats(values: ArrayLike) -> list[float]:
    """Plain Python floats for a JSON payload."""
    return [float(value) for value in np.asarray(values, dtype=np.float64).ravel()]


def crop_canonical(image: RGBImage, box: ArrayLike, convention: BoxConvention, *, argument: str) -> RGBImage:
    """Cut the pixels a box covers out of an image.

    The box is converted to canonical pixel ``xyxy``; the crop is every pixel the
    box touches: rows ``floor(y1)`` to ``ceil(y2)`` and columns ``floor(x1)`` to ``ceil(x2)``.

    Raises:
        ToolInputError: the box is not four finite numbers, has no area, or is not inside the image.
    """
    size = image_size_of(image)
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise ToolInputError(f"{argument}: must be four finite numbers")
    x1, y1, x2, y2 = to_canonical(values.reshape(1, 4), convention, size)[0]
    if x2 - x1 <= _EDGE_TOLERANCE or y2 - y1 <= _EDGE_TOLERANCE:
        raise ToolInputError(f"{argument}: box {values.tolist()} has no area")
    if (
        x1 < -_EDGE_TOLERANCE
        or y1 < -_EDGE_TOLERANCE
        or x2 > size.width + _EDGE_TOLERANCE
        or y2 > size.height + _EDGE_TOLERANCE
    ):
        raise ToolInputError(
            f"{argument}: box {values.tolist()} ({convention}) is not inside the {size.width}x{size.height} image"
        )
    left, top = math.floor(x1 + _EDGE_TOLERANCE), math.floor(y1 + _EDGE_TOLERANCE)
    right, bottom = math.ceil(x2 - _EDGE_TOLERANCE), math.ceil(y2 - _EDGE_TOLERANCE)
    left, top = min(max(left, 0), size.width - 1), min(max(top, 0), size.height - 1)
    right, bottom = min(max(right, left + 1), size.width), min(max(bottom, top + 1), size.height)
    return np.ascontiguousarray(image[top:bottom, left:right])
