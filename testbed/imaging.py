"""Image bytes in and out: decoding with limits, PNG encoding, content hashes."""

from __future__ import annotations

import atexit
import base64
import binascii
import hashlib
import io
import os
import shutil
import tempfile
import threading
from collections import OrderedDict, deque
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import psutil
from PIL import Image, UnidentifiedImageError

from testbed._arrays import RGBImage
from testbed._errors import InvalidImageError

MAX_IMAGE_PIXELS = 40_000_000
"""Largest image (width x height) the testbed decodes; larger inputs are rejected before decoding."""

_RECENT_ENCODINGS = 4
"""PNGs this process encoded lately, kept with their pixels: an in-process server given the scene the
orchestrator just encoded gets its pixels back without decoding the PNG (lossless, so they are equal)."""
_recent_encodings: OrderedDict[bytes, RGBImage] = OrderedDict()
_recent_base64: OrderedDict[str, bytes] = OrderedDict()
"""The base64 text of those PNGs (:func:`scene_base64`), so a server handed it skips the base64 decoding too."""
_recent_lock = threading.Lock()

SENT_PIXELS_VARIABLE: Final = "TESTBED_SENT_PIXELS"
"""Set in the environment of a server process the testbed starts: the folder where the testbed process leaves the
pixels of the scenes it sends by value (:func:`share_sent_pixels`), so the server copies them instead of decoding
the PNG: the cross-process counterpart of :func:`sent_pixels` in process."""
_SHARED_PREFIX = "testbed-sent-pixels-"
_SHARED_KEPT = 4
"""Scenes left in the folder at a time (a run's calls all come before the next run's scene)."""
_SHARED_HEADER = 8
"""Bytes before the pixels in a shared file: height and width, 4 bytes each, big-endian."""
_shared_folder: tuple[int, Path] | None = None
"""The process that made the folder and the folder: a forked child makes its own."""
_shared_files: deque[Path] = deque()


def decode_image(data: bytes, *, what: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> RGBImage:
    """Decode encoded image bytes (PNG, JPEG, ...) into an RGB array.

    Args:
        data: the encoded file content.
        what: how to name the input in an error (a file path or an argument name).
        max_pixels: reject images with more pixels than this without decoding them.

    Raises:
        InvalidImageError: not an image, or larger than ``max_pixels``.
    """
    known = _encoded_here(data, max_pixels)
    if known is not None:
        return known
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own limit (a warning, an error when warnings are errors, then an error) fires on the
        # declared size before ours can: say the same as ours would.
        raise InvalidImageError(_too_large(what, _png_declared_size(data), max_pixels)) from None
    except (UnidentifiedImageError, ImportError, OSError, ValueError, SyntaxError):
        # ImportError: Ultralytics patches PIL's opener to try optional HEIF support on unknown data.
        raise InvalidImageError(f"{what}: not a readable image ({_why_unreadable(data)})") from None
    if width * height > max_pixels:
        raise InvalidImageError(_too_large(what, (width, height), max_pixels))
    if not _png_chunks_fit(data):
        raise InvalidImageError(
            f"{what}: not a readable image (truncated or corrupt image data: a PNG chunk runs past the end)"
        )
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if array is None:
        raise InvalidImageError(
            f"{what}: not a readable image (truncated or corrupt, or a format the server cannot decode)"
        )
    return np.asarray(cv2.cvtColor(array, cv2.COLOR_BGR2RGB), dtype=np.uint8)


_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
"""How PNG, JPEG and GIF files begin: data that starts so but does not open is damaged, not of another kind."""


def _why_unreadable(data: bytes) -> str:
    if not data:
        return "no bytes"
    if data.startswith(_SIGNATURES):
        return "truncated or corrupt image data"
    return "not PNG, JPEG or another known image format"


def _png_chunks_fit(data: bytes) -> bool:
    """Whether every chunk of a PNG ends inside the data (``True`` for other formats).

    OpenCV spends seconds on a 70-byte PNG whose chunk declares gigabytes; walking the
    chunk lengths first costs microseconds.
    """
    if not data.startswith(_SIGNATURES[0]):
        return True
    offset = len(_SIGNATURES[0])
    while offset + 8 <= len(data):
        length, kind = int.from_bytes(data[offset : offset + 4], "big"), data[offset + 4 : offset + 8]
        offset += 12 + length  # length, type, data, CRC
        if offset > len(data):
            return False
        if kind == b"IEND":
            break
    return True


def _too_large(what: str, size: tuple[int, int] | None, max_pixels: int) -> str:
    declared = f"{size[0]}x{size[1]}" if size is not None else "its declared size"
    return f"{what}: {declared} exceeds the limit of {max_pixels} pixels"


def _png_declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's header, without decoding it; ``None`` for other formats."""
    if not data.startswith(_SIGNATURES[0]) or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def decode_base64_image(text: str, *, what: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> RGBImage:
    """Decode a base64 string (optionally a ``data:`` URI) holding an encoded image."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    known = sent_pixels(text, max_pixels)
    if known is not None:
        return known
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


def encode_scene_png(image: RGBImage) -> bytes:
    """:func:`encode_png` for an image this process will send by value: :func:`decode_image` of the
    returned bytes then copies the pixels instead of decoding the PNG."""
    data = encode_png(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        return data  # decoding would not give back the same array
    pixels = image.copy()
    pixels.setflags(write=False)
    with _recent_lock:
        _recent_encodings[data] = pixels
        while len(_recent_encodings) > _RECENT_ENCODINGS:
            _recent_encodings.popitem(last=False)
    return data


def scene_base64(png: bytes) -> str:
    """The base64 text of a PNG that :func:`encode_scene_png` returned, noted so that :func:`sent_pixels` of it
    (an in-process server decoding the argument it was sent) copies the pixels instead of decoding anything."""
    text = base64.b64encode(png).decode("ascii")
    with _recent_lock:
        pixels = _recent_encodings.get(png)
        if pixels is not None:
            _recent_base64[text] = png
            while len(_recent_base64) > _RECENT_ENCODINGS:
                _recent_base64.popitem(last=False)
            if _shared_folder is not None and _shared_folder[0] == os.getpid():
                _leave_shared(_shared_folder[1], text, pixels)
    return text


def share_sent_pixels() -> Path:
    """Start leaving the pixels of the scenes :func:`scene_base64` returns in a private folder, for the server
    processes this process starts (they get its path in :data:`SENT_PIXELS_VARIABLE`); returns that folder.

    The folder holds the last few scenes, each in a file named by the sha256 of its base64 text, and is removed
    when the process exits; folders that processes killed before exiting left behind are removed here.
    """
    global _shared_folder
    with _recent_lock:
        if _shared_folder is None or _shared_folder[0] != os.getpid():
            _remove_orphaned_folders()
            folder = Path(tempfile.mkdtemp(prefix=f"{_SHARED_PREFIX}{os.getpid()}-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _shared_folder = (os.getpid(), folder)
            _shared_files.clear()
        return _shared_folder[1]


def _remove_orphaned_folders() -> None:
    for folder in Path(tempfile.gettempdir()).glob(f"{_SHARED_PREFIX}*-*"):
        pid = folder.name.removeprefix(_SHARED_PREFIX).partition("-")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _shared_name(text: str) -> str | None:
    try:
        return hashlib.sha256(text.encode("ascii")).hexdigest()
    except UnicodeEncodeError:
        return None  # not base64: never a shared scene


def _leave_shared(folder: Path, text: str, pixels: RGBImage) -> None:
    """Write one scene's pixels (under ``_recent_lock``), atomically, and drop the oldest beyond the kept few."""
    name = _shared_name(text)
    if name is None:
        return
    path = folder / name
    staged = folder / f".{name}.partial"
    height, width = pixels.shape[:2]
    try:
        with staged.open("wb") as handle:
            handle.write(height.to_bytes(4, "big") + width.to_bytes(4, "big"))
            handle.write(pixels.data)
        staged.replace(path)
    except OSError:
        return  # the servers decode the PNG, as without the folder
    if path in _shared_files:
        _shared_files.remove(path)
    _shared_files.append(path)
    while len(_shared_files) > _SHARED_KEPT:
        _shared_files.popleft().unlink(missing_ok=True)


def _shared_pixels(text: str, max_pixels: int) -> RGBImage | None:
    """The pixels the process that started this one left for ``text`` (see :func:`share_sent_pixels`), if any."""
    folder = os.environ.get(SENT_PIXELS_VARIABLE)
    if not folder:
        return None
    name = _shared_name(text)
    if name is None:
        return None
    try:
        data = (Path(folder) / name).read_bytes()
    except OSError:
        return None  # not a scene it sent, or already dropped: decode as usual
    if len(data) < _SHARED_HEADER:
        return None
    height, width = int.from_bytes(data[:4], "big"), int.from_bytes(data[4:8], "big")
    if len(data) != _SHARED_HEADER + height * width * 3 or height * width > max_pixels:
        return None  # over the limit: decoding refuses it with its usual message
    return np.frombuffer(data, dtype=np.uint8, offset=_SHARED_HEADER).reshape(height, width, 3).copy()


def sent_pixels(text: str, max_pixels: int = MAX_IMAGE_PIXELS) -> RGBImage | None:
    """A copy of the pixels whose PNG's base64 :func:`scene_base64` returned lately, if ``text`` is one within the
    limit; ``None`` otherwise (the caller decodes ``text`` as usual, errors included)."""
    if not _recent_base64:  # a server process sends nothing: it may have been left the pixels, though
        return _shared_pixels(text, max_pixels)
    with _recent_lock:
        png = _recent_base64.get(text)
    return _encoded_here(png, max_pixels) if png is not None else None


def _encoded_here(data: bytes, max_pixels: int) -> RGBImage | None:
    """A copy of the pixels of a PNG :func:`encode_scene_png` made lately, if ``data`` is one within the limit."""
    if not _recent_encodings or not isinstance(data, bytes):  # a server process encodes none: skip the hash
        return None
    with _recent_lock:
        pixels = _recent_encodings.get(data)
    if pixels is None or pixels.shape[0] * pixels.shape[1] > max_pixels:
        return None  # over the limit: decode_image refuses it with its usual message
    return pixels.copy()


def encode_png_base64(image: np.ndarray) -> str:
    """Encode an array as PNG and return it as base64 text."""
    return base64.b64encode(encode_png(image)).decode("ascii")


def image_digest(image: np.ndarray) -> str:
    """Return a sha256 hex digest of an array's shape, dtype and pixels."""
    digest = hashlib.sha256()
    digest.update(f"{image.shape}|{image.dtype.str}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()
