"""Synthetic scenes and real-image loaders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from testbed._errors import InvalidImageError, TestbedError
from testbed._seeding import derive_seed_sequence
from testbed.imaging import encode_png
from testbed.registry import registry
from testbed.scenes import (
    SHAPE_CLASSES,
    Scene,
    SceneSpec,
    forget_drawn_scenes,
    generate_scene,
    load_image_folder,
    load_scene,
    packaged_images,
    tight_box,
)


def test_same_seed_gives_identical_image_bytes_and_ground_truth() -> None:
    first = generate_scene(SceneSpec(), 42)
    second = generate_scene(SceneSpec(), 42)
    assert encode_png(first.image) == encode_png(second.image)
    assert [(o.class_name, o.box_xyxy) for o in first.objects] == [(o.class_name, o.box_xyxy) for o in second.objects]
    for a, b in zip(first.objects, second.objects, strict=True):
        assert a.mask is not None
        assert b.mask is not None
        assert np.array_equal(a.mask, b.mask)


def test_different_seeds_give_different_scenes() -> None:
    images = {encode_png(generate_scene(SceneSpec(), derive_seed_sequence(0, "scene", i)).image) for i in range(5)}
    assert len(images) == 5


def test_ground_truth_boxes_are_tight_around_visible_masks() -> None:
    for seed in range(20):
        scene = generate_scene(SceneSpec(max_overlap=0.4, max_objects=8), seed)
        for obj in scene.objects:
            assert obj.mask is not None
            assert obj.box_xyxy == tight_box(obj.mask)
            assert obj.class_name == SHAPE_CLASSES[obj.class_id]
            x1, y1, x2, y2 = obj.box_xyxy
            assert 0 <= x1 < x2 <= scene.width
            assert 0 <= y1 < y2 <= scene.height


def test_visible_masks_never_overlap_so_occlusion_is_exact() -> None:
    for seed in range(20):
        scene = generate_scene(SceneSpec(max_overlap=0.5, max_objects=10), seed)
        stacked = np.stack([o.mask for o in scene.objects if o.mask is not None]) if scene.objects else None
        if stacked is not None:
            assert stacked.sum(axis=0).max() <= 1


def test_zero_overlap_limit_keeps_object_boxes_disjoint() -> None:
    for seed in range(30):
        boxes = [o.box_xyxy for o in generate_scene(SceneSpec(max_objects=8), seed).objects]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                overlap_w = min(a[2], b[2]) - max(a[0], b[0])
                overlap_h = min(a[3], b[3]) - max(a[1], b[1])
                assert overlap_w <= 0 or overlap_h <= 0


def test_object_count_and_classes_follow_the_spec() -> None:
    spec = SceneSpec(min_objects=2, max_objects=3, classes=("circle",), width=400, height=300)
    for seed in range(15):
        scene = generate_scene(spec, seed)
        assert 2 <= len(scene.objects) <= 3
        assert {o.class_name for o in scene.objects} == {"circle"}
        assert scene.image.shape == (300, 400, 3)


def test_scene_arrays_are_read_only() -> None:
    scene = generate_scene(SceneSpec(), 1)
    with pytest.raises(ValueError, match="read-only"):
        scene.image[0, 0, 0] = 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_objects": 5, "max_objects": 2}, "min_objects"),
        ({"min_size": 50, "max_size": 20}, "min_size"),
        ({"classes": ("hexagon",)}, "classes"),
        ({"max_size": 500}, "max_size"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_scene_spec_names_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SceneSpec.model_validate(fields)


def test_packaged_ultralytics_images_load() -> None:
    images = packaged_images()
    assert {"bus.jpg", "zidane.jpg"} <= set(images)
    scene = load_scene(images["bus.jpg"])
    assert scene.image.ndim == 3
    assert scene.objects == ()
    assert not scene.has_ground_truth


def test_folder_with_yolo_labels_gives_ground_truth(tmp_path: Path) -> None:
    scene = generate_scene(SceneSpec(min_objects=2, max_objects=2), 3)
    (tmp_path / "a.png").write_bytes(encode_png(scene.image))
    (tmp_path / "classes.txt").write_text("\n".join(SHAPE_CLASSES))
    lines = []
    for obj in scene.objects:
        x1, y1, x2, y2 = obj.box_xyxy
        w, h = scene.width, scene.height
        lines.append(f"{obj.class_id} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}")
    (tmp_path / "a.txt").write_text("\n".join(lines))
    [loaded] = load_image_folder(tmp_path)
    assert [o.class_name for o in loaded.objects] == [o.class_name for o in scene.objects]
    for got, want in zip(loaded.objects, scene.objects, strict=True):
        np.testing.assert_allclose(got.box_xyxy, want.box_xyxy, atol=1e-6)
        assert got.mask is None


def test_folder_with_coco_json_gives_boxes_and_masks(tmp_path: Path) -> None:
    from pycocotools import mask as coco_mask

    scene = generate_scene(SceneSpec(min_objects=2, max_objects=3), 5)
    (tmp_path / "img.png").write_bytes(encode_png(scene.image))
    annotations = []
    for index, obj in enumerate(scene.objects):
        assert obj.mask is not None
        rle = coco_mask.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        x1, y1, x2, y2 = obj.box_xyxy
        annotations.append(
            {"id": index, "image_id": 7, "category_id": obj.class_id + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "segmentation": rle}
        )  # fmt: skip
    document = {
        "images": [{"id": 7, "file_name": "img.png", "width": scene.width, "height": scene.height}],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(SHAPE_CLASSES)],
        "annotations": annotations,
    }
    (tmp_path / "instances.json").write_text(json.dumps(document))
    [loaded] = load_image_folder(tmp_path)
    for got, want in zip(loaded.objects, scene.objects, strict=True):
        assert got.class_name == want.class_name
        assert got.box_xyxy == want.box_xyxy
        assert got.mask is not None
        assert want.mask is not None
        assert np.array_equal(got.mask, want.mask)


def test_malformed_yolo_label_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode_png(generate_scene(SceneSpec(), 0).image))
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n1 0.2 oops\n")
    with pytest.raises(TestbedError, match=r"a\.txt:2"):
        load_image_folder(tmp_path)


def test_folder_without_images_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match="no images"):
        load_image_folder(tmp_path)


def test_non_image_file_is_rejected_with_its_path(tmp_path: Path) -> None:
    bogus = tmp_path / "not-an-image.png"
    bogus.write_text("hello")
    with pytest.raises(InvalidImageError, match=r"not-an-image\.png"):
        load_scene(bogus)


def test_jpeg_decodes_to_rgb_channel_order(tmp_path: Path) -> None:
    red = np.zeros((32, 32, 3), dtype=np.uint8)
    red[:, :, 0] = 255
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), cv2.cvtColor(red, cv2.COLOR_RGB2BGR))
    assert load_scene(path).image[0, 0].tolist() == [255, 0, 0]


def test_a_synthetic_scene_drawn_again_is_equal_and_owns_its_arrays() -> None:
    spec = SceneSpec(min_objects=2, max_objects=3)
    synthetic = registry().scene_source("synthetic")
    fresh = generate_scene(spec, derive_seed_sequence(5, "scene", 2))
    first = synthetic.load(spec, seed=5, run=2, base_dir=None)
    first.image[:] = 0
    for obj in first.objects:
        if obj.mask is not None:
            obj.mask[:] = False
    again = synthetic.load(spec, seed=5, run=2, base_dir=None)
    assert np.array_equal(again.image, fresh.image)
    assert [obj.box_xyxy for obj in again.objects] == [obj.box_xyxy for obj in fresh.objects]
    masks = [(a.mask, b.mask) for a, b in zip(again.objects, fresh.objects, strict=True)]
    assert all(a is not None and b is not None and np.array_equal(a, b) for a, b in masks)
    assert not np.array_equal(synthetic.load(spec, seed=5, run=3, base_dir=None).image, fresh.image)
    forget_drawn_scenes()
    assert np.array_equal(synthetic.load(spec, seed=5, run=2, base_dir=None).image, fresh.image)


def test_a_scene_copy_is_equal_and_independent() -> None:
    scene: Scene = generate_scene(SceneSpec(), 8)
    copied = scene.copy()
    assert copied.nbytes == scene.nbytes > scene.image.nbytes
    copied.image[0, 0] = 255 - scene.image[0, 0]
    assert not np.array_equal(copied.image, scene.image)
