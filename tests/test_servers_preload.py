"""Servers load and warm their model before serving, so a first call's deadline never pays for loading."""

from __future__ import annotations

from pathlib import Path

from servers._runtime import loaded_model_count, vision_model
from testbed.registry import registry
from testbed.server_config import ServerConfig
from testbed.vision import shipped_weights


def preload(server: str, config: ServerConfig) -> None:
    """What the runner does before a server serves: its registered preload, if it has one."""
    plugin = registry().server(server)
    if plugin.preload is not None:
        plugin.preload(config)


def test_a_detection_server_preloads_its_model_and_a_cropper_loads_none(tmp_path: Path) -> None:
    # Weights copied to a fresh path: a model this process has not loaded yet.
    weights = tmp_path / "det.pt"
    weights.write_bytes(shipped_weights("detect").read_bytes())
    config = ServerConfig(device="cpu", detect_weights=weights)
    before = loaded_model_count()

    preload("crop-xywh", config)
    assert loaded_model_count() == before

    preload("detect-xyxy", config)
    assert loaded_model_count() == before + 1
    assert vision_model("detect", config).weights_path == weights


def test_weights_that_cannot_load_are_left_for_the_first_call_to_report(tmp_path: Path) -> None:
    config = ServerConfig(device="cpu", detect_weights=tmp_path / "missing.pt")
    before = loaded_model_count()

    preload("detect-xyxy", config)  # no exception: the first call reports it as a tool error

    assert loaded_model_count() == before
