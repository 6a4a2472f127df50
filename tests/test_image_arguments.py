"""How reference servers decode by-value image arguments: once per image, even for concurrent calls."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import servers._runtime as runtime
from servers._runtime import decode_image_argument
from testbed._arrays import RGBImage
from testbed._errors import InvalidImageError
from testbed.imaging import encode_png_base64, encode_scene_png, scene_base64
from testbed.server_config import ServerConfig

CALLERS = 4


def _concurrently(call: object, count: int = CALLERS) -> list[object]:
    """Run ``call()`` on ``count`` threads at once; each slot holds its result or the exception it raised."""
    results: list[object] = [None] * count
    start = threading.Barrier(count)

    def worker(slot: int) -> None:
        start.wait()
        try:
            results[slot] = call()  # type: ignore[operator]
        except Exception as error:  # the test inspects what each caller got
            results[slot] = error

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_calls_sent_one_new_image_decode_it_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fan-out of crops sends the same image to several calls at once: the first decodes, the others wait."""
    image = np.random.default_rng(11).integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    text = encode_png_base64(image)
    decodes: list[int] = []
    original = runtime.decode_image_data

    def slow_decode(data: bytes, *, argument: str, max_pixels: int) -> RGBImage:
        decodes.append(1)
        time.sleep(0.3)  # holds the first decoder while the other callers arrive
        return original(data, argument=argument, max_pixels=max_pixels)

    monkeypatch.setattr(runtime, "decode_image_data", slow_decode)
    config = ServerConfig(sandbox=tmp_path, max_pixels=10_007)  # a limit no other test uses: a fresh cache key
    results = _concurrently(lambda: decode_image_argument(text, argument="image", config=config))
    assert len(decodes) == 1
    assert all(isinstance(result, np.ndarray) and np.array_equal(result, image) for result in results)
    assert not runtime._decoding


def test_concurrent_calls_sent_a_bad_image_each_report_it(tmp_path: Path) -> None:
    config = ServerConfig(sandbox=tmp_path)
    results = _concurrently(lambda: decode_image_argument("not base64!!", argument="image", config=config))
    assert all(isinstance(result, InvalidImageError) for result in results)
    assert {str(result) for result in results} == {"image: invalid base64"}
    assert not runtime._decoding


def test_an_in_process_server_gets_the_scene_pixels_without_decoding(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    image = np.random.default_rng(12).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    text = scene_base64(encode_scene_png(image))

    def no_decoding(data: bytes, *, argument: str, max_pixels: int) -> RGBImage:
        raise AssertionError("the scene was decoded")

    monkeypatch.setattr(runtime, "decode_image_data", no_decoding)
    decoded = decode_image_argument(text, argument="image", config=ServerConfig(sandbox=tmp_path, max_pixels=10_009))
    assert np.array_equal(decoded, image)
    assert not decoded.flags.writeable  # shared with later calls
