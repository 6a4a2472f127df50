"""Image decoding limits and errors."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from testbed._errors import InvalidImageError
from testbed.imaging import (
    decode_base64_image,
    decode_image,
    encode_png,
    encode_png_base64,
    encode_scene_png,
    image_digest,
    scene_base64,
    sent_pixels,
)


def test_png_round_trip_is_lossless() -> None:
    image = np.arange(48 * 64 * 3, dtype=np.uint32).reshape(48, 64, 3).astype(np.uint8)
    assert np.array_equal(decode_image(encode_png(image)), image)
    assert np.array_equal(decode_base64_image(encode_png_base64(image)), image)


def test_data_uri_prefix_is_accepted() -> None:
    image = np.full((8, 8, 3), 7, dtype=np.uint8)
    assert np.array_equal(decode_base64_image("data:image/png;base64," + encode_png_base64(image)), image)


def test_invalid_base64_is_reported_with_the_argument_name() -> None:
    with pytest.raises(InvalidImageError, match=r"^image_b64: invalid base64$"):
        decode_base64_image("not base64!!", what="image_b64")


def test_bytes_that_are_not_an_image_are_rejected() -> None:
    with pytest.raises(InvalidImageError, match="image_b64: not a readable image"):
        decode_base64_image(base64.b64encode(b"plain text").decode(), what="image_b64")


def test_oversized_image_is_rejected_before_decoding() -> None:
    data = encode_png(np.zeros((100, 200, 3), dtype=np.uint8))
    with pytest.raises(InvalidImageError, match="200x100 exceeds the limit of 10000 pixels"):
        decode_image(data, max_pixels=10_000)


def test_digest_depends_on_pixels_and_shape() -> None:
    a = np.zeros((4, 6, 3), dtype=np.uint8)
    assert image_digest(a) == image_digest(a.copy())
    assert image_digest(a) != image_digest(a.reshape(6, 4, 3))
    b = a.copy()
    b[0, 0, 0] = 1
    assert image_digest(a) != image_digest(b)


def test_a_scene_encoded_here_is_not_decoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-process server handed the scene the orchestrator just encoded gets its pixels, as a copy of its own."""
    image = np.arange(24 * 32 * 3, dtype=np.uint32).reshape(24, 32, 3).astype(np.uint8)
    data = encode_scene_png(image)

    def no_decoding(*args: object) -> None:
        raise AssertionError("the PNG was decoded again")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    first = decode_image(data)
    assert np.array_equal(first, image)
    first[:] = 0  # the caller's to change: the next decode is not affected
    assert np.array_equal(decode_image(data), image)
    with pytest.raises(InvalidImageError, match=r"^scene: 32x24 exceeds the limit of 100 pixels$"):
        decode_image(data, what="scene", max_pixels=100)


def test_the_base64_of_a_scene_encoded_here_is_not_decoded_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, the orchestrator's base64 of its scene comes back as the pixels: no base64 nor PNG decoding."""
    image = np.arange(20 * 30 * 3, dtype=np.uint32).reshape(20, 30, 3).astype(np.uint8) * 7
    text = scene_base64(encode_scene_png(image))
    assert text == base64.b64encode(encode_png(image)).decode("ascii")
    with pytest.raises(InvalidImageError, match=r"^image: 30x20 exceeds the limit of 100 pixels$"):
        decode_base64_image(text, max_pixels=100)  # over the limit: the usual path, and its usual message

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the image was decoded again")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    monkeypatch.setattr(base64, "b64decode", no_decoding)
    first = decode_base64_image(text)
    assert np.array_equal(first, image)
    first[:] = 0  # a copy: the caller may change it
    assert np.array_equal(decode_base64_image("data:image/png;base64," + text), image)


def test_base64_not_made_by_scene_base64_is_decoded_as_usual() -> None:
    image = np.full((5, 7, 3), 3, dtype=np.uint8)
    plain = encode_png_base64(image)  # encoded here too, but not as a scene: nothing remembered
    assert sent_pixels(plain) is None
    assert np.array_equal(decode_base64_image(plain), image)
    replayed = scene_base64(encode_png(image))  # bytes this process did not encode as a scene (replay)
    assert sent_pixels(replayed) is None
    assert np.array_equal(decode_base64_image(replayed), image)
