"""Workflows: references, their resolution, declared adapters, and the DAG with its layers and ready sets."""

from __future__ import annotations

import re
from typing import Any

import networkx as nx
import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from testbed.conventions import BoxConvention, ImageSize, MaskEncoding, MaskResolution, decode_masks, encode_masks
from testbed.workflow import (
    FOR_EACH_ARG,
    NO_ITEM,
    AdapterError,
    BindingContext,
    BindingError,
    BoxAdapter,
    ContentSegment,
    EachSegment,
    Edge,
    FieldSegment,
    IndexSegment,
    InvalidReferenceError,
    MaskAdapter,
    MaskConvention,
    Workflow,
    WorkflowError,
    apply_adapters,
    bind_arguments,
    build_graph,
    check_server_aliases,
    graph_edges,
    graph_node,
    is_reference,
    iter_references,
    parse_reference,
    ready_nodes,
    resolve,
    resolve_for_each,
    resolve_value,
    scene_edges,
    topological_layers,
)

DETECTIONS: dict[str, Any] = {
    "detections": [
        {"bbox": [1, 2, 3, 4], "label": "circle"},
        {"bbox": [5, 6, 7, 8], "label": "square"},
    ],
    "count": 2,
}


def make_context(**overrides: Any) -> BindingContext:
    values: dict[str, Any] = {
        "scene": {"image": "iVBOR...", "image_path": "/tmp/scene.png", "width": 256, "height": 128},
        "payloads": {"detect": DETECTIONS, "crop": [{"width": 2}, {"width": 3}]},
        "contents": {"detect": [{"type": "text", "text": "2 objects"}, {"type": "image", "data": "AAAA"}]},
    }
    values.update(overrides)
    return BindingContext(**values)


def workflow_from_yaml(text: str) -> Workflow:
    return Workflow.model_validate(yaml.safe_load(text))


def workflow_error(data: dict[str, Any]) -> WorkflowError:
    """Validate ``data`` as a workflow and return the WorkflowError it raised."""
    with pytest.raises(ValidationError) as caught:
        Workflow.model_validate(data)
    cause = caught.value.errors()[0].get("ctx", {}).get("error")
    assert isinstance(cause, WorkflowError)
    return cause


# --- references -------------------------------------------------------------------------------


def test_a_reference_parses_into_its_root_and_typed_segments() -> None:
    reference = parse_reference("$detect.detections[*].bbox")

    assert reference.root == "detect"
    assert reference.path == (FieldSegment(name="detections"), EachSegment(), FieldSegment(name="bbox"))
    assert reference.path_text == "detections[*].bbox"
    assert reference.is_node


def test_content_and_index_segments_parse() -> None:
    reference = parse_reference("$crop.@content[0].data")

    assert reference.path == (ContentSegment(), IndexSegment(index=0), FieldSegment(name="data"))
    assert reference.uses_content
    assert reference.path_text == "@content[0].data"


@pytest.mark.parametrize(
    "text",
    [
        "$scene.image",
        "$scene.width",
        "$item",
        "$item.bbox",
        "$seg.instances[0].mask",
        "$seg.instances[-1].mask",
        "$crop.@content[0].data",
        "$detect.detections[*].bbox[2]",
        "$two-stage_node.result",
    ],
)
def test_a_reference_prints_back_as_written(text: str) -> None:
    assert str(parse_reference(text)) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("$", "expected a name after '$'"),
        ("$1node", "expected a name after '$'"),
        ("$detect..boxes", "expected a field name after '.' at position 7"),
        ("$detect.boxes[x]", "expected '[<integer>]' or '[*]' at position 13"),
        ("$detect.boxes[", "expected '[<integer>]' or '[*]'"),
        ("$detect boxes", "unexpected ' ' at position 7"),
        ("$scene", "$scene must be followed by one of"),
        ("$scene.pixels", "$scene must be followed by one of"),
        ("$item.@content", "may only follow a node id"),
        ("$detect.boxes.@content", "may only follow a node id"),
        ("detect.boxes", "is not a reference"),
        ("$$5", "is not a reference"),
    ],
)
def test_a_malformed_reference_is_rejected_with_what_was_expected(text: str, problem: str) -> None:
    with pytest.raises(InvalidReferenceError, match=re.escape(problem)):
        parse_reference(text)


def test_a_double_dollar_escapes_a_literal_dollar() -> None:
    args = {"price": "$$5", "note": "$$scene.image", "plain": "no dollar"}

    assert not is_reference("$$5")
    assert list(iter_references(args)) == []
    assert resolve_value(args, make_context()) == {"price": "$5", "note": "$scene.image", "plain": "no dollar"}


def test_references_are_found_at_any_depth_of_the_arguments() -> None:
    args = {"image": "$scene.image", "options": {"boxes": ["$a.box", 3, {"deep": "$b.x"}]}, "conf": 0.5}

    assert list(iter_references(args)) == [
        (("image",), "$scene.image"),
        (("options", "boxes", 0), "$a.box"),
        (("options", "boxes", 2, "deep"), "$b.x"),
    ]


# --- resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$scene.width", 256),
        ("$scene.image_path", "/tmp/scene.png"),
        ("$detect", DETECTIONS),
        ("$detect.count", 2),
        ("$detect.detections[1].label", "square"),
        ("$detect.detections[-1].bbox[0]", 5),
        ("$detect.detections[*].bbox", [[1, 2, 3, 4], [5, 6, 7, 8]]),
        ("$detect.detections[*].bbox[3]", [4, 8]),
        ("$detect.@content[1].data", "AAAA"),
        ("$detect.@content[*].type", ["text", "image"]),
        ("$crop[*].width", [2, 3]),
    ],
)
def test_a_reference_resolves_against_scene_payloads_and_content_blocks(text: str, expected: Any) -> None:
    assert resolve(parse_reference(text), make_context()) == expected


def test_item_resolves_to_the_current_for_each_element() -> None:
    context = make_context().with_item(DETECTIONS["detections"][1])

    assert resolve(parse_reference("$item.bbox"), context) == [5, 6, 7, 8]
    assert resolve(parse_reference("$item"), context) == {"bbox": [5, 6, 7, 8], "label": "square"}


def test_nested_arguments_resolve_every_reference_they_hold() -> None:
    args = {
        "image": "$scene.image",
        "boxes": ["$detect.detections[0].bbox", {"size": ["$scene.width", "$scene.height"]}],
        "threshold": 0.5,
        "label": "$$literal",
    }

    assert resolve_value(args, make_context()) == {
        "image": "iVBOR...",
        "boxes": [[1, 2, 3, 4], {"size": [256, 128]}],
        "threshold": 0.5,
        "label": "$literal",
    }


@pytest.mark.parametrize(
    ("text", "segment", "problem"),
    [
        ("$detect.detections[5].bbox", "[5]", "index 5 is out of range for a list of 2"),
        ("$detect.boxes", ".boxes", "no field 'boxes' (fields: 'detections', 'count')"),
        ("$detect.count[*]", "[*]", "expected a list, got int"),
        ("$detect.count.value", ".value", "expected a mapping with field 'value', got int"),
        ("$detect.detections.bbox", ".bbox", "expected a mapping with field 'bbox', got a list of 2"),
        ("$merge.boxes", "", "node 'merge' has no result (has it run?)"),
        ("$merge.@content[0]", ".@content", "node 'merge' has no content blocks"),
        ("$item.bbox", "", "$item is only available inside a for_each node"),
    ],
)
def test_an_unresolvable_reference_names_itself_and_the_failing_segment(text: str, segment: str, problem: str) -> None:
    with pytest.raises(BindingError) as caught:
        resolve(parse_reference(text), make_context())

    assert caught.value.reference == text
    assert caught.value.segment == segment
    assert f"cannot resolve {text}" in str(caught.value)
    assert problem in str(caught.value)


def test_a_context_outside_for_each_has_no_item() -> None:
    assert make_context().item is NO_ITEM
    assert make_context().with_item(None).item is None


# --- adapters ---------------------------------------------------------------------------------

IMAGE = ImageSize(width=256, height=128)
BOX = [32.0, 16.0, 96.0, 80.0]  # canonical xyxy/pixel on the 256 x 128 image


def box_adapter(source: str, target: str) -> BoxAdapter:
    return BoxAdapter.between(source, target)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("xywh/pixel", [32.0, 16.0, 64.0, 64.0]),
        ("cxcywh/pixel", [64.0, 48.0, 64.0, 64.0]),
        ("cxcywh/normalized", [0.25, 0.375, 0.25, 0.5]),
        ("xyxy/per_mille", [125.0, 125.0, 375.0, 625.0]),
        # y flips about the height (y' = 128 - y), then every pair is written y first.
        ("xyxy/pixel/yx/bottom_left", [48.0, 32.0, 112.0, 96.0]),
    ],
)
def test_a_box_adapter_converts_a_box_exactly(target: str, expected: list[float]) -> None:
    assert box_adapter("xyxy/pixel", target).apply(BOX, image_size=IMAGE) == expected


def test_a_box_adapter_converts_a_list_of_boxes_and_an_empty_list() -> None:
    adapter = box_adapter("xyxy/pixel", "xywh/pixel")

    assert adapter.apply([BOX, [0, 0, 1, 1]], image_size=IMAGE) == [[32.0, 16.0, 64.0, 64.0], [0.0, 0.0, 1.0, 1.0]]
    assert adapter.apply([], image_size=IMAGE) == []


def test_a_box_adapter_round_trips_through_its_inverse() -> None:
    there = box_adapter("xyxy/pixel", "cxcywh/per_mille/yx/bottom_left")
    back = box_adapter("cxcywh/per_mille/yx/bottom_left", "xyxy/pixel")

    assert back.apply(there.apply(BOX, image_size=IMAGE), image_size=IMAGE) == pytest.approx(BOX)


@pytest.mark.parametrize("value", ["box", [1, 2, 3], {"x": 1}, [[1, 2, 3, 4], [1, 2]]])
def test_a_box_adapter_rejects_a_value_that_is_not_boxes(value: Any) -> None:
    with pytest.raises(AdapterError, match="box xyxy/pixel/xy/top_left -> xywh/pixel/xy/top_left adapter"):
        box_adapter("xyxy/pixel", "xywh/pixel").apply(value, image_size=IMAGE)


def test_a_box_adapter_reads_and_writes_conventions_by_name() -> None:
    adapter = box_adapter("xyxy/pixel", "xywh/normalized/yx")

    assert adapter.from_ == BoxConvention.from_name("xyxy/pixel/xy/top_left")
    assert adapter.model_dump(mode="json") == {
        "kind": "box",
        "from": "xyxy/pixel/xy/top_left",
        "to": "xywh/normalized/yx/top_left",
    }
    assert BoxAdapter.model_validate(adapter.model_dump(mode="json")) == adapter


@pytest.mark.parametrize(
    ("source", "target", "problem"),
    [
        ("xyxy/pixels", "xywh/pixel", "unknown box units 'pixels'"),
        ("xyxy", "xywh/pixel", "expected 'format/units[/axis_order[/origin]]'"),
        ("xyxy/pixel", "xyxy/pixel/xy/top_left", "converts xyxy/pixel/xy/top_left to itself"),
    ],
)
def test_an_invalid_box_adapter_is_rejected(source: str, target: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        box_adapter(source, target)


def random_masks(count: int, size: ImageSize, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((count, size.height, size.width)) < 0.3


def test_a_mask_adapter_round_trips_from_model_resolution_to_image_resolution_and_back() -> None:
    model = ImageSize(width=32, height=16)
    masks = random_masks(3, model, seed=1)
    payload = encode_masks(masks, MaskEncoding.COCO_RLE)
    up = MaskAdapter.model_validate(
        {
            "kind": "mask",
            "from": {"encoding": "coco_rle", "resolution": "model"},
            "to": {"encoding": "png_base64", "resolution": "image"},
            "model_size": [32, 16],
        }
    )
    down = MaskAdapter.between(
        MaskConvention(encoding=MaskEncoding.PNG_BASE64),
        MaskConvention(encoding=MaskEncoding.COCO_RLE, resolution=MaskResolution.MODEL),
        model_size=(32, 16),
    )

    on_image = up.apply(payload, image_size=IMAGE)
    upscaled = decode_masks(on_image, MaskEncoding.PNG_BASE64, IMAGE)
    assert upscaled.shape == (3, 128, 256)
    assert np.array_equal(upscaled[:, ::8, ::8], masks)  # 8x nearest-neighbour upscale
    assert down.apply(on_image, image_size=IMAGE) == payload


def test_a_mask_adapter_keeps_a_single_object_single() -> None:
    masks = random_masks(1, IMAGE, seed=2)
    payload = encode_masks(masks, MaskEncoding.COCO_RLE)
    assert isinstance(payload, list)
    rle = payload[0]
    adapter = MaskAdapter.model_validate(
        {"kind": "mask", "from": {"encoding": "coco_rle"}, "to": {"encoding": "png_base64"}}
    )

    converted = adapter.apply(rle, image_size=IMAGE)

    assert isinstance(converted, str)
    assert np.array_equal(decode_masks([converted], MaskEncoding.PNG_BASE64, IMAGE), masks)


def test_a_mask_adapter_reports_a_payload_on_the_wrong_grid() -> None:
    payload = encode_masks(random_masks(1, ImageSize(width=8, height=8), seed=3), MaskEncoding.PNG_BASE64)
    adapter = MaskAdapter.model_validate(
        {"kind": "mask", "from": {"encoding": "png_base64"}, "to": {"encoding": "coco_rle"}}
    )

    with pytest.raises(AdapterError, match="mask png_base64@image -> coco_rle@image adapter"):
        adapter.apply(payload, image_size=IMAGE)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"from": {"encoding": "coco_rle", "resolution": "model"}, "to": {"encoding": "coco_rle"}}, "model_size"),
        ({"from": {"encoding": "coco_rle"}, "to": {"encoding": "polygon"}, "model_size": [8, 8]}, "only used"),
        ({"from": {"encoding": "rle"}, "to": {"encoding": "polygon"}}, "coco_rle"),
    ],
)
def test_an_invalid_mask_adapter_is_rejected(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        MaskAdapter.model_validate({"kind": "mask", **data})


# --- nodes and graphs -------------------------------------------------------------------------

CROP_WORKFLOW = """
nodes:
  - id: detect
    call: det.detect
    args: {image: $scene.image, conf: 0.25}
    deadline_s: 30
  - id: crop
    call: crop.crop
    for_each: $detect.detections
    args:
      image: $scene.image
      box: $item.bbox
      context: {count: $detect.count, hints: ["$detect.@content[0].text"]}
    adapters:
      box: {kind: box, from: xyxy/pixel, to: xywh/pixel}
"""

FAN_OUT_WORKFLOW = """
nodes:
  - id: zeta_detector
    call: det_a.detect
    args: {image: $scene.image}
  - id: alpha_detector
    call: det_b.detect
    args: {image: $scene.image}
  - id: merge
    call: merge.merge
    args: {first: $zeta_detector.boxes, second: $alpha_detector.boxes}
  - id: crop
    call: crop.crop
    for_each: $merge.boxes
    args: {image: $scene.image, box: $item}
"""


def test_a_node_splits_its_call_into_server_alias_and_tool() -> None:
    node = workflow_from_yaml(CROP_WORKFLOW).node("crop")

    assert (node.server, node.tool) == ("crop", "crop")
    assert node.deadline_s is None
    assert workflow_from_yaml(CROP_WORKFLOW).node("detect").deadline_s == 30.0


def test_every_node_to_node_reference_is_a_typed_edge_with_its_adapter() -> None:
    graph = build_graph(workflow_from_yaml(CROP_WORKFLOW))

    edges = graph_edges(graph)

    assert all(isinstance(edge, Edge) for edge in edges)
    assert [(e.source_node, e.source_path, e.target_node, e.target_arg, e.reference) for e in edges] == [
        ("detect", "detections", "crop", FOR_EACH_ARG, "$detect.detections"),
        ("detect", "detections[*].bbox", "crop", "box", "$item.bbox"),
        ("detect", "count", "crop", "context.count", "$detect.count"),
        ("detect", "@content[0].text", "crop", "context.hints[0]", "$detect.@content[0].text"),
    ]
    assert edges[1].adapter == box_adapter("xyxy/pixel", "xywh/pixel")
    assert [edge.adapter for edge in edges if edge.target_arg != "box"] == [None, None, None]
    assert isinstance(graph, nx.DiGraph)
    assert graph.number_of_edges("detect", "crop") == 4


def test_scene_references_are_recorded_but_are_not_graph_edges() -> None:
    graph = build_graph(workflow_from_yaml(CROP_WORKFLOW))

    assert [(e.source_node, e.source_path, e.target_node, e.target_arg) for e in scene_edges(graph)] == [
        ("scene", "image", "detect", "image"),
        ("scene", "image", "crop", "image"),
    ]
    assert "scene" not in graph
    assert graph_node(graph, "crop").call == "crop.crop"


def test_independent_detectors_share_a_layer_in_declaration_order() -> None:
    graph = build_graph(workflow_from_yaml(FAN_OUT_WORKFLOW))

    assert topological_layers(graph) == [["zeta_detector", "alpha_detector"], ["merge"], ["crop"]]


@pytest.mark.parametrize(
    ("done", "ready"),
    [
        (set(), ["zeta_detector", "alpha_detector"]),
        ({"alpha_detector"}, ["zeta_detector"]),
        ({"zeta_detector", "alpha_detector"}, ["merge"]),
        ({"zeta_detector", "alpha_detector", "merge"}, ["crop"]),
        ({"zeta_detector", "alpha_detector", "merge", "crop"}, []),
    ],
)
def test_ready_nodes_are_those_whose_producers_are_all_done(done: set[str], ready: list[str]) -> None:
    graph = build_graph(workflow_from_yaml(FAN_OUT_WORKFLOW))

    assert ready_nodes(graph, done) == ready


def test_a_cycle_is_rejected_with_its_members_named_in_order() -> None:
    error = workflow_error(
        {
            "nodes": [
                {"id": "a", "call": "s.t", "args": {"x": "$b.out"}},
                {"id": "b", "call": "s.t", "args": {"x": "$c.out"}},
                {"id": "c", "call": "s.t", "args": {"x": "$a.out", "image": "$scene.image"}},
            ]
        }
    )

    assert "cycle in the workflow: a -> b -> c -> a" in str(error)
    assert error.loc == ("nodes", 0, "args", "x")


@pytest.mark.parametrize(
    ("nodes", "loc", "problem"),
    [
        ([{"id": "a", "call": "s.t", "args": {"x": "$a.out"}}], ("nodes", 0, "args", "x"), "refers to the node itself"),
        (
            [{"id": "a", "call": "s.t"}, {"id": "b", "call": "s.t", "args": {"x": ["$aa.out"]}}],
            ("nodes", 1, "args", "x", 0),
            "node 'b', argument 'x[0]': unknown reference root $aa (did you mean 'a'?)",
        ),
        ([{"id": "a", "call": "s.t"}, {"id": "a", "call": "s.u"}], ("nodes", 1, "id"), "duplicate node id 'a'"),
        ([{"id": "scene", "call": "s.t"}], ("nodes", 0, "id"), "reserved"),
        (
            [{"id": "a", "call": "s.t", "args": {"x": "$item"}}],
            ("args", "x"),
            "only available inside a node with for_each",
        ),
        ([{"id": "a", "call": "st"}], ("call",), "exactly one dot"),
        ([{"id": "a", "call": "s.t", "for_each": "$item.x"}], ("for_each",), "for_each cannot use $item"),
        ([{"id": "a", "call": "s.t", "args": {"x": "$b..y"}}], ("args", "x"), "expected a field name"),
        (
            [
                {
                    "id": "a",
                    "call": "s.t",
                    "args": {"x": 1},
                    "adapters": {"y": {"kind": "box", "from": "xyxy/pixel", "to": "xywh/pixel"}},
                }
            ],
            ("adapters", "y"),
            "adapter on argument 'y', which the node does not pass",
        ),
    ],
)
def test_an_invalid_workflow_names_the_node_and_argument(
    nodes: list[dict[str, Any]], loc: tuple[str | int, ...], problem: str
) -> None:
    error = workflow_error({"nodes": nodes})

    assert problem in error.message
    assert error.loc == loc


def test_a_workflow_needs_a_node() -> None:
    assert "at least one node" in workflow_error({"nodes": []}).message


def test_an_unknown_server_alias_in_a_call_is_reported() -> None:
    workflow = workflow_from_yaml(CROP_WORKFLOW)

    check_server_aliases(workflow, {"det", "crop"})
    with pytest.raises(WorkflowError, match="unknown server alias 'crop'") as caught:
        check_server_aliases(workflow, ["det"])
    assert caught.value.loc == ("nodes", 1, "call")


def test_a_workflow_dumps_to_json_and_validates_back_unchanged() -> None:
    workflow = workflow_from_yaml(CROP_WORKFLOW)

    dumped = workflow.model_dump(mode="json")

    assert dumped["nodes"][1]["for_each"] == "$detect.detections"
    assert dumped["nodes"][1]["adapters"]["box"]["from"] == "xyxy/pixel/xy/top_left"
    assert Workflow.model_validate(dumped) == workflow


def test_a_for_each_node_binds_and_adapts_its_arguments_per_item() -> None:
    node = workflow_from_yaml(CROP_WORKFLOW).node("crop")
    context = make_context()

    items = resolve_for_each(node, context)
    assert items is not None
    assert items == DETECTIONS["detections"]
    bound = [bind_arguments(node, context.with_item(item)) for item in items]
    adapted = [apply_adapters(node, arguments, image_size=IMAGE) for arguments in bound]

    assert bound[1] == {
        "image": "iVBOR...",
        "box": [5, 6, 7, 8],
        "context": {"count": 2, "hints": ["2 objects"]},
    }
    assert [arguments["box"] for arguments in adapted] == [[1.0, 2.0, 2.0, 2.0], [5.0, 6.0, 2.0, 2.0]]
    assert bound[1]["box"] == [5, 6, 7, 8]  # adapters return a copy


def test_for_each_over_a_value_that_is_not_a_list_is_a_binding_error() -> None:
    node = workflow_from_yaml(CROP_WORKFLOW).node("crop")
    context = make_context(payloads={"detect": {"detections": {"not": "a list"}}})

    with pytest.raises(BindingError, match=re.escape("for_each $detect.detections must be a list")):
        resolve_for_each(node, context)
    assert resolve_for_each(workflow_from_yaml(CROP_WORKFLOW).node("detect"), context) is None
