"""Image bytes in and out: decoding with limits, PNG encoding, content hashes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from testbed._arrays import RGBImage
from testbed._errors import InvalidImageError

MAX_IMAGE_PIXELS = 40_000_000
"""Largest image (width x height) the testbed decodes; larger inputs are rejected before decoding."""


def decode_image(data: bytes, *, what: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> RGBImage:
    """Decode encoded image bytes (PNG, JPEG, ...) into an RGB array.

    Args:
        data: the encoded file content.
        what: how to name the input in an error (a file path or an argument name).
        max_pixels: reject images with more pixels than this without decoding them.

    Raises:
        InvalidImageError: not an image, or larger than ``max_pixels``.
    """
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except (UnidentifiedImageError, OSError, ValueError, ImportError) as error:
        # ImportError: Ultralytics patches PIL's opener to try optional HEIF support on unknown data.
        raise InvalidImageError(f"{what}: not a readable image ({error.__class__.__name__})") from None
    if width * height > max_pixels:
        raise InvalidImageError(f"{what}: {width}x{height} exceeds the limit of {max_pixels} pixels")
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        raise InvalidImageError(f"{what}: not a readable image")
    return np.asarray(cv2.cvtColor(array, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def decode_base64_image(text: str, *, what: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> RGBImage:
    """Decode a base64 string (optionally a ``data:`` URI) holding an encoded image."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError(f"{what}: invalid base64") from None
    return decode_image(data, what=what, max_pixels=max_pixels)


def load_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> RGBImage:
    """Read an image file into an RGB array.

    Raises:
        InvalidImageError: the file is missing, unreadable, not an image, or too large.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise InvalidImageError(f"{file}: cannot read ({error.strerror or error})") from None
    return decode_image(data, what=str(file), max_pixels=max_pixels)


def encode_png(image: np.ndarray) -> bytes:
    """Encode an RGB (H, W, 3) or single-channel (H, W) array as PNG bytes, deterministically."""
    array = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(buffer.tobytes())


def encode_png_base64(image: np.ndarray) -> str:
    """Encode an array as PNG and return it as base64 text."""
    return base64.b64encode(encode_png(image)).decode("ascii")


def image_digest(image: np.ndarray) -> str:
    """Return a sha256 hex digest of an array's shape, dtype and pixels."""
    digest = hashlib.sha256()
    digest.update(f"{image.shape}|{image.dtype.str}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()
