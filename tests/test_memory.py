"""Protocol-native visual memory: the context store, the ``context`` memory scope and its MCP resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from mcp import Client
from mcp.server.subscriptions import ResourceUpdated
from mcp_types import CallToolResult, TextContent, TextResourceContents
from pydantic import ValidationError

from servers.parametric import build_parametric
from testbed.imaging import decode_base64_image
from testbed.memory import ContextStore, EntryRef, MemoryAccessError, Namespace, Provenance, is_context_uri
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.profile import ConventionProfile, truth_manifest
from testbed.protocol import MemoryScope, SemanticRole
from testbed.scenario import load_scenario_text
from testbed.scenes import Scene
from testbed.server_config import ServerConfig
from testbed.validators import validate_experiment
from tests._helpers import call, expected_crop, meta, ok_payload

PROVENANCE = Provenance(tool="crop.load_image", call="t=0s load_image", inputs=("argument:image",))
RUN_0 = Namespace("run-0", "_", "image")


def _put(store: ContextStore, value: Any, *, clock: float = 0.0, ttl_s: float | None = None) -> str:
    return store.put(RUN_0, "k1", value, clock=clock, provenance=PROVENANCE, ttl_s=ttl_s).ref.uri


# --- the store -------------------------------------------------------------------------------


def test_versions_count_up_per_key_and_each_reference_reads_its_own_version() -> None:
    store = ContextStore()
    first, second = _put(store, "a"), _put(store, "b")

    assert (first, second) == ("context://run-0/_/image/k1/v1", "context://run-0/_/image/k1/v2")
    assert store.get(first, run="run-0", clock=0).value == "a"
    assert store.get(second, run="run-0", clock=0).value == "b"
    assert store.get(second, run="run-0", clock=0).provenance == PROVENANCE
    latest = store.latest(RUN_0, "k1")
    assert latest is not None
    assert latest.ref.version == 2
    assert EntryRef.parse(second).latest_uri == "context://run-0/_/image/k1"


def test_a_reference_is_readable_from_its_own_run_only() -> None:
    store = ContextStore()
    uri = _put(store, "a")

    with pytest.raises(MemoryAccessError, match=r"^handle: .* belongs to 'run-0', not to this run \('run-1'\)$"):
        store.get(uri, run="run-1", clock=0, argument="handle")


def test_an_entry_expires_on_the_run_clock_and_the_gc_drops_it() -> None:
    store = ContextStore()
    uri = _put(store, "a", clock=10.0, ttl_s=5.0)
    kept = _put(store, "b", clock=10.0)

    assert store.get(uri, run="run-0", clock=14.9).value == "a"
    with pytest.raises(MemoryAccessError, match="expired at 15 s"):
        store.get(uri, run="run-0", clock=15.0)
    assert store.gc(20.0) == [EntryRef.parse(uri)]
    with pytest.raises(MemoryAccessError, match=r"expired \(dropped by the GC\)"):
        store.get(uri, run="run-0", clock=0.0)
    assert [entry.ref.uri for entry in store.entries("run-0")] == [kept]


def test_dropping_a_run_and_evicting_old_runs_forget_their_entries() -> None:
    store = ContextStore(max_runs=2)
    for run in ("run-0", "run-1", "run-2"):
        store.put(Namespace(run, "_", "image"), "k", run, clock=0, provenance=PROVENANCE)

    assert sorted(entry.ref.namespace.run for entry in store.entries()) == ["run-1", "run-2"]
    assert store.drop_run("run-1") == 1
    assert len(store) == 1
    with pytest.raises(MemoryAccessError, match="unknown in this run"):
        store.get("context://run-0/_/image/k/v1", run="run-0", clock=0)


@pytest.mark.parametrize("uri", ["context://run-0/_/image/k1", "ctx://run-0/_/image/k1/v1", "context://a/b/c/d/v0"])
def test_a_malformed_reference_is_one_line_naming_the_argument(uri: str) -> None:
    with pytest.raises(MemoryAccessError) as caught:
        ContextStore().get(uri, run="run-0", clock=0, argument="image_id")

    assert str(caught.value).startswith("image_id: ")
    assert "\n" not in str(caught.value)
    assert not is_context_uri(uri)


def test_subscribers_hear_of_every_new_version_until_they_unsubscribe() -> None:
    store = ContextStore()
    heard: list[str] = []
    unsubscribe = store.subscribe(lambda entry: heard.append(entry.ref.uri))
    first = _put(store, "a")
    unsubscribe()
    _put(store, "b")

    assert heard == [first]


# --- the context scope of a profile -----------------------------------------------------------

CONTEXT_CROP = ConventionProfile.model_validate({"memory": {"scope": "context", "ttl_seconds": 15}})


def test_a_context_profile_adds_a_store_tool_returning_context_references() -> None:
    truth = truth_manifest("crop", CONTEXT_CROP)
    store, crop = truth.tools

    assert (store.name, store.returns, store.ttl_seconds) == ("load_image", MemoryScope.CONTEXT, 15)
    assert store.paths == {SemanticRole.IMAGE_HANDLE: "handle"}
    assert crop.accepts == (MemoryScope.CONTEXT,)
    assert crop.inputs[SemanticRole.IMAGE_HANDLE] == "handle"


def test_a_context_profile_rejects_a_declared_lifetime_it_cannot_report() -> None:
    with pytest.raises(ValidationError, match=r"declared_ttl_seconds applies to the ttl scope only, not .context."):
        ConventionProfile.model_validate({"memory": {"scope": "context", "declared_ttl_seconds": 5}})


def _error_text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return first.text


def _resource_json(contents: Any) -> dict[str, Any]:
    first = contents.contents[0]
    assert isinstance(first, TextResourceContents)
    document: dict[str, Any] = json.loads(first.text)
    return document


@pytest.mark.anyio
async def test_a_context_crop_reads_its_image_by_reference_within_its_run_and_lifetime(
    scene: Scene, image_b64: str
) -> None:
    server = build_parametric("crop", ServerConfig(profile=CONTEXT_CROP))
    box = [float(v) for v in scene.objects[0].box_xyxy]
    async with Client(server) as client:
        uri = ok_payload(await call(client, "load_image", {"image": image_b64}, scope="run-3", clock=10.0))["handle"]
        crop = await call(client, "crop", {"handle": uri, "box": box}, scope="run-3", clock=20.0)
        foreign = await call(client, "crop", {"handle": uri, "box": box}, scope="run-4", clock=20.0)
        late = await call(client, "crop", {"handle": uri, "box": box}, scope="run-3", clock=25.0)

    assert uri.startswith("context://run-3/_/image/")
    assert uri.endswith("/v1")
    piece = decode_base64_image(ok_payload(crop)["crop"])
    assert np.array_equal(piece, expected_crop(scene, (box[0], box[1], box[2], box[3])))
    assert foreign.is_error
    assert "not to this run ('run-4')" in _error_text(foreign)
    assert _error_text(foreign).startswith("handle: ")
    assert late.is_error
    assert "expired at 25 s" in _error_text(late)


@pytest.mark.anyio
async def test_each_entry_is_a_resource_with_its_provenance_and_new_versions_are_announced(
    image_b64: str,
) -> None:
    server = build_parametric("crop", ServerConfig(profile=CONTEXT_CROP))
    announced: list[str] = []
    server._subscriptions.subscribe(
        lambda event: announced.append(event.uri) if isinstance(event, ResourceUpdated) else None
    )
    async with Client(server) as client:
        uri = ok_payload(await call(client, "load_image", {"image": image_b64}, scope="run-5", clock=0.0))["handle"]
        with anyio.fail_after(30):
            own = _resource_json(await client.read_resource(uri, meta=meta(scope="run-5", clock=0.0)))
        templates = (await client.list_resource_templates()).resource_templates

    assert [template.uri_template for template in templates] == ["context://{run}/{agent}/{role}/{key}/{version}"]
    assert own["provenance"] == {"tool": "crop.load_image", "call": "t=0s load_image", "inputs": ["argument:image"]}
    assert (own["version"], own["expires_at"], own["role"]) == (1, 15.0, "image")
    assert own["png_base64"]
    assert announced == [uri.rsplit("/", 1)[0]]


# --- a scenario through the context store ------------------------------------------------------

CONTEXT_SCENARIO = """
name: context_detect_crop
version: 1
seed: 0
runs: 2
scene: {synthetic: {min_objects: 2, max_objects: 4}}
servers:
  det: {server: detect}
  crop: {server: crop, profile: {memory: {scope: context, ttl_seconds: 60}}}
task: {kind: crop_every, node: crop, class_name: circle}
agent:
  kind: scripted
  workflow:
    nodes:
      - {id: detect, call: det.detect, args: {image: $scene.image}}
      - {id: load, call: crop.load_image, args: {image: $scene.image}}
      - id: crop
        call: crop.crop
        for_each: $detect.detections
        args: {handle: $load.handle, box: $item.bbox}
expect: []
"""


@pytest.mark.slow
def test_a_scenario_passes_context_references_between_calls_and_replays_exactly(tmp_path: Path) -> None:
    scenario = load_scenario_text(CONTEXT_SCENARIO)
    summary = anyio.run(lambda: run_experiment(scenario, out_dir=tmp_path, workers=1))
    result = validate_experiment(tmp_path)
    report = anyio.run(lambda: replay_experiment(tmp_path))
    events = (tmp_path / "events.jsonl").read_text()

    assert summary.tasks_passed == summary.tasks_checked == 2
    assert [violation.id for violation in result.violations] == []
    assert '"handle":"context://run-1/_/image/' in events
    assert report.divergence is None


# --- masks and crops as entries -----------------------------------------------------------------

CONTEXT = {"memory": {"scope": "context"}}


def test_an_idempotent_write_of_the_same_call_returns_the_version_held_and_another_call_writes_the_next() -> None:
    store = ContextStore()
    first = store.put(RUN_0, "k1", "a", clock=0, provenance=PROVENANCE, idempotent=True)
    again = store.put(RUN_0, "k1", "a", clock=0, provenance=PROVENANCE, idempotent=True)
    later = Provenance(tool="crop.load_image", call="t=5s load_image", inputs=("argument:image",))
    other = store.put(RUN_0, "k1", "a", clock=5, provenance=later, idempotent=True)

    assert again is first
    assert (first.ref.version, other.ref.version) == (1, 2)
    assert len(store) == 2


@pytest.mark.anyio
async def test_a_context_segmenter_keeps_each_mask_and_a_context_consumer_cuts_along_it(
    config: ServerConfig, image_b64: str
) -> None:
    segmenter = build_parametric(
        "segment", config.model_copy(update={"profile": ConventionProfile.model_validate(CONTEXT)})
    )
    consumer = build_parametric(
        "crop-mask", config.model_copy(update={"profile": ConventionProfile.model_validate(CONTEXT)})
    )
    async with Client(segmenter) as client:
        handle = ok_payload(await call(client, "load_image", {"image": image_b64}, scope="run-6", clock=0.0))["handle"]
        instances = ok_payload(await call(client, "segment", {"handle": handle}, scope="run-6", clock=10.0))[
            "instances"
        ]
        mask_entry = _resource_json(await client.read_resource(instances[0]["mask_ref"], meta=meta(scope="run-6")))
    async with Client(consumer) as client:
        cut = ok_payload(
            await call(
                client, "crop_mask", {"handle": handle, "mask": instances[0]["mask_ref"]}, scope="run-6", clock=20.0
            )
        )
        foreign = await call(
            client, "crop_mask", {"handle": handle, "mask": instances[0]["mask_ref"]}, scope="run-7", clock=20.0
        )
        crop_entry = _resource_json(await client.read_resource(cut["crop_ref"], meta=meta(scope="run-6")))
        by_value = ok_payload(
            await call(client, "crop_mask", {"handle": handle, "mask": instances[0]["mask"]}, scope="run-6", clock=20.0)
        )
        as_image = await call(
            client, "crop_mask", {"handle": instances[0]["mask_ref"], "mask": instances[0]["mask"]}, scope="run-6"
        )

    assert len({item["mask_ref"] for item in instances}) == len(instances) > 0
    assert all(item["mask_ref"].startswith("context://run-6/_/mask/") for item in instances)
    assert mask_entry["role"] == "mask"
    assert mask_entry["provenance"] == {"tool": "segment.segment", "call": "t=10s segment", "inputs": [handle]}
    mask = decode_base64_image(mask_entry["png_base64"])
    assert set(np.unique(mask)) <= {0, 255}
    assert crop_entry["role"] == "crop"
    assert crop_entry["provenance"]["inputs"] == [handle, instances[0]["mask_ref"]]
    assert crop_entry["provenance"]["tool"] == "crop-mask.crop_mask"
    assert cut["crop"] == by_value["crop"]  # the reference cuts exactly what the value does
    assert by_value["crop_ref"] == cut["crop_ref"].replace("/v1", "/v2")  # another call: the same crop, next version
    assert foreign.is_error
    assert _error_text(foreign).startswith("handle: ")
    assert as_image.is_error
    assert _error_text(as_image) == f"handle: {instances[0]['mask_ref']!r} holds a mask, not an image"


@pytest.mark.anyio
async def test_a_model_resolution_mask_entry_is_refused_on_the_image_grid_naming_both_sizes(
    config: ServerConfig, scene: Scene, image_b64: str
) -> None:
    model_grid = ConventionProfile.model_validate({**CONTEXT, "mask": {"resolution": "model"}})
    segmenter = build_parametric("segment", config.model_copy(update={"profile": model_grid}))
    consumer = build_parametric(
        "crop-mask", config.model_copy(update={"profile": ConventionProfile.model_validate(CONTEXT)})
    )
    async with Client(segmenter) as client:
        handle = ok_payload(await call(client, "load_image", {"image": image_b64}, scope="run-9"))["handle"]
        reference = ok_payload(await call(client, "segment", {"handle": handle}, scope="run-9"))["instances"][0][
            "mask_ref"
        ]
    async with Client(consumer) as client:
        refused = await call(client, "crop_mask", {"handle": handle, "mask": reference}, scope="run-9")

    assert refused.is_error
    assert _error_text(refused).startswith(f"mask: {reference!r} is a ")
    assert _error_text(refused).endswith(f" mask, the image is {scene.width}x{scene.height}")


@pytest.mark.anyio
async def test_a_context_crop_is_an_entry_another_tool_reads_as_its_image_and_a_mask_is_not(
    config: ServerConfig, scene: Scene, image_b64: str
) -> None:
    cropper = build_parametric("crop", config.model_copy(update={"profile": ConventionProfile.model_validate(CONTEXT)}))
    box = [float(v) for v in scene.objects[0].box_xyxy]
    async with Client(cropper) as client:
        handle = ok_payload(await call(client, "load_image", {"image": image_b64}, scope="run-8", clock=0.0))["handle"]
        first = ok_payload(await call(client, "crop", {"handle": handle, "box": box}, scope="run-8", clock=10.0))
        width, height = first["width"], first["height"]
        whole = [0.0, 0.0, float(width), float(height)]
        again = ok_payload(
            await call(client, "crop", {"handle": first["crop_ref"], "box": whole}, scope="run-8", clock=20.0)
        )
        entry = _resource_json(await client.read_resource(again["crop_ref"], meta=meta(scope="run-8")))

    assert first["crop_ref"].startswith("context://run-8/_/crop/")
    assert np.array_equal(decode_base64_image(first["crop"]), expected_crop(scene, (box[0], box[1], box[2], box[3])))
    assert again["crop"] == first["crop"]  # the crop of a whole crop is that crop
    assert again["crop_ref"] == first["crop_ref"].replace("/v1", "/v2")
    assert entry["provenance"] == {
        "tool": "crop.crop",
        "call": "t=20s crop",
        "inputs": [first["crop_ref"], "argument:box"],
    }


CONTEXT_MASK_SCENARIO = """
name: context_segment_cut
version: 1
seed: 0
runs: 2
scene: {synthetic: {min_objects: 2, max_objects: 4}}
servers:
  seg: {server: segment, profile: {memory: {scope: context}}}
  cut: {server: crop-mask, profile: {memory: {scope: context}}}
task: {kind: segment_all, node: segment}
agent:
  kind: scripted
  workflow:
    nodes:
      - {id: load, call: seg.load_image, args: {image: $scene.image}}
      - {id: segment, call: seg.segment, args: {handle: $load.handle}}
      - id: cut
        call: cut.crop_mask
        for_each: $segment.instances
        args: {handle: $load.handle, mask: $item.mask_ref}
expect: []
"""


@pytest.mark.slow
def test_masks_and_crops_cross_a_scenario_by_reference_with_tracked_provenance_and_replay_exactly(
    tmp_path: Path,
) -> None:
    scenario = load_scenario_text(CONTEXT_MASK_SCENARIO)
    summary = anyio.run(lambda: run_experiment(scenario, out_dir=tmp_path, workers=1))
    result = validate_experiment(tmp_path)
    report = anyio.run(lambda: replay_experiment(tmp_path))
    live = anyio.run(lambda: replay_experiment(tmp_path, live=True, device="cpu"))
    events = (tmp_path / "events.jsonl").read_text()

    assert summary.tasks_passed == summary.tasks_checked == 2
    assert summary.outcomes == {"ok": summary.calls}
    assert [violation.id for violation in result.violations] == []
    assert '"mask":"context://run-1/_/mask/' in events
    assert '"crop_ref":"context://run-1/_/crop/' in events
    assert report.divergence is None
    assert live.divergence is None
