"""Ultralytics runs offline, quietly and from the testbed's own configuration folder."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.scenes import SceneSpec, generate_scene
from testbed.vision import InferenceParams, VisionModel, configure_ultralytics, import_ultralytics
from testbed.vision._training import TrainingPlan, train_model
from tests._helpers import NetworkAttempts

TINY = TrainingPlan(train_images=8, val_images=4, detect_epochs=1, segment_epochs=1, imgsz=64, batch=4)


@pytest.mark.slow
def test_training_detection_and_segmentation_open_no_network_socket(
    network_guard: NetworkAttempts, tmp_path: Path
) -> None:
    detector = tmp_path / "det.pt"
    segmenter = tmp_path / "seg.pt"
    train_model(task="detect", plan=TINY, work_dir=tmp_path / "work", output=detector, quiet=True)
    train_model(
        task="segment", plan=TINY, work_dir=tmp_path / "work", output=segmenter, init_weights=detector, quiet=True
    )
    image = generate_scene(SceneSpec(), 0).image
    params = InferenceParams(imgsz=64, conf=0.001)
    detections = VisionModel(detector, device="cpu", cache=None).predict(image, params)
    segments = VisionModel(segmenter, device="cpu", cache=None).predict(image, params)
    assert segments.masks is not None
    assert segments.masks.shape[1:] == image.shape[:2]
    assert detections.masks is None
    assert network_guard.attempts == []


def test_network_guard_catches_a_real_attempt(network_guard: NetworkAttempts) -> None:
    import socket

    with contextlib.suppress(OSError):
        socket.create_connection(("192.0.2.1", 80), timeout=0.01)
    assert network_guard.attempts


def test_ultralytics_config_and_font_live_in_the_testbed_folder(testbed_home: Path) -> None:
    config_dir = configure_ultralytics()
    import_ultralytics()
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR
    from ultralytics.utils.checks import check_font

    assert config_dir == testbed_home / "ultralytics" / "Ultralytics"
    assert Path(USER_CONFIG_DIR) == config_dir
    assert Path(check_font("Arial.ttf")).parent == config_dir
    assert SETTINGS["sync"] is False


@pytest.mark.slow
def test_loading_and_inference_print_nothing_on_stdout(tmp_path: Path) -> None:
    # A stdio MCP server's stdout is the protocol channel: a single stray print corrupts it.
    script = (
        "from testbed.vision import VisionModel\n"
        "from testbed.scenes import SceneSpec, generate_scene\n"
        "m = VisionModel.shipped('segment', device='cpu')\n"
        "m.predict(generate_scene(SceneSpec(), 0).image)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TESTBED_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == ""
