"""Image bytes a fuzzer sends: small valid images, and the malformed ones servers must refuse in words.

Every payload is built deterministically (no randomness): the hypothesis
strategies choose among them and cut or corrupt them.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

__all__ = ["FUZZ_MAX_PIXELS", "ImagePayloads", "image_payloads", "png_declaring"]

FUZZ_MAX_PIXELS = 1_000_000
"""The fuzzed servers' ``max_pixels``: small, so that a real over-the-limit image costs little to build."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` 1-bit grey pixels, followed by a few bytes of pixel data.

    With huge dimensions it is a decompression bomb: tiny on the wire, enormous once decoded.
    """
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64, 9)
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def _noise(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    # A fixed pattern (not a generator): payloads are part of the fuzzer's definition, the same in every run.
    ramp = (np.arange(height * width * channels, dtype=np.int64) * (2654435761 + seed)) % 251
    shape = (height, width, channels) if channels > 1 else (height, width)
    return ramp.astype(np.uint8).reshape(shape)


def _encode(image: np.ndarray, extension: str) -> bytes:
    ok, buffer = cv2.imencode(extension, image)
    if not ok:
        raise ValueError(f"{extension} encoding failed")
    return bytes(buffer.tobytes())


@dataclass(frozen=True)
class ImagePayloads:
    """Encoded images, by what they test."""

    valid: tuple[bytes, ...]
    """Small decodable images: 1x1, odd sizes, grey, alpha, JPEG."""
    oversized: bytes
    """A real PNG over :data:`FUZZ_MAX_PIXELS`."""
    bombs: tuple[bytes, ...]
    """Tiny PNGs declaring huge sizes: over the server's limit, over Pillow's warning limit, over its error limit."""
    degenerate: tuple[bytes, ...]
    """PNGs declaring a zero width or height, and an empty file."""


@cache
def image_payloads() -> ImagePayloads:
    """The fuzzer's image payloads (built once per process)."""
    valid = (
        _encode(_noise(1, 1, 3, 0), ".png"),
        _encode(_noise(3, 2, 3, 1), ".png"),
        _encode(_noise(24, 32, 3, 2), ".png"),
        _encode(_noise(17, 5, 1, 3), ".png"),
        _encode(_noise(9, 13, 4, 4), ".png"),
        _encode(_noise(16, 16, 3, 5), ".jpg"),
    )
    side = int(FUZZ_MAX_PIXELS**0.5) + 8
    oversized = _encode(np.zeros((side, side, 3), dtype=np.uint8), ".png")
    bombs = (png_declaring(side, side), png_declaring(12_000, 9_000), png_declaring(100_000, 100_000))
    degenerate = (png_declaring(0, 0), png_declaring(0, 7), png_declaring(7, 0), b"")
    return ImagePayloads(valid=valid, oversized=oversized, bombs=bombs, degenerate=degenerate)
