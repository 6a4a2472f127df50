"""Validation's lookups and shortcuts that read less find exactly what reading all of it finds: box edges read
once per distinct box and only where a box could locate an object, payload paths walked without the resolver,
boxes converted once for every item they feed, blobs known present from one listing of their folder, results
known to hold no blob reference, and what a whole experiment shares computed once for all its runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.conventions import ImageSize, from_canonical
from testbed.events import BLOBS_DIR, BlobStore, read_events
from testbed.validators import RunRecord, _apply, _model, registered_validators, split_runs, validate_runs
from testbed.validators._coords import (
    CONVENTIONS,
    MATCH_IOU,
    _box_rows,
    _distinct_rows,
    _read_batch,
    as_boxes,
    read_boxes_of_runs,
)
from testbed.validators._fastschema import blob_references
from testbed.validators._model import share_blob_readers
from testbed.validators._payload import _suffix
from testbed.validators._workflow import read_at
from testbed.workflow import read_path


def _bits(array: Any) -> Any:
    return np.asarray(array, dtype=np.float64).view(np.uint64)


@st.composite
def _parts(draw: st.DrawFn) -> tuple[ImageSize, list[tuple[np.ndarray, np.ndarray]]]:
    """Runs' boxes (some copies of a truth box read in another convention, some repeated) and truth boxes."""
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    size = ImageSize(width=int(rng.integers(20, 400)), height=int(rng.integers(20, 400)))
    parts = []
    for _ in range(int(rng.integers(1, 5))):
        corners = np.sort(rng.uniform(0, min(size.width, size.height), size=(int(rng.integers(0, 5)), 2, 2)), axis=1)
        truth = corners.transpose(0, 2, 1).reshape(-1, 4)
        if len(truth) and rng.random() < 0.1:
            truth[0, int(rng.integers(0, 4))] = rng.choice([np.nan, np.inf])  # left to the IoUs themselves
        boxes = rng.uniform(-10, max(size.width, size.height) + 10, size=(int(rng.integers(1, 7)), 4))
        for row in range(len(boxes)):
            if len(truth) and rng.random() < 0.6:  # a truth box, in some convention, a little off
                convention = CONVENTIONS[int(rng.integers(0, len(CONVENTIONS)))]
                box = truth[int(rng.integers(0, len(truth)))]
                if np.isfinite(box).all():
                    boxes[row] = from_canonical(box[None] + rng.normal(0, 2, 4), convention, size)[0]
        if rng.random() < 0.5:
            boxes = np.concatenate([boxes, boxes[::2]])  # copies, as edges repeat a detection
        parts.append((boxes, truth))
    return size, parts


@settings(max_examples=150, deadline=None)
@given(_parts())
def test_boxes_read_where_they_could_locate_an_object_read_as_every_box_read(
    drawn: tuple[ImageSize, list[tuple[np.ndarray, np.ndarray]]],
) -> None:
    size, parts = drawn
    distinct = [_distinct_rows(boxes) for boxes, _ in parts]
    try:
        everything = read_boxes_of_runs(parts, size)
    except Exception as error:  # an object with an infinite side: numpy's warning, raised under this suite
        with pytest.raises(type(error), match=str(error)):
            _read_batch(
                [(rows, truth) for (rows, _), (_, truth) in zip(distinct, parts, strict=True)], size, located_only=True
            )
        return
    batch = _read_batch(
        [(rows, truth) for (rows, _), (_, truth) in zip(distinct, parts, strict=True)], size, located_only=True
    )
    offset = 0
    for (rows, where), readings, (boxes, truth) in zip(distinct, everything, parts, strict=True):
        assert len(where) == len(boxes)
        for index, at in enumerate(where):
            assert _bits(rows[at]).tolist() == _bits(boxes[index]).tolist()
            position = offset + at
            assert batch.best[position] == readings.best[index]
            np.testing.assert_array_equal(_bits(batch.canonical[:, position]), _bits(readings.canonical[:, index]))
            np.testing.assert_array_equal(batch.inside[:, position], readings.inside[:, index])
            for k in range(len(CONVENTIONS)):
                for object_index in range(len(truth)):
                    every = readings.ious[k, index, object_index]
                    located = batch.ious[k, position, object_index]
                    if every >= MATCH_IOU:  # every IoU that locates is the same, bit for bit
                        assert _bits(located) == _bits(every)
                    else:
                        assert not located >= MATCH_IOU
        offset += len(rows)


def test_distinct_rows_tell_apart_what_differs_in_a_bit() -> None:
    boxes = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 3.0, 4.0], [-0.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    rows, where = _distinct_rows(boxes)
    assert where == [0, 1, 2, 0]
    np.testing.assert_array_equal(_bits(rows), _bits(boxes[:3]))


_PAYLOAD = {
    "detections": [{"bbox": [1, 2.5, 3, 4], "label": "a"}, {"bbox": [5, 6, 7, 8], "label": "b"}],
    "nested": {"list": [[1, 2], [3]], "empty": []},
    "flag": True,
}


@pytest.mark.parametrize(
    "path",
    [
        "detections[*].bbox",
        "detections[1].label",
        "detections[-1].bbox[0]",
        "detections[2]",
        "detections[*].missing",
        "nested.list[*][0]",
        "nested.list[1][0]",
        "nested.empty[*]",
        "flag.x",
        "flag[0]",
        "nested",
        "[0]",
        "detections[*]",
    ],
)
def test_payload_paths_read_without_the_resolver_read_as_the_resolver_reads(path: str) -> None:
    def outcome(reader: Any) -> Any:
        try:
            return ("value", reader(_PAYLOAD, path))
        except Exception as error:
            return ("error", type(error).__name__, str(error))

    assert outcome(read_at) == outcome(read_path)


@pytest.mark.parametrize(
    "value",
    [
        [[1.0, 2.0, 3.0, 4.0], [5, 6, 7, 8]],
        [[1.0, 2.0, 3.0, float("inf")], [5, 6, 7, 8]],
        [[1.0, 2.0, 3.0], [5, 6, 7, 8]],
        [[1.0, 2.0, 3.0, 4.0], "x"],
        [[True, 2.0, 3.0, 4.0]],
        [["1", "2", "3", "4"]],
        [[[1, 2], [3, 4]]],
        [],
        [1.0, 2.0, 3.0, 4.0],
    ],
)
def test_boxes_converted_once_for_every_item_are_each_item_converted(value: Any) -> None:
    rows = _box_rows(value)
    for item, element in enumerate(value):
        alone = as_boxes(element)
        if rows is None:
            continue
        assert alone is not None
        np.testing.assert_array_equal(_bits(rows[item : item + 1]), _bits(alone))
    if rows is not None:
        whole = as_boxes(value)
        assert whole is not None
        np.testing.assert_array_equal(_bits(rows), _bits(whole))


@pytest.mark.parametrize("value", [[1.0, 2.0, 3.0, 4.0], [1, 2, 3, float("nan")], [1, 2, 3, 10**300], [0.5] * 8])
def test_a_flat_list_of_numbers_is_checked_finite_as_the_array_would_be(value: list[Any]) -> None:
    boxes = as_boxes(value)
    array = np.array(value, dtype=np.float64)
    assert (boxes is not None) == bool(np.isfinite(array).all())


@pytest.mark.parametrize("name", ["/r/.png", "/r/a.png", "/r/a..png", "/r/a.b.jpg", "/r/..png", "/r/a.", "/r/abc"])
def test_a_listed_blob_file_has_its_path_suffix(name: str) -> None:
    assert _suffix(name) == Path(name).suffix


@pytest.fixture(scope="module")
def segmented(recorded_v1: Any) -> Path:
    directory: Path = recorded_v1("detect_segment_crop", 3)
    return directory


def _runs(directory: Path, blobs: BlobStore | None = None) -> list[RunRecord]:
    return split_runs(read_events(directory).events, blobs or BlobStore(directory / BLOBS_DIR))


def test_blobs_known_present_from_the_listing_are_those_the_store_finds(segmented: Path) -> None:
    records = _runs(segmented)
    share_blob_readers(records)
    digests = {
        digest for record in records for event in record.events for digest in blob_references(event.model_dump())
    }
    assert digests
    for record in records[:1]:
        for digest in [*sorted(digests), "0" * 64, "", "../x"]:
            assert record.blob_exists(digest) == (record.blobs.path(digest) is not None)
            listed = record.blob_file(digest)
            assert listed is None or listed == str(record.blobs.path(digest))


def test_a_missing_blob_is_judged_as_without_the_shared_listing(
    segmented: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "blobs"
    copy.mkdir()
    names = sorted(os.listdir(segmented / BLOBS_DIR))
    for name in names:
        (copy / name).write_bytes((segmented / BLOBS_DIR / name).read_bytes())
    records = _runs(segmented, BlobStore(copy))
    image = records[0].started.image_blob
    for name in names:  # the first run's scene and one text blob (a result's) go missing
        if name.startswith(image) or (name.endswith(".txt") and name == min(n for n in names if n.endswith(".txt"))):
            (copy / name).unlink()
    found = validate_runs(_runs(segmented, BlobStore(copy)), registered_validators())
    with monkeypatch.context() as patch:
        patch.setattr(_apply, "share_blob_readers", lambda records: None)
        expected = validate_runs(_runs(segmented, BlobStore(copy)), registered_validators())
    assert found.failures  # reading the missing blobs fails, and says so
    assert found.violations == expected.violations
    assert found.failures == expected.failures


@pytest.mark.parametrize(
    ("scenario", "shared"),
    [
        ("detect_segment_crop", set()),
        ("fanout_incompatible", {"conn.untyped_edge", "schema.field_name_divergence"}),
        ("segment_polygon_crop_masked_incompatible", {"conn.type_incompatible"}),
    ],
)
def test_what_an_experiment_shares_is_found_for_each_run_as_alone(
    recorded_v1: Any, scenario: str, shared: set[str]
) -> None:
    directory = recorded_v1(scenario, 3)
    together = validate_runs(_runs(directory), registered_validators())  # the first run's findings serve all
    alone = []
    for record in _runs(directory):
        _model._per_experiment.clear()  # each run finds them for itself
        alone.append(validate_runs([record], registered_validators()))
    assert shared <= {violation.id for violation in together.violations}
    assert together.violations == tuple(v for result in alone for v in result.violations)
    assert together.failures == tuple(f for result in alone for f in result.failures)
