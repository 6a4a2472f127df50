"""The YOLO backend: shipped weights, caching, and clear errors for bad weights and devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testbed._errors import DeviceError, WeightsError
from testbed._seeding import derive_seed_sequence
from testbed.scenes import SceneSpec, generate_scene
from testbed.vision import (
    WEIGHTS_DIR,
    InferenceCache,
    InferenceParams,
    InferenceResult,
    VisionModel,
    file_sha256,
    match_predictions,
    read_manifest,
    resolve_device,
)


@pytest.fixture(scope="module")
def detector() -> VisionModel:
    return VisionModel.shipped("detect", device="cpu", cache=InferenceCache())


@pytest.fixture(scope="module")
def segmenter() -> VisionModel:
    return VisionModel.shipped("segment", device="cpu", cache=InferenceCache())


def test_shipped_weights_match_their_manifest_and_are_small() -> None:
    manifest = read_manifest()
    assert set(manifest.models) == {"detect", "segment"}
    for entry in manifest.models.values():
        path = WEIGHTS_DIR / entry.file
        assert file_sha256(path) == entry.sha256
        assert path.stat().st_size == entry.size_bytes < 10_000_000
        assert entry.metrics["box_map50"] >= 0.90
    assert manifest.models["segment"].metrics["mask_map50"] >= 0.85


def test_shipped_detector_finds_90_percent_of_objects_on_fresh_scenes(detector: VisionModel) -> None:
    found = total = 0
    for index in range(20):
        scene = generate_scene(SceneSpec(), derive_seed_sequence(2026, "fresh-test-scenes", index))
        result = detector.predict(scene.image)
        gt = np.array([o.box_xyxy for o in scene.objects]).reshape(-1, 4)
        matches = match_predictions(
            gt, np.array([o.class_id for o in scene.objects]), result.boxes_xyxy, result.class_ids
        )
        found += sum(m.ground_truth is not None for m in matches)
        total += len(scene.objects)
    assert total >= 40
    assert found / total >= 0.90, f"recall {found}/{total}"


def test_shipped_segmenter_masks_match_ground_truth(segmenter: VisionModel) -> None:
    from testbed.conventions import mask_iou

    ious = []
    for index in range(10):
        scene = generate_scene(SceneSpec(), derive_seed_sequence(2026, "fresh-mask-scenes", index))
        result = segmenter.predict(scene.image)
        assert result.masks is not None
        assert result.model_masks is not None
        assert result.masks.shape[1:] == scene.image.shape[:2]
        gt = np.array([o.box_xyxy for o in scene.objects]).reshape(-1, 4)
        for match in match_predictions(
            gt, np.array([o.class_id for o in scene.objects]), result.boxes_xyxy, result.class_ids
        ):
            if match.ground_truth is not None:
                truth = scene.objects[match.ground_truth].mask
                assert truth is not None
                ious.append(mask_iou(result.masks[match.prediction], truth))
    assert len(ious) >= 20
    assert float(np.median(ious)) >= 0.8


def test_repeated_inference_is_served_from_the_cache(detector: VisionModel) -> None:
    assert detector.cache is not None
    detector.cache.clear()
    image = generate_scene(SceneSpec(), 11).image
    first = detector.predict(image)
    second = detector.predict(np.array(image, copy=True))
    assert second is first
    assert detector.cache.stats.hits == 1
    third = detector.predict(image, InferenceParams(conf=0.5))
    assert third is not first
    assert detector.cache.stats.misses == 2


def test_a_model_warms_up_once_per_parameters(detector: VisionModel, monkeypatch: pytest.MonkeyPatch) -> None:
    inferred: list[InferenceParams] = []
    infer = detector._infer

    def counted(image: np.ndarray, params: InferenceParams) -> InferenceResult:
        inferred.append(params)
        return infer(image, params)

    monkeypatch.setattr(detector, "_infer", counted)
    small, confident = InferenceParams(imgsz=160), InferenceParams(imgsz=160, conf=0.6)
    detector.warm_up(small)
    detector.warm_up(small)
    detector.warm_up(confident)
    assert inferred == [small, confident]


def test_cache_is_bounded_by_entries_and_bytes() -> None:
    def result(n_bytes: int) -> InferenceResult:
        return InferenceResult(
            boxes_xyxy=np.zeros((n_bytes // 32, 4)),
            scores=np.zeros(0),
            class_ids=np.zeros(0, dtype=np.int64),
            class_names=(),
            image_size=(1, 1),
        )

    cache: InferenceCache[InferenceResult] = InferenceCache(max_entries=3, max_bytes=1000)
    for key in range(5):
        cache.put(key, result(320))
    assert cache.stats.entries <= 3
    assert cache.stats.bytes <= 1000
    assert cache.get(0) is None
    assert cache.get(4) is not None


def test_missing_weights_are_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nothing\.pt: weights file not found"):
        VisionModel(tmp_path / "nothing.pt")


def test_hub_names_are_never_downloaded() -> None:
    with pytest.raises(WeightsError, match="hub names are never downloaded"):
        VisionModel("yolov8n.pt")


def test_corrupt_weights_are_reported_not_crashed(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(WeightsError, match=r"corrupt\.pt: not valid Ultralytics weights"):
        VisionModel(corrupt, device="cpu")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu:0", ""])
def test_unknown_device_is_rejected(device: str) -> None:
    with pytest.raises(DeviceError, match="is unknown"):
        resolve_device(device)


def test_auto_device_resolves_to_an_available_device() -> None:
    import torch

    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_cuda_on_a_machine_without_it_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda:0")
