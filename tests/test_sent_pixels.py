"""Scenes a testbed process sends by value are left as pixels for the server processes it starts."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from testbed import imaging
from testbed.imaging import SENT_PIXELS_VARIABLE, encode_png, encode_scene_png, scene_base64, share_sent_pixels
from testbed.orchestrator._resolvers import live_servers
from testbed.scenario import load_scenario
from testbed.transport import _connect

PROFILED = Path(__file__).resolve().parent.parent / "scenarios" / "profiles" / "pixel_detect_normalized_crop.yaml"

# A server process: decodes the base64 image on stdin with PNG decoding forbidden when FORBID is set, and prints
# the pixels' bytes as hex, or the error.
_SERVER = """
import os, sys, cv2
from testbed._errors import InvalidImageError
from testbed.imaging import decode_base64_image
if os.environ.get("FORBID"):
    def no_decoding(*args):
        raise AssertionError("decoded the PNG")
    cv2.imdecode = no_decoding
try:
    print(decode_base64_image(sys.stdin.read(), max_pixels=int(sys.argv[1])).tobytes().hex())
except InvalidImageError as error:
    print(error)
"""


def _decode_in_a_server(text: str, *, folder: Path | None, forbid_decoding: bool, max_pixels: int = 10_000) -> str:
    env = {key: value for key, value in os.environ.items() if key != SENT_PIXELS_VARIABLE}
    if folder is not None:
        env[SENT_PIXELS_VARIABLE] = str(folder)
    if forbid_decoding:
        env["FORBID"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _SERVER, str(max_pixels)], input=text, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


@pytest.fixture
def own_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh shared folder for this test, under its own temporary directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(imaging, "_shared_folder", None)
    monkeypatch.setattr(imaging, "_shared_files", deque())
    return share_sent_pixels()


def test_a_server_process_copies_the_pixels_of_a_sent_scene_instead_of_decoding_it(own_folder: Path) -> None:
    image = _image(1)
    text = scene_base64(encode_scene_png(image))
    assert _decode_in_a_server(text, folder=own_folder, forbid_decoding=True) == image.tobytes().hex()
    # Without the folder the same server decodes the PNG, to the same pixels.
    assert _decode_in_a_server(text, folder=None, forbid_decoding=False) == image.tobytes().hex()


def test_a_shared_scene_over_the_servers_limit_is_refused_with_the_usual_message(own_folder: Path) -> None:
    text = scene_base64(encode_scene_png(_image(2)))
    said = _decode_in_a_server(text, folder=own_folder, forbid_decoding=False, max_pixels=100)
    assert said == "image: 16x12 exceeds the limit of 100 pixels"


def test_an_image_not_left_in_the_folder_is_decoded_as_usual(own_folder: Path) -> None:
    image = _image(3)
    text = scene_base64(encode_png(image))  # not encoded as a scene: nothing is left for it
    assert list(own_folder.iterdir()) == []
    assert _decode_in_a_server(text, folder=own_folder, forbid_decoding=False) == image.tobytes().hex()


def test_a_damaged_shared_file_is_ignored(own_folder: Path) -> None:
    image = _image(4)
    text = scene_base64(encode_scene_png(image))
    (shared,) = own_folder.iterdir()
    shared.write_bytes(shared.read_bytes()[:-1])  # one byte short: not the pixels its header announces
    assert _decode_in_a_server(text, folder=own_folder, forbid_decoding=False) == image.tobytes().hex()


def test_only_the_last_few_scenes_are_kept(own_folder: Path) -> None:
    texts = [scene_base64(encode_scene_png(_image(seed))) for seed in range(10, 16)]
    kept = sorted(path.name for path in own_folder.iterdir())
    assert kept == sorted(imaging._shared_name(text) or "" for text in texts[-imaging._SHARED_KEPT :])


def test_folders_of_processes_that_are_gone_are_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"testbed-sent-pixels-{gone.stdout.strip()}-abc"
    orphan.mkdir()
    (orphan / "left").write_bytes(b"x")
    alive = tmp_path / f"testbed-sent-pixels-{os.getppid()}-abc"
    alive.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(imaging, "_shared_folder", None)
    folder = share_sent_pixels()
    assert not orphan.exists()
    assert alive.exists()
    assert folder.parent == tmp_path
    assert folder.name.startswith(f"testbed-sent-pixels-{os.getpid()}-")
    assert share_sent_pixels() == folder  # one folder per process


def test_registered_server_processes_are_told_where_the_pixels_are(own_folder: Path, tmp_path: Path) -> None:
    environment = _connect.served_environment(tmp_path / "sandbox", "cpu")
    assert environment[SENT_PIXELS_VARIABLE] == str(own_folder)
    assert SENT_PIXELS_VARIABLE not in _connect.server_environment(tmp_path / "sandbox", "cpu")


def test_profiled_server_processes_are_told_where_the_pixels_are_too(own_folder: Path, tmp_path: Path) -> None:
    specs = live_servers(sandbox=tmp_path / "sandbox", device="cpu", transport="stdio")(load_scenario(PROFILED))
    processes = [spec.external for spec in specs.values() if spec.external is not None]
    profiled = [process for process in processes if process.command is not None and "--profile" in process.command]
    assert profiled, "the scenario's profiled servers run as their own processes"
    assert all(process.env[SENT_PIXELS_VARIABLE] == str(own_folder) for process in profiled)
