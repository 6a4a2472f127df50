"""Issue 11's fast paths give exactly what the slow ones give: array-at-once box conversion and IoU (bit for
bit), batched convention inference, the fast proof of JSON Schema validity, blob resolution that shares, and
the test replay uses to validate a recording once."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from testbed.conventions import (
    ImageSize,
    all_box_conventions,
    box_iou,
    box_iou_many,
    from_canonical,
    to_canonical,
    to_canonical_many,
)
from testbed.events import BLOBS_DIR, BlobStore, MessageEvent, internalize, read_events
from testbed.validators import (
    RunRecord,
    check_out_of_scope,
    check_unbounded_store,
    indistinguishable,
    registered_validators,
    split_runs,
    validate_runs,
)
from testbed.validators._coords import CONVENTIONS, infer_convention, read_boxes, read_boxes_of_runs, reads_as
from testbed.validators._coords_free import check_across_runs
from testbed.validators._fastschema import blob_references, compile_check
from testbed.validators._model import _resolved
from testbed.validators._provenance import _Parts


def _bits(array: Any) -> Any:
    return np.asarray(array, dtype=np.float64).view(np.uint64)


@pytest.mark.parametrize("seed", range(6))
def test_array_at_once_conversion_and_iou_equal_the_one_at_a_time_forms_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    conventions = all_box_conventions()
    for _ in range(40):
        size = ImageSize(width=int(rng.integers(1, 2000)), height=int(rng.integers(1, 2000)))
        boxes = rng.normal(size=(int(rng.integers(0, 6)), 4)) * rng.choice([0.3, 1.0, 300.0]) + rng.choice([0, 50])
        truth = rng.uniform(0, 500, size=(int(rng.integers(0, 5)), 4))
        many = to_canonical_many(boxes, conventions, size)
        ious = box_iou_many(many, truth)
        for k, convention in enumerate(conventions):
            one = to_canonical(boxes, convention, size)
            np.testing.assert_array_equal(_bits(many[k]), _bits(one))
            np.testing.assert_array_equal(_bits(ious[k]), _bits(box_iou(one, truth)))


@pytest.mark.parametrize("seed", range(4))
def test_batched_inference_equals_inferring_each_box_alone(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for trial in range(60):
        size = ImageSize(width=int(rng.integers(20, 1200)), height=int(rng.integers(20, 1200)))
        count = int(rng.integers(0, 5))
        corner = rng.uniform(0, 0.8, (count, 2)) * [size.width, size.height]
        truth = np.concatenate([corner, corner + rng.uniform(1, 0.3 * min(size.width, size.height), (count, 2))], 1)
        if trial % 4 == 0 and count > 1:
            truth[1] = truth[0]  # two objects in one place: ties in the IoU argmax
        boxes = []
        for _ in range(int(rng.integers(1, 6))):
            if count and rng.random() < 0.8:  # an object written in some convention, a little off
                written = truth[int(rng.integers(0, count))] + rng.normal(0, rng.choice([0.0, 0.5, 5.0]), 4)
                boxes.append(from_canonical(written.reshape(1, 4), CONVENTIONS[int(rng.integers(0, 36))], size)[0])
            else:
                boxes.append(rng.uniform(-10, max(size.width, size.height), 4))
        array = np.array(boxes)
        readings = read_boxes(array, size, truth)
        for index, box in enumerate(array):
            assert readings.best[index] == infer_convention(box, size, truth)
            for convention in CONVENTIONS[::5]:
                for gt in range(count):
                    assert readings.reads_as(index, convention, gt) == reads_as(box, convention, size, truth, gt)


@pytest.mark.parametrize("seed", range(4))
def test_reading_several_runs_in_one_batch_equals_reading_each_alone_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    size = ImageSize(width=int(rng.integers(20, 1200)), height=int(rng.integers(20, 1200)))
    parts = []
    for _ in range(int(rng.integers(1, 8))):
        count = int(rng.integers(0, 6))  # runs without ground truth, and runs of different object counts
        corner = rng.uniform(0, 0.8, (count, 2)) * [size.width, size.height]
        truth = np.concatenate([corner, corner + rng.uniform(1, 0.3 * min(size.width, size.height), (count, 2))], 1)
        rows = [
            from_canonical(truth[[int(rng.integers(0, count))]], CONVENTIONS[int(rng.integers(0, 36))], size)[0]
            if count and rng.random() < 0.7
            else rng.uniform(-10, max(size.width, size.height), 4)
            for _ in range(int(rng.integers(1, 5)))
        ]
        parts.append((np.array(rows), truth))
    for batched, (boxes, truth) in zip(read_boxes_of_runs(parts, size), parts, strict=True):
        alone = read_boxes(boxes, size, truth)
        assert batched.best == alone.best
        np.testing.assert_array_equal(batched.inside, alone.inside)
        np.testing.assert_array_equal(_bits(batched.canonical), _bits(alone.canonical))
        assert batched.ious.shape == alone.ious.shape == (36, len(boxes), len(truth))
        np.testing.assert_array_equal(_bits(batched.ious), _bits(alone.ious))
        for index, box in enumerate(boxes):
            assert alone.best[index] == infer_convention(box, size, truth)


SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"image": {"type": "string", "description": "base64"}}, "required": ["image"]},
    {
        "type": "object",
        "properties": {
            "detections": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                        "score": {"type": "number", "minimum": 0, "maximum": 1},
                        "label": {"type": "string", "semantic_role": "class_label"},
                    },
                    "required": ["bbox", "label"],
                    "additionalProperties": False,
                },
            },
            "count": {"type": "integer", "exclusiveMinimum": -1},
            "note": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}], "default": None},
        },
        "required": ["detections"],
    },
    {"type": ["array", "null"], "items": {"type": "object", "additionalProperties": {"type": "integer"}}},
    {"type": "object", "minProperties": 1, "maxProperties": 2, "allOf": [{"required": ["a"]}, {"type": "object"}]},
    {"type": "string", "minLength": 2, "format": "uri"},
    {"properties": {"x": False, "y": True}},
]

VALUES: list[Any] = [
    None,
    True,
    0,
    1.0,
    1.5,
    -1,
    "",
    "abc",
    "abcdefg",
    [],
    [1, 2, 3, 4],
    [1, True, 3, 4],
    {},
    {"a": 1},
    {"a": 1, "b": 2, "c": 3},
    {"a": "x"},
    {"image": "aGVsbG8="},
    {"image": 3},
    {"x": 1},
    {"y": [1]},
    {"detections": []},
    {"detections": [{"bbox": [1, 2, 3, 4], "label": "circle", "score": 0.5}], "count": 0},
    {"detections": [{"bbox": [1, 2, 3], "label": "circle"}]},
    {"detections": [{"bbox": [1, 2, 3, 4], "label": "circle", "extra": 1}]},
    {"detections": [{"bbox": [1, 2, 3, 4], "label": "circle", "score": 2}]},
    {"detections": [{"bbox": [1, 2, 3, 4], "label": "circle"}], "count": -1},
    {"detections": [{"bbox": [1, 2, 3, 4], "label": "circle"}], "count": 2.0, "note": "long note"},
    {"detections": [{"bbox": [1, 2, 3, 4], "label": "circle"}], "note": None},
    [{"a": 1}, {"b": 2.0}],
    [{"a": 1.5}],
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_the_fast_schema_check_proves_valid_only_what_jsonschema_finds_valid(schema: dict[str, Any]) -> None:
    check = compile_check(schema)
    assert check is not None
    validator = Draft202012Validator(schema)
    for value in VALUES:
        valid = not list(validator.iter_errors(value))
        assert check(value) == valid, value  # these schemas are fully mirrored: the proof is exact


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}},
        {"enum": [1, 2]},
        {"type": "string", "pattern": "^a"},
        {"prefixItems": [{"type": "string"}]},
        {"patternProperties": {"^x": {"type": "string"}}},
        {"type": "strange"},
        {"minItems": "3"},
        {"properties": {"a": {"oneOf": [{"type": "string"}]}}},
    ],
)
def test_schemas_using_anything_else_are_left_to_jsonschema(schema: dict[str, Any]) -> None:
    assert compile_check(schema) is None


def test_an_unresolved_blob_reads_as_a_string_of_unknown_content() -> None:
    schema = {"type": "object", "properties": {"image": {"type": "string"}, "boxes": {"type": "array"}}}
    check = compile_check(schema, opaque_blobs=True)
    assert check is not None
    blob = {"$blob": "ab" * 32}
    assert check({"image": blob, "boxes": []})
    assert not check({"image": [], "boxes": blob})  # a string is not an array
    long_enough = compile_check({"type": "string", "minLength": 1}, opaque_blobs=True)
    assert long_enough is not None
    assert not long_enough(blob)  # its length is unknown: not proven
    assert blob_references({"a": [blob, {"b": blob}], "c": "x"}) == ["ab" * 32, "ab" * 32]


class _Blobs:
    def get(self, digest: str) -> str:
        return f"<{digest}>"


def test_resolving_blobs_while_sharing_what_holds_none_equals_internalize() -> None:
    blobs: Any = _Blobs()
    value = {
        "a": [1, 2.5, "x", None, True],
        "b": {"$blob": "d1"},
        "c": [{"d": {"$blob": "d2"}, "e": [1]}, {"f": [[1, 2], [3]]}],
        "g": {"h": {"i": 1}},
        "j": {"$blob": "d3", "k": 1},
    }
    resolved = _resolved(value, blobs)
    assert resolved == internalize(value, blobs)
    assert resolved["a"] is value["a"]  # nothing to resolve: shared
    assert resolved["g"] is value["g"]
    assert value["b"] == {"$blob": "d1"}  # the recorded value is left as it was


def test_runs_that_differ_only_where_no_validator_looks_are_indistinguishable(recorded_v1: Any) -> None:
    directory = recorded_v1("detect_crop_incompatible", 2)
    blobs = BlobStore(directory / BLOBS_DIR)
    first = split_runs(read_events(directory).events, blobs)
    second = split_runs(read_events(directory).events, blobs)  # equal, not the same objects
    assert indistinguishable(first, second)

    def changed(runs: list[RunRecord], change: Any) -> list[RunRecord]:
        run = runs[0]
        messages = [i for i, event in enumerate(run.events) if isinstance(event, MessageEvent)]
        position = next(i for i in messages if "id" in run.events[i].message)  # type: ignore[union-attr]
        events = list(run.events)
        events[position] = change(events[position])
        return [RunRecord(run.header, run.started, tuple(events), run.blobs, run.servers), *runs[1:]]

    later = changed(second, lambda event: event.model_copy(update={"time": event.time + 60}))
    assert indistinguishable(first, later)
    renumbered = changed(second, lambda event: event.model_copy(update={"message": {**event.message, "id": 999}}))
    assert not indistinguishable(first, renumbered)
    assert not indistinguishable(first, second[:1])


@pytest.mark.slow
def test_validating_runs_together_finds_what_validating_each_alone_finds(recorded_v1: Any) -> None:
    """``validate_runs`` reads the box values and edges of all runs in batches; one run at a time reads its own."""
    for name in ("detect_crop_incompatible", "detect_segment_crop_incompatible"):
        directory = recorded_v1(name, 3)
        events = read_events(directory).events
        blobs = BlobStore(directory / BLOBS_DIR)
        together = validate_runs(split_runs(events, blobs), registered_validators())
        alone = [
            violation
            for record in split_runs(events, blobs)
            for spec in registered_validators()
            for violation in spec.check(record)
        ]
        ids = {violation.id for violation in together.violations}
        assert {"coords.out_of_bounds", "coords.mismatch"} & ids  # the batched checks had something to find
        assert not together.failures
        records = split_runs(events, blobs)
        across = [*check_out_of_scope(records), *check_unbounded_store(records), *check_across_runs(records)]
        assert sorted(map(repr, together.violations)) == sorted(map(repr, [*alone, *across]))


def test_a_value_is_found_among_a_results_parts_exactly_when_its_json_equals_ones() -> None:
    rng = np.random.default_rng(7)
    leaves: list[Any] = ["a", "b", "ab", 1, 1.0, 2, -0.0, 0.0, True, False, {"$blob": "d1"}, {"$blob": 3}, [], {}]

    def value(depth: int) -> Any:
        if depth == 0 or rng.random() < 0.4:
            return leaves[int(rng.integers(0, len(leaves)))]
        if rng.random() < 0.5:
            return [value(depth - 1) for _ in range(int(rng.integers(0, 3)))]
        return {str(key): value(depth - 1) for key in rng.choice(["x", "y", "$blob"], int(rng.integers(0, 3)), False)}

    def dumped(part: Any) -> str:
        return json.dumps(part, sort_keys=True, separators=(",", ":"))

    def every_part(payload: Any) -> set[str]:  # the definition: every value inside, as canonical JSON
        found, stack = set(), [payload]
        while stack:
            part = stack.pop()
            if part is not None:
                found.add(dumped(part))
                if isinstance(part, dict) and set(part) != {"$blob"}:
                    stack.extend(part.values())
                elif isinstance(part, list):
                    stack.extend(part)
        return found

    for _ in range(200):
        payload = value(4)
        parts, expected = _Parts(payload), every_part(payload)
        for candidate in [value(3) for _ in range(10)] + [json.loads(text) for text in expected]:
            assert parts.holds(candidate) == (dumped(candidate) in expected)
