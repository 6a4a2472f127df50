"""The mask consumer (``crop-masked``) and the over-retaining TTL cropper (``crop-ttl``), in-process.

Declarations, tools/list shapes, bad images and unknown handles of both are
covered with every other server in ``test_servers.py``; these tests check what
each one does that no other server does.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest

from servers.crop_ttl import DECLARED_TTL_SECONDS, RETAINED_SECONDS
from testbed.conventions import CANONICAL, MaskEncoding, MaskResolution, encode_masks
from testbed.protocol import MemoryScope, SemanticRole
from testbed.scenes import Scene
from testbed.server_config import ServerConfig
from tests._helpers import (
    call,
    connected,
    error_message,
    expected_crop,
    image_of,
    ok_payload,
    schema_at,
    select,
    truth_tool,
)

pytestmark = pytest.mark.anyio


def rle(mask: np.ndarray) -> dict[str, Any]:
    """One boolean mask as a COCO compressed RLE dict."""
    return cast("list[dict[str, Any]]", encode_masks(mask[None], MaskEncoding.COCO_RLE))[0]


def uncompressed(mask: np.ndarray) -> dict[str, Any]:
    """One boolean mask as COCO's uncompressed RLE: run lengths of the column-major pixels, zeros first."""
    flat = mask.T.ravel().astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff([0, *changes.tolist(), flat.size]).tolist()
    if flat[0]:
        runs = [0, *runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def cut_out(scene: Scene, mask: np.ndarray) -> np.ndarray:
    """The expected result: the mask's tight box, black outside the mask (computed without the server)."""
    ys, xs = np.nonzero(mask)
    window = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    expected = scene.image[window].copy()
    expected[~mask[window]] = 0
    return expected


# --- crop-masked ----------------------------------------------------------------------------


async def test_crop_masked_reads_coco_rle_at_image_resolution_and_cuts_the_object_out_along_it(
    config: ServerConfig, scene: Scene, image_b64: str
) -> None:
    tool = truth_tool("crop-masked", "crop_mask")
    assert (tool.mask_encoding, tool.mask_resolution) == (MaskEncoding.COCO_RLE, MaskResolution.IMAGE)
    assert tool.inputs[SemanticRole.MASK] == "mask"
    masks = [obj.mask for obj in scene.objects if obj.mask is not None and obj.mask.any()]
    assert len(masks) >= 2
    async with connected("crop-masked", config) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}["crop_mask"]
        compressed = [image_of(await call(client, "crop_mask", {"image": image_b64, "mask": rle(m)})) for m in masks]
        plain = image_of(await call(client, "crop_mask", {"image": image_b64, "mask": uncompressed(masks[0])}))
    declared = listed.input_schema["properties"]["mask"]
    assert (declared["encoding"], declared["resolution"]) == ("coco_rle", "image")
    for result, mask in zip(compressed, masks, strict=True):
        np.testing.assert_array_equal(result, cut_out(scene, mask))
    np.testing.assert_array_equal(plain, compressed[0])


async def test_crop_masked_refuses_polygons_other_grids_and_empty_masks_in_one_line_naming_mask(
    config: ServerConfig, scene: Scene, image_b64: str
) -> None:
    tool = truth_tool("crop-masked", "crop_mask")
    mask = next(obj.mask for obj in scene.objects if obj.mask is not None and obj.mask.any())
    polygons = cast("list[Any]", encode_masks(mask[None], MaskEncoding.POLYGON, normalized_polygons=True))[0]
    small = rle(np.ones((48, 64), dtype=bool))
    refused = {
        "polygons": (polygons, "valid dictionary"),
        "another grid": (small, "size [48, 64] is not the image's [height, width] = [240, 320]"),
        "empty": (rle(np.zeros_like(mask)), "the mask is empty"),
        "bad runs": ({"size": [240, 320], "counts": [5, 10]}, "run lengths"),
    }
    async with connected("crop-masked", config) as client:
        for value, complaint in refused.values():
            message = error_message(await call(client, "crop_mask", {"image": image_b64, "mask": value}), tool)
            assert message.startswith("mask: ")
            assert complaint in message
        image_of(await call(client, "crop_mask", {"image": image_b64, "mask": rle(mask)}))


# --- crop-ttl -------------------------------------------------------------------------------


async def test_crop_ttl_declares_15_s_handles_but_serves_them_until_60_s_on_the_run_clock(
    config: ServerConfig, image_b64: str
) -> None:
    load, crop = truth_tool("crop-ttl", "load_image"), truth_tool("crop-ttl", "crop")
    assert (DECLARED_TTL_SECONDS, RETAINED_SECONDS) == (15.0, 60.0)
    assert load.returns is MemoryScope.TTL
    assert load.ttl_seconds == RETAINED_SECONDS  # the truth records what it does, not what it declares
    box = [10.0, 10.0, 40.0, 30.0]
    async with connected("crop-ttl", config) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        loaded = ok_payload(await call(client, "load_image", {"image_b64": image_b64}, scope="run", clock=10.0))
        image_id = select(loaded, load.paths[SemanticRole.IMAGE_HANDLE])
        for clock in (24.9, 25.0, 69.5):  # before, at and well past the declared expiry: all served
            image_of(await call(client, "crop", {"image_id": image_id, "box": box}, scope="run", clock=clock))
        late = await call(client, "crop", {"image_id": image_id, "box": box}, scope="run", clock=70.0)
    assert listed["load_image"].output_schema is not None
    declared = schema_at(listed["load_image"].output_schema, load.paths[SemanticRole.IMAGE_HANDLE])
    assert (declared["scope"], declared["ttl_seconds"]) == ("ttl", DECLARED_TTL_SECONDS)
    assert loaded["expires_at"] == 10.0 + DECLARED_TTL_SECONDS
    message = error_message(late, crop)
    assert message.startswith("image_id: ")
    assert image_id in message
    assert "expired at t=70s" in message


async def test_crop_ttl_crops_a_canonical_xyxy_box_of_the_stored_image(
    config: ServerConfig, scene: Scene, image_b64: str
) -> None:
    tool = truth_tool("crop-ttl", "crop")
    assert tool.box_convention == CANONICAL
    box = scene.objects[0].box_xyxy
    async with connected("crop-ttl", config) as client:
        image_id = ok_payload(await call(client, "load_image", {"image_b64": image_b64}))["image_id"]
        result = image_of(await call(client, "crop", {"image_id": image_id, "box": list(box)}))
        outside = error_message(
            await call(client, "crop", {"image_id": image_id, "box": [300.0, 200.0, 330.0, 230.0]}), tool
        )
    np.testing.assert_array_equal(result, expected_crop(scene, box))
    assert outside.startswith("box: ")
    assert "is not inside the 320x240 image" in outside
