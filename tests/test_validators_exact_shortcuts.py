"""Validation shortcuts that read less than the value (a mask's run lengths, an image's first bytes, a result
as recorded, fused schema checks) find exactly what reading all of it finds, errors included."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from testbed.conventions import ImageSize, coco_rle_runs, decode_masks, encode_masks, on_pixels, on_pixels_within
from testbed.events import BLOBS_DIR, BlobStore, CallEvent, MessageEvent, read_events
from testbed.imaging import encode_png_base64
from testbed.validators import RunRecord, Violation, _mask, _payload, _schema, split_runs
from testbed.validators._fastschema import compile_check

Outcome = tuple[Violation, ...] | str


def _outcome(check: Callable[[RunRecord], Iterable[Violation]], record: RunRecord) -> Outcome:
    try:
        return tuple(check(record))
    except Exception as error:  # compared as validate_runs reports it
        return f"{error.__class__.__name__}: {error}"


def _fresh(record: RunRecord, events: tuple[Any, ...] | None = None, blobs: BlobStore | None = None) -> RunRecord:
    """The record again with nothing memoised (optionally other events or blobs)."""
    return RunRecord(
        record.header,
        record.started,
        events if events is not None else record.events,
        blobs if blobs is not None else record.blobs,
        record.servers,
    )


def _both_ways(
    monkeypatch: pytest.MonkeyPatch,
    check: Callable[[RunRecord], Iterable[Violation]],
    record: RunRecord,
    *shortcuts: tuple[Any, str, Any],
) -> tuple[Outcome, Outcome]:
    """``check`` on ``record`` with its shortcuts, then with them switched off (each on a fresh record)."""
    fast = _outcome(check, _fresh(record))
    with monkeypatch.context() as patch:
        for shortcut in shortcuts:
            patch.setattr(*shortcut)
        slow = _outcome(check, _fresh(record))
    return fast, slow


def _with_call(record: RunRecord, tool: str | None, change: Callable[[CallEvent], CallEvent]) -> RunRecord:
    """``record`` with ``change`` made to every call of ``tool`` (``None``: every call)."""
    events = tuple(
        change(event) if isinstance(event, CallEvent) and tool in (None, event.tool) else event
        for event in record.events
    )
    return _fresh(record, events)


# --- coco_rle pixel counts ------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(
    height=st.integers(min_value=1, max_value=30),
    width=st.integers(min_value=1, max_value=30),
    count=st.integers(min_value=0, max_value=3),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_run_length_pixel_counts_equal_the_decoded_masks(height: int, width: int, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = rng.random((count, height, width)) < rng.choice([0.05, 0.5, 0.95])
    size = ImageSize(width=width, height=height)
    payload = encode_masks(masks, "coco_rle")
    runs = coco_rle_runs(payload, size)
    assert runs is not None
    assert len(runs) == count
    decoded = decode_masks(payload, "coco_rle", size)
    for mask, lengths in zip(decoded, runs, strict=True):
        assert on_pixels(lengths) == int(np.count_nonzero(mask))
        for _ in range(8):
            y1, x1 = (int(v) for v in rng.integers(0, [height + 3, width + 3]))
            y2, x2 = (int(v) for v in rng.integers(-2, [height + 5, width + 5]))
            assert on_pixels_within(lengths, height, (y1, y2), (x1, x2)) == int(
                np.count_nonzero(mask[y1 : max(y1, y2), x1 : max(x1, x2)])
            )


@pytest.mark.parametrize(
    "payload",
    [
        {"size": [4, 4], "counts": "4"},
        [{"size": [4, 5], "counts": "<"}],
        [{"size": [4.0, 4], "counts": "<"}],
        [{"size": [True, 4], "counts": "<"}],
        [{"size": [4, 4], "counts": "0?"}],
        [{"size": [4, 4], "counts": "a"}],
        [{"size": [4, 4], "counts": [0, 16]}],
        ["<"],
    ],
)
def test_payloads_that_need_decoding_are_left_to_decode_masks(payload: Any) -> None:
    assert coco_rle_runs(payload, ImageSize(width=4, height=4)) is None


# --- the validators, with and without their shortcuts ----------------------------------------


@pytest.fixture(scope="module")
def segmented(recorded_v1: Any) -> list[RunRecord]:
    directory = recorded_v1("detect_segment_crop", 2)
    return split_runs(read_events(directory).events, BlobStore(directory / BLOBS_DIR))


def _shift_masks(payload: Any, columns: int) -> Any:
    """The segmenter's result with every mask moved ``columns`` to the right (its boxes left where they were)."""
    size = ImageSize(width=payload["image_size"]["width"], height=payload["image_size"]["height"])
    instances = payload["instances"]
    masks = decode_masks([item["mask"] for item in instances], "coco_rle", size)
    moved = encode_masks(np.roll(masks, columns, axis=2), "coco_rle")
    return {**payload, "instances": [{**item, "mask": mask} for item, mask in zip(instances, moved, strict=True)]}


@pytest.mark.parametrize("columns", [0, 3, 25])
def test_masks_outside_their_boxes_are_found_from_run_lengths_as_from_decoded_masks(
    segmented: list[RunRecord], monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    for record in segmented:
        changed = _with_call(
            record, "segment", lambda call: call.model_copy(update={"payload": _shift_masks(call.payload, columns)})
        )
        fast, slow = _both_ways(
            monkeypatch,
            _mask.check_outside_box,
            changed,
            (_mask, "coco_rle_runs", _no_runs),
            (_mask, "_gather", lambda *arguments: None),
        )
        assert fast == slow
        if columns == 25:
            assert isinstance(fast, tuple)
            assert fast
            assert all(v.id == "mask.outside_box" for v in fast)


def _no_runs(payload: Any, size: ImageSize) -> None:
    return None


@pytest.mark.parametrize("stored", ["png", "not_an_image", "data_uri", "missing"])
def test_an_image_argument_read_from_its_first_bytes_is_judged_as_read_whole(
    segmented: list[RunRecord], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stored: str
) -> None:
    blobs = BlobStore(tmp_path / BLOBS_DIR)
    texts = {
        "png": encode_png_base64(np.zeros((8, 8), dtype=np.uint8)),
        "not_an_image": "QUJD" * 40,  # canonical base64 of bytes that are no image: stored as text
        "data_uri": "data:image/png;base64," + encode_png_base64(np.zeros((8, 8), dtype=np.uint8)),
    }
    digest = blobs.put(texts[stored]) if stored in texts else "0" * 64
    record = _with_call(
        _fresh(segmented[0], blobs=blobs),
        None,
        lambda call: call.model_copy(update={"arguments": {**call.arguments, "image": {"$blob": digest}}}),
    )
    fast, slow = _both_ways(
        monkeypatch, _payload.check_binary_unparseable, record, (_payload, "_stored_image_head", _no_head)
    )
    assert fast == slow
    assert (stored == "not_an_image") == (isinstance(fast, tuple) and len(fast) > 0)
    assert (stored == "missing") == isinstance(fast, str)


def _no_head(record: RunRecord, arguments: Any, argument: str) -> None:
    return None


def _structured(call_payload: Any, change: str) -> Any:
    if change == "wrong_type":
        return {**call_payload, "image_size": "320x240"}
    if change == "missing_field":
        return {key: value for key, value in call_payload.items() if key != "detections"}
    return call_payload


@pytest.mark.parametrize("change", ["none", "wrong_type", "missing_field", "no_structured", "missing_blob"])
def test_a_result_proven_valid_as_recorded_is_judged_as_read_whole(
    segmented: list[RunRecord], monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    record = segmented[0]
    events: list[Any] = []
    for event in record.events:
        result = event.message.get("result") if isinstance(event, MessageEvent) else None
        if (
            isinstance(event, MessageEvent)
            and isinstance(result, dict)
            and event.node == "detect"
            and (isinstance(result.get("structuredContent"), dict))
        ):
            result = dict(result)
            if change == "no_structured":
                del result["structuredContent"]
            elif change == "missing_blob":
                result["content"] = [{"type": "text", "text": {"$blob": "0" * 64}}]
            else:
                result["structuredContent"] = _structured(result["structuredContent"], change)
            event = event.model_copy(update={"message": {**event.message, "result": result}})
        events.append(event)
    changed = _fresh(record, tuple(events))
    for check in (_schema.check_structured_mismatch, _schema.check_text_json_without_schema):
        fast, slow = _both_ways(monkeypatch, check, changed, (_schema, "_readable_keys", lambda record, raw: False))
        assert fast == slow
    found = _outcome(_schema.check_structured_mismatch, _fresh(changed))
    assert (change in ("wrong_type", "missing_field", "no_structured")) == (isinstance(found, tuple) and bool(found))
    assert (change == "missing_blob") == isinstance(found, str)


# --- fused schema checks --------------------------------------------------------------------

_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "exclusiveMinimum": 0, "maximum": 9},
            "xs": {"type": "array", "items": {"type": "number", "minimum": -1}, "minItems": 1, "maxItems": 3},
            "s": {"type": "string", "maxLength": 2},
        },
        "required": ["n"],
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 2,
    },
    {"type": "object", "additionalProperties": {"type": "number", "exclusiveMaximum": 5}, "required": ["a"]},
    {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "null"}}}, "maxItems": 2},
    {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "anyOf": [{"type": "integer"}, {"maximum": 0.5}]},
]

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 12) | st.floats(-2, 12, allow_nan=False) | st.sampled_from("ab"),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["n", "xs", "s", "a", "b"]), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON)
def test_fused_schema_checks_prove_valid_exactly_what_jsonschema_finds_valid(value: Any) -> None:
    for schema in _SCHEMAS:
        check = compile_check(schema)
        assert check is not None
        assert check(value) is (not list(Draft202012Validator(schema).iter_errors(value))), (schema, value)
