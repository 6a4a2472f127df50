"""Servers load and warm their model before serving, so a first call's deadline never pays for loading."""

from __future__ import annotations

from pathlib import Path

from servers import ServerConfig, preload_models
from servers._runtime import loaded_model_count, vision_model


def test_a_detection_server_preloads_its_model_and_a_cropper_loads_none(tmp_path: Path) -> None:
    # Weights copied to a fresh path: a model this process has not loaded yet.
    from testbed.vision import shipped_weights

    weights = tmp_path / "det.pt"
    weights.write_bytes(shipped_weights("detect").read_bytes())
    config = ServerConfig(device="cpu", detect_weights=weights)
    before = loaded_model_count()

    preload_models("cropping", config)
    assert loaded_model_count() == before

    preload_models("detection", config)
    assert loaded_model_count() == before + 1
    assert vision_model("detect", config).weights_path == weights


def test_weights_that_cannot_load_are_left_for_the_first_call_to_report(tmp_path: Path) -> None:
    config = ServerConfig(device="cpu", detect_weights=tmp_path / "missing.pt")
    before = loaded_model_count()

    preload_models("detection", config)  # no exception: the first call reports it as a tool error

    assert loaded_model_count() == before
