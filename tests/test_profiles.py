"""Convention profiles (testbed.profile) and the parametric servers built from them (servers.parametric)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from mcp import Client
from mcp_types import CallToolResult

from servers.parametric import build_parametric
from servers.parametric._payloads import OutputInvalidError, validated
from testbed._errors import TestbedError
from testbed.conventions import (
    CANONICAL,
    BoxConvention,
    ImageSize,
    MaskEncoding,
    MaskPayloadError,
    decode_masks,
    encode_masks,
    from_canonical,
)
from testbed.profile import (
    CAPABILITIES,
    PRESETS,
    Capability,
    ConventionProfile,
    ProfileError,
    check_profile,
    truth_manifest,
)
from testbed.protocol import EXTENSION_KEYWORDS, MemoryScope, SchemaStyle, SemanticRole
from testbed.registry import registry
from testbed.scenes import Scene
from testbed.server_config import ServerConfig
from tests._helpers import call, error_message, expected_crop, image_of, ok_payload

BOX = (10.0, 12.0, 60.0, 50.0)
"""A canonical crop box inside the 320x240-ish test scene."""


def profile(**fields: Any) -> ConventionProfile:
    return ConventionProfile.model_validate(fields)


# --- the truth manifest derives from the profile -------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_derives_the_truth_manifest_of_the_named_server_it_writes(name: str) -> None:
    preset = PRESETS[name]
    derived = truth_manifest(preset.capability, preset.profile, name=name)
    named = registry().server(name).truth
    assert derived.tools == named.tools
    assert (derived.kind, derived.declares_conventions) == (named.kind, named.declares_conventions)


def test_the_two_named_servers_that_do_not_fit_are_not_presets() -> None:
    from servers import MODULES

    named = {module.replace("_", "-") for module in MODULES if module != "parametric"}
    assert named <= set(registry().servers)
    assert named - set(PRESETS) == {"crop-handle", "segment-polygon"}


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_each_parametric_server_is_registered_under_its_capability_with_the_default_profiles_truth(
    capability: Capability,
) -> None:
    plugin = registry().server(capability)
    assert plugin.truth == truth_manifest(capability, ConventionProfile())
    assert [tool.name for tool in plugin.tools] == [tool.name for tool in plugin.truth.tools]


def test_a_profile_changes_the_truth_it_derives() -> None:
    truth = truth_manifest(
        "detect",
        profile(box="cxcywh/normalized", names={"items": "objects", "box": "box"}, memory={"scope": "session"}),
    )
    store, detect = truth.tools
    assert store.returns is MemoryScope.SESSION
    assert store.paths == {SemanticRole.IMAGE_HANDLE: "handle"}
    assert detect.box_convention == BoxConvention.from_name("cxcywh/normalized/xy/top_left")
    assert detect.paths[SemanticRole.BOUNDING_BOX] == "objects[*].box"
    assert detect.accepts == (MemoryScope.SESSION,)


def test_a_ttl_profile_keeps_the_actual_lifetime_in_the_truth_and_declares_the_other() -> None:
    ttl = profile(memory={"scope": "ttl", "ttl_seconds": 60, "declared_ttl_seconds": 15})
    assert truth_manifest("crop", ttl).tools[0].ttl_seconds == 60
    declared = build_tools("crop", ttl)[0].output_schema
    assert declared is not None
    assert declared["properties"]["handle"]["ttl_seconds"] == 15


def test_a_label_map_segmenter_writes_one_map_beside_its_results() -> None:
    truth = truth_manifest("segment", profile(mask={"encoding": "label_map"}))
    assert truth.tools[0].paths[SemanticRole.MASK] == "mask"


# --- profiles that no server can have --------------------------------------------------------------

IMPOSSIBLE = [
    pytest.param("detect", {"schema_style": "content"}, ("schema_style",), "crop and crop-mask only", id="content"),
    pytest.param("crop", {"names": {"prompts": "boxes"}}, ("names", "prompts"), "argument of segment", id="prompts"),
    pytest.param("crop", {"shape_order": "wh"}, ("shape_order",), "reported image size", id="shape-order"),
    pytest.param(
        "detect", {"names": {"label": "box", "box": "box"}}, ("names", "box"), "'box' names two", id="same-field"
    ),
    pytest.param(
        "crop",
        {"memory": {"scope": "global"}, "names": {"store_tool": "crop"}},
        ("names", "store_tool"),
        "both called 'crop'",
        id="same-tool",
    ),
    pytest.param(
        "crop-mask", {"mask": {"resolution": "model"}}, ("mask", "resolution"), "image resolution only", id="model"
    ),
]


@pytest.mark.parametrize(("capability", "fields", "loc", "complaint"), IMPOSSIBLE)
def test_a_profile_that_does_not_fit_its_capability_is_refused_naming_the_field(
    capability: Capability, fields: dict[str, Any], loc: tuple[str, ...], complaint: str
) -> None:
    with pytest.raises(ProfileError) as raised:
        check_profile(capability, profile(**fields))
    assert raised.value.loc == loc
    assert complaint in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"box": "xyxy/furlongs"}, "unknown box units 'furlongs'"),
        ({"memory": {"scope": "ttl"}}, "needs ttl_seconds"),
        ({"memory": {"scope": "session", "ttl_seconds": 5}}, "ttl scope only"),
        ({"names": {"box": "bounding box"}}, "not a field name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_an_invalid_profile_is_refused_by_the_environment_variable_in_one_line(
    fields: dict[str, Any], complaint: str
) -> None:
    import json

    with pytest.raises(TestbedError) as raised:
        ServerConfig.from_env({"TESTBED_PROFILE": json.dumps(fields)})
    message = str(raised.value)
    assert message.startswith("TESTBED_PROFILE")
    assert complaint in message
    assert "\n" not in message


def test_the_environment_carries_a_profile_as_json_or_as_a_file(tmp_path: Path) -> None:
    file = tmp_path / "det.yaml"
    file.write_text("box: xyxy/normalized\nnames: {box: box}\n")
    from_file = ServerConfig.from_env({"TESTBED_PROFILE": str(file)}).profile
    from_json = ServerConfig.from_env({"TESTBED_PROFILE": '{"box": "xyxy/normalized", "names": {"box": "box"}}'})
    assert from_file is not None
    assert from_file == from_json.profile
    assert from_file.box == BoxConvention.from_name("xyxy/normalized")


# --- presets answer as the named servers do -----------------------------------------------------


def build_tools(capability: Capability, chosen: ConventionProfile) -> list[Any]:
    server = build_parametric(capability, ServerConfig(profile=chosen))
    return list(server._tool_manager.list_tools())


async def _pipeline(client: Client, name: str, image_b64: str, extra: dict[str, Any]) -> list[CallToolResult]:
    """Every tool of a preset's server in order: the store tool's handle feeds the capability tool."""
    tools = registry().server(name).truth.tools
    results: list[CallToolResult] = []
    handle: dict[str, Any] = {}
    for tool in tools:
        if tool.returns is not MemoryScope.BY_VALUE:
            result = await call(client, tool.name, {tool.inputs[SemanticRole.IMAGE]: image_b64}, clock=1.0)
            ((_role, field),) = tool.paths.items()
            handle = {field: ok_payload(result)[field]}
            results.append(result)
            continue
        image = handle or {tool.inputs[SemanticRole.IMAGE]: image_b64}
        box = tool.inputs.get(SemanticRole.BOUNDING_BOX) if SemanticRole.INSTANCES not in tool.paths else None
        arguments = {**image, **({box: extra["box"](tool.box_convention)} if box and "box" in extra else {})}
        if SemanticRole.MASK in tool.inputs:
            arguments[tool.inputs[SemanticRole.MASK]] = extra["mask"]
        results.append(await call(client, tool.name, arguments, clock=2.0))
    return results


def _answers(results: list[CallToolResult]) -> list[tuple[Any, ...]]:
    return [(r.is_error, r.structured_content, [block.model_dump() for block in r.content]) for r in results]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "name",
    [
        *("detect-xyxy", "detect-cxcywh", "detect-yxyx", "detect-xywh-bl", "segment-rle", "segment-png"),
        *("crop-xywh", "crop-ttl", "crop-masked"),
    ],
)
async def test_a_preset_parametric_server_answers_exactly_as_the_named_server(
    name: str, config: ServerConfig, scene: Scene, image_b64: str, tmp_path: Path
) -> None:
    size = ImageSize(width=scene.width, height=scene.height)
    rectangle = np.zeros((1, scene.height, scene.width), dtype=np.bool_)
    rectangle[0, 12:50, 10:60] = True
    extra = {
        "box": lambda convention: from_canonical(np.array([BOX]), convention, size)[0].tolist(),
        "mask": cast("list[Any]", encode_masks(rectangle, MaskEncoding.COCO_RLE))[0],
    }
    preset = PRESETS[name]
    named_config = config.model_copy(update={"sandbox": tmp_path / "named"})
    parametric_config = config.model_copy(update={"sandbox": tmp_path / "parametric", "profile": preset.profile})
    async with Client(registry().server(name).build(named_config)) as named:
        expected = await _pipeline(named, name, image_b64, extra)
    async with Client(build_parametric(preset.capability, parametric_config)) as parametric:
        answered = await _pipeline(parametric, name, image_b64, extra)
    assert _answers(answered) == _answers(expected)
    assert not expected[-1].is_error


@pytest.mark.anyio
async def test_a_payload_error_preset_reports_a_bad_image_as_the_named_server_does(config: ServerConfig) -> None:
    preset = PRESETS["detect-cxcywh"]
    async with Client(registry().server("detect-cxcywh").build(config)) as named:
        expected = await call(named, "detect_objects", {"image_base64": "not an image"})
    parametric_config = config.model_copy(update={"profile": preset.profile})
    async with Client(build_parametric("detect", parametric_config)) as parametric:
        answered = await call(parametric, "detect_objects", {"image_base64": "not an image"})
    truth = registry().server("detect-cxcywh").truth.tools[0]
    assert error_message(answered, truth) == error_message(expected, truth)


# --- behaviour a profile controls ----------------------------------------------------------------


def _keywords(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {key for key in node if key in EXTENSION_KEYWORDS}
        return found.union(*(_keywords(value) for value in node.values()))
    if isinstance(node, list | tuple):
        return set().union(*(_keywords(value) for value in node))
    return set()


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("declares", [True, False])
def test_extension_keywords_are_published_exactly_when_the_profile_declares_them(
    capability: Capability, declares: bool
) -> None:
    chosen = profile(declares_extensions=declares, memory={"scope": "ttl", "ttl_seconds": 5})
    schemas = [(tool.parameters, tool.output_schema) for tool in build_tools(capability, chosen)]
    assert bool(_keywords(schemas)) is declares


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", list(MaskEncoding))
async def test_a_segmenter_mask_reaches_the_mask_consumer_of_the_same_profile_in_every_encoding(
    encoding: MaskEncoding, config: ServerConfig, scene: Scene, image_b64: str
) -> None:
    chosen = profile(mask={"encoding": encoding.value}, schema_style="text_json")
    segmenter = build_parametric("segment", config.model_copy(update={"profile": chosen}))
    reader = chosen.model_copy(update={"schema_style": SchemaStyle.CONTENT})
    consumer = build_parametric("crop-mask", config.model_copy(update={"profile": reader}))
    async with Client(segmenter) as client:
        segmented = ok_payload(await call(client, "segment", {"image": image_b64}))
    first = segmented["mask"] if encoding is MaskEncoding.LABEL_MAP else segmented["instances"][0]["mask"]
    if encoding is MaskEncoding.LABEL_MAP:
        masks = decode_masks(first, encoding, ImageSize(width=scene.width, height=scene.height))
        first = encode_masks(masks[:1], encoding)  # the consumer reads one object: a map of the first
    async with Client(consumer) as client:
        cut = image_of(await call(client, "crop_mask", {"image": image_b64, "mask": first}))
    assert cut.shape[0] > 0
    assert cut.shape[1] > 0
    assert (cut.sum(axis=2) > 0).any()


@pytest.mark.anyio
async def test_a_resource_uri_mask_cannot_be_read_by_a_consumer_that_lacks_the_resource(
    config: ServerConfig, image_b64: str
) -> None:
    consumer = build_parametric(
        "crop-mask", config.model_copy(update={"profile": profile(mask={"encoding": "resource_uri"})})
    )
    async with Client(consumer) as client:
        result = await call(client, "crop_mask", {"image": image_b64, "mask": "mask://0123456789abcdef"})
    assert result.is_error
    assert "'mask://0123456789abcdef' names a server-side resource this reader cannot resolve" in str(result.content)


@pytest.mark.anyio
async def test_a_cropper_that_reads_normalized_boxes_crops_what_the_box_names(
    config: ServerConfig, scene: Scene, image_b64: str
) -> None:
    chosen = profile(box="xyxy/normalized", names={"box": "box"}, schema_style="content")
    normalized = [BOX[0] / scene.width, BOX[1] / scene.height, BOX[2] / scene.width, BOX[3] / scene.height]
    async with Client(build_parametric("crop", config.model_copy(update={"profile": chosen}))) as client:
        crop = image_of(await call(client, "crop", {"image": image_b64, "box": normalized}))
    np.testing.assert_array_equal(crop, expected_crop(scene, BOX))


@pytest.mark.anyio
async def test_measure_gives_the_box_size_times_the_pixel_spacing(
    config: ServerConfig, scene: Scene, image_b64: str
) -> None:
    chosen = profile(box="xywh/pixel", pixel_spacing_mm=0.5, schema_style="loose")
    async with Client(build_parametric("measure", config.model_copy(update={"profile": chosen}))) as client:
        measured = ok_payload(await call(client, "measure", {"image": image_b64, "box": [10, 12, 50, 38]}))
        empty = await call(client, "measure", {"image": image_b64, "box": [10, 12, 0, 38]})
    assert measured == {"width": 25.0, "height": 19.0, "unit": "mm"}
    assert empty.is_error
    assert "has no area" in str(empty.content)


@pytest.mark.anyio
async def test_handles_follow_the_memory_scope(config: ServerConfig, image_b64: str) -> None:
    chosen = profile(memory={"scope": "session"}, names={"store_tool": "upload"})
    async with Client(build_parametric("crop", config.model_copy(update={"profile": chosen}))) as client:
        handle = ok_payload(await call(client, "upload", {"image": image_b64}, scope="a"))["handle"]
        own = await call(client, "crop", {"handle": handle, "box": list(BOX)}, scope="a")
        other = await call(client, "crop", {"handle": handle, "box": list(BOX)}, scope="b")
    assert not own.is_error
    assert other.is_error
    assert "unknown in this session" in str(other.content)


@pytest.mark.anyio
async def test_a_ttl_store_keeps_images_as_long_as_the_profile_says_not_as_long_as_it_declares(
    config: ServerConfig, image_b64: str
) -> None:
    chosen = profile(memory={"scope": "ttl", "ttl_seconds": 60, "declared_ttl_seconds": 15}, schema_style="loose")
    async with Client(build_parametric("crop", config.model_copy(update={"profile": chosen}))) as client:
        stored = ok_payload(await call(client, "load_image", {"image": image_b64}, clock=0.0))
        late = await call(client, "crop", {"handle": stored["handle"], "box": list(BOX)}, clock=30.0)
        expired = await call(client, "crop", {"handle": stored["handle"], "box": list(BOX)}, clock=61.0)
    assert stored["expires_at"] == 15.0
    assert not late.is_error
    assert expired.is_error
    assert "expired" in str(expired.content)


@pytest.mark.anyio
async def test_a_json_crop_carries_the_crop_under_its_field(config: ServerConfig, scene: Scene, image_b64: str) -> None:
    chosen = profile(schema_style="full", names={"crop": "cropped"}, validates_outputs=True)
    async with Client(build_parametric("crop", config.model_copy(update={"profile": chosen}))) as client:
        payload = ok_payload(await call(client, "crop", {"image": image_b64, "box": list(BOX)}))
    assert set(payload) == {"cropped", "width", "height"}
    assert (payload["width"], payload["height"]) == (50, 38)


def test_output_validation_refuses_a_payload_that_does_not_fit_the_full_schema() -> None:
    schema = {"type": "object", "properties": {"width": {"type": "integer"}}, "required": ["width"]}
    assert validated({"width": 3}, schema) == {"width": 3}
    with pytest.raises(OutputInvalidError, match=r"output\.width: 'wide' is not of type 'integer' \(not sent\)"):
        validated({"width": "wide"}, schema)


@pytest.mark.anyio
async def test_a_declared_fallback_is_published_in_the_instructions_and_the_tool_description(
    config: ServerConfig,
) -> None:
    chosen = profile(fallback="an empty list when the model fails")
    server = build_parametric("detect", config.model_copy(update={"profile": chosen}))
    async with Client(server) as client:
        listed = (await client.list_tools()).tools
    assert "Fallback: an empty list when the model fails." in (listed[0].description or "")
    assert "Fallback" in (server.instructions or "")


def test_the_default_profile_and_a_text_schema_style_derive_different_schema_styles() -> None:
    assert truth_manifest("detect", ConventionProfile()).tools[0].schema_style is SchemaStyle.FULL
    assert truth_manifest("detect", profile(schema_style="text_json")).tools[0].schema_style is SchemaStyle.TEXT_JSON
    assert truth_manifest("crop", ConventionProfile()).tools[0].box_convention == CANONICAL


# --- the resource_uri encoding -----------------------------------------------------------------


def test_resource_uri_masks_round_trip_through_the_resources_and_only_through_them() -> None:
    masks = np.zeros((2, 6, 5), dtype=np.bool_)
    masks[0, 1:3, 1:4] = True
    masks[1, 4:6, 0:2] = True
    resources: dict[str, str] = {}
    payload = encode_masks(masks, MaskEncoding.RESOURCE_URI, resources=resources)
    assert isinstance(payload, list)
    assert all(str(uri).startswith("mask://") for uri in payload)
    assert set(resources) == set(payload)
    size = ImageSize(width=5, height=6)
    np.testing.assert_array_equal(decode_masks(payload, "resource_uri", size, resources=resources), masks)
    with pytest.raises(MaskPayloadError, match=r"resource_uri payload, object 0: 'mask://.*' names a server-side"):
        decode_masks(payload, "resource_uri", size)
    with pytest.raises(MaskPayloadError, match="expected a resource URI string"):
        decode_masks([7], "resource_uri", size, resources=resources)
    with pytest.raises(ValueError, match="need resources"):
        encode_masks(masks, MaskEncoding.RESOURCE_URI)


# --- profiles in scenarios -----------------------------------------------------------------------

SHIPPED = Path(__file__).resolve().parent.parent / "scenarios" / "profiles" / "pixel_detect_normalized_crop.yaml"

SCENARIO = """\
name: profiled
version: 1
seed: 3
runs: 2
scene:
  synthetic: {max_objects: 3}
servers:
  det:
    server: detect
    profile: {box: cxcywh/normalized, names: {items: objects, box: box}}
  crop: {server: crop, profile: crop-xywh}
task: {kind: crop_every, node: crop, class_name: circle}
agent:
  kind: scripted
  workflow:
    nodes:
      - id: detect
        call: det.detect
        args: {image: $scene.image}
      - id: crop
        call: crop.crop
        for_each: $detect.objects
        args: {image: $scene.image, box: $item.box}
"""


def test_a_scenario_profile_inline_or_by_preset_gives_its_server_the_derived_truth() -> None:
    from testbed.scenario import load_scenario_text

    scenario = load_scenario_text(SCENARIO)
    det, crop = scenario.servers["det"], scenario.servers["crop"]
    assert det.profile == profile(box="cxcywh/normalized", names={"items": "objects", "box": "box"})
    assert det.truth == truth_manifest("detect", det.profile)
    assert crop.profile == PRESETS["crop-xywh"].profile
    assert crop.truth is not None
    assert crop.truth.tools == registry().server("crop-xywh").truth.tools


def test_a_profiled_scenario_reads_back_as_it_was_written() -> None:
    from testbed.scenario import Scenario, load_scenario_text

    scenario = load_scenario_text(SCENARIO)
    dumped = scenario.model_dump(mode="json")
    assert "truth" not in dumped["servers"]["det"]  # derived again from the profile when read back
    assert Scenario.model_validate(dumped) == scenario


def test_a_profiled_scenario_names_the_profiles_tools_not_the_defaults() -> None:
    from testbed.scenario import ScenarioError, load_scenario_text

    with pytest.raises(ScenarioError, match=r"server 'crop' \(crop\) has no tool 'crop_region'"):
        load_scenario_text(SCENARIO.replace("call: crop.crop", "call: crop.crop_region"))


@pytest.mark.slow
def test_the_shipped_profile_scenario_finds_exactly_the_violations_it_expects() -> None:
    from testbed.check._suite import check_scenario
    from testbed.scenario import load_scenario

    scenario = load_scenario(SHIPPED)
    checked = check_scenario(SHIPPED, scenario, runs=2)
    assert (
        checked.found
        == checked.expected
        == {
            "coords.crop_misses_object",
            "coords.mismatch",
            "coords.out_of_bounds",
            "coords.undeclared",
        }
    )
    assert not checked.validator_failures


@pytest.mark.slow
def test_a_profiled_server_started_over_stdio_follows_its_profile(recorded_scenario: Any) -> None:
    from testbed.events import ExperimentHeader, read_events
    from testbed.scenario import load_scenario

    scenario = load_scenario(SHIPPED)
    servers = {alias: ref.model_copy(update={"transport": "stdio"}) for alias, ref in scenario.servers.items()}
    out = recorded_scenario(scenario.model_copy(update={"servers": servers, "runs": 1}))
    header = next(event for event in read_events(out).events if isinstance(event, ExperimentHeader))
    listed = {record.alias: [tool["name"] for tool in record.tools] for record in header.servers}
    assert listed == {"det": ["detect_objects"], "crop": ["crop_region"]}
    assert {record.transport for record in header.servers} == {"stdio"}


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ('{"shape_order": "wh"}', "profile.shape_order: shape_order orders a reported image size"),
        ('{"box": ', "--profile: not a JSON object"),
        ("/no/such/profile.yaml", "--profile: cannot read profile file '/no/such/profile.yaml'"),
    ],
)
def test_serve_refuses_a_bad_profile_in_one_line(given: str, complaint: str) -> None:
    from click.testing import CliRunner

    from testbed.cli import main

    result = CliRunner().invoke(main, ["serve", "crop", "--profile", given])
    assert result.exit_code != 0
    assert complaint in result.output
    assert len(result.output.strip().splitlines()) == 1
