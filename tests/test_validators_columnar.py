"""Checks batched over many runs (run lengths of every mask decoded in one numpy pass, IoUs only where a box
lies in the image, tool truths looked up once per run) find exactly what checking one run, one box or one mask
at a time finds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.conventions import (
    ImageSize,
    decode_counts_many,
    decode_masks,
    encode_masks,
    on_pixels,
    on_pixels_within,
    pixels_in_windows,
)
from testbed.conventions._mask import _runs_if_fit
from testbed.events import BLOBS_DIR, BlobStore, CallEvent, read_events
from testbed.validators import RunRecord, Violation, _coords, _mask, split_runs


@st.composite
def _masks(draw: st.DrawFn) -> tuple[list[str], list[int], list[tuple[int, int]], list[list[int]]]:
    """Compressed masks of several sizes, some strings damaged, and a window (r0, r1, c0, c1) for each."""
    count = draw(st.integers(min_value=1, max_value=4))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    damage = draw(st.sampled_from(["none", "character", "pixels"]))
    rng = np.random.default_rng(seed)
    strings, pixels, sizes, windows = [], [], [], []
    for _ in range(count):
        height, width = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        mask = rng.random((1, height, width)) < rng.random()
        encoded: Any = encode_masks(mask, "coco_rle")
        strings.append(encoded[0]["counts"])
        pixels.append(height * width)
        sizes.append((height, width))
        windows.append([int(v) for v in rng.integers(0, max(height, width) + 3, size=4)])
    if damage == "character":
        strings[-1] = strings[-1][:-1] + chr(48 + int(rng.integers(0, 80)))
    elif damage == "pixels":
        pixels[0] += 1
    return strings, pixels, sizes, windows


@settings(max_examples=150, deadline=None)
@given(_masks())
def test_run_lengths_decoded_together_count_as_each_mask_alone(
    masks: tuple[list[str], list[int], list[tuple[int, int]], list[list[int]]],
) -> None:
    strings, pixels, sizes, windows = masks
    alone = [_runs_if_fit(text, count) for text, count in zip(strings, pixels, strict=True)]
    together = decode_counts_many(strings, pixels)
    if any(runs is None for runs in alone):
        assert together is None
        return
    assert together is not None
    heights = np.array([height for height, _ in sizes])
    widths = np.array([width for _, width in sizes])
    totals, within = pixels_in_windows(together, heights, widths, np.array(windows))
    for index, runs in enumerate(alone):
        assert runs is not None
        r0, r1, c0, c1 = windows[index]
        assert totals[index] == on_pixels(runs)
        assert within[index] == on_pixels_within(runs, sizes[index][0], (r0, r1), (c0, c1))


def test_malformed_counts_are_left_to_the_one_by_one_reading() -> None:
    assert decode_counts_many(["", "0"], [1, 1]) is None
    assert decode_counts_many(["\x7f"], [1]) is None
    assert decode_counts_many(["1"], [2]) is None  # one run of 1 pixel on a 2-pixel grid
    assert decode_counts_many(["01", "1"], [1]) is None  # not one pixel count per string


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), normalized=st.booleans())
def test_boxes_read_in_a_batch_as_each_box_alone(seed: int, normalized: bool) -> None:
    rng = np.random.default_rng(seed)
    size = ImageSize(width=64, height=48)
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        truth_corners = np.sort(rng.uniform(0, 48, size=(int(rng.integers(0, 4)), 2, 2)), axis=1)
        truth = truth_corners.transpose(0, 2, 1).reshape(-1, 4)
        boxes = rng.uniform(0, 1.1, size=(int(rng.integers(1, 5)), 4)) if normalized else rng.uniform(-5, 70, (3, 4))
        if len(truth):
            boxes[0] = truth[0]
        parts.append((boxes, truth))
    for (boxes, truth), readings in zip(parts, _coords.read_boxes_of_runs(parts, size), strict=True):
        for index, box in enumerate(boxes):
            assert readings.best[index] == _coords.infer_convention(box, size, truth)
            for convention in _coords.CONVENTIONS:
                for object_index in range(len(truth)):
                    expected = _coords.reads_as(box, convention, size, truth, object_index)
                    assert readings.reads_as(index, convention, object_index) == expected


@pytest.fixture(scope="module")
def segmented(recorded_v1: Any) -> list[RunRecord]:
    directory = recorded_v1("detect_segment_crop", 3)
    return split_runs(read_events(directory).events, BlobStore(directory / BLOBS_DIR))


def _changed(record: RunRecord, change: Any) -> RunRecord:
    events = tuple(
        event.model_copy(update={"payload": change(event.payload)})
        if isinstance(event, CallEvent) and event.tool == "segment"
        else event
        for event in record.events
    )
    return RunRecord(record.header, record.started, events, record.blobs, record.servers)


def _shifted(columns: int) -> Any:
    def change(payload: Any) -> Any:
        size = ImageSize(width=payload["image_size"]["width"], height=payload["image_size"]["height"])
        instances = payload["instances"]
        masks = decode_masks([item["mask"] for item in instances], "coco_rle", size)
        moved = encode_masks(np.roll(masks, columns, axis=2), "coco_rle")
        return {**payload, "instances": [{**item, "mask": mask} for item, mask in zip(instances, moved, strict=True)]}

    return change


def _damaged(payload: Any) -> Any:
    instances = payload["instances"]
    first = {**instances[0]["mask"], "counts": instances[0]["mask"]["counts"] + "1"}  # one pixel too many
    return {**payload, "instances": [{**instances[0], "mask": first}, *instances[1:]]}


def _outcomes(records: list[RunRecord], batched: bool) -> list[tuple[Violation, ...] | str]:
    fresh = [RunRecord(r.header, r.started, r.events, r.blobs, r.servers) for r in records]
    if batched:
        _mask.count_outside_of_runs(fresh)
        counted = [entry is not None for record in fresh for entry in _mask.outside_counts(record)]
        assert any(counted)
        assert not all(counted)  # the damaged run's call
    found: list[tuple[Violation, ...] | str] = []
    for record in fresh:
        try:
            found.append(tuple(_mask.check_outside_box(record)))
        except Exception as error:  # compared as validate_runs reports it
            found.append(f"{error.__class__.__name__}: {error}")
    return found


def test_masks_outside_their_boxes_are_found_across_runs_as_one_mask_at_a_time(
    segmented: list[RunRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [
        _changed(segmented[0], _shifted(25)),
        _changed(segmented[1], _damaged),  # one unreadable mask: its run is counted alone, the others together
        _changed(segmented[2], _shifted(3)),
        *segmented,
    ]
    batched = _outcomes(records, batched=True)
    with monkeypatch.context() as patch:
        patch.setattr(_mask, "_gather", lambda *arguments: None)
        one_by_one = _outcomes(records, batched=False)
    assert batched == one_by_one
    assert any(isinstance(found, tuple) and found for found in batched)
    assert all(v.id == "mask.outside_box" for found in batched if isinstance(found, tuple) for v in found)
