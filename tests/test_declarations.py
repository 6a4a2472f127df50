"""Declarations as a switch (servers, the ``declarations`` factor) and the agents that read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import numpy as np
import pytest
from mcp import Client

from agents._catalog import declared_conventions
from agents.llm import decision_node, plan_schema
from agents.retrieval import tool_document
from servers.parametric import build_parametric
from testbed.conventions import ImageSize, from_canonical
from testbed.experiment import DesignError, analyse, load_design, plan_experiment, run_cells, write_manifest
from testbed.profile import PRESETS, Capability, ConventionProfile
from testbed.protocol import EXTENSION_KEYWORDS
from testbed.scenes import Scene
from testbed.server_config import ServerConfig
from tests._helpers import call

REPOSITORY = Path(__file__).resolve().parents[1]
PIPELINE = REPOSITORY / "scenarios" / "profiles" / "declared_detect_crop.yaml"
V1_DETECT_CROP = REPOSITORY / "scenarios" / "v1" / "detect_crop.yaml"
SHIPPED = REPOSITORY / "scenarios" / "experiments" / "declarations.yaml"
BOX = (10.0, 12.0, 60.0, 50.0)


def _stripped(node: Any) -> Any:
    """``node`` without any extension keyword, at any depth."""
    if isinstance(node, dict):
        return {key: _stripped(value) for key, value in node.items() if key not in EXTENSION_KEYWORDS}
    if isinstance(node, list):
        return [_stripped(value) for value in node]
    return node


def _listed(capability: Capability, profile: ConventionProfile) -> list[dict[str, Any]]:
    server = build_parametric(capability, ServerConfig(profile=profile))
    listed = ("name", "title", "description", "parameters", "output_schema", "annotations", "icons", "meta")
    return [{field: getattr(tool, field) for field in listed} for tool in server._tool_manager.list_tools()]


PROFILES: dict[Capability, ConventionProfile] = {
    "detect": ConventionProfile.model_validate({"box": "cxcywh/normalized", "shape_order": "hw"}),
    "segment": ConventionProfile.model_validate({"mask": {"encoding": "png_base64"}, "names": {"prompts": "boxes"}}),
    "crop": ConventionProfile.model_validate({"box": "xywh/pixel", "memory": {"scope": "ttl", "ttl_seconds": 9}}),
}


# --- the switch on the servers -------------------------------------------------------------------


@pytest.mark.parametrize("capability", list(PROFILES))
def test_declarations_off_strips_exactly_the_extension_keywords_from_the_listed_tools(capability: Capability) -> None:
    declared = PROFILES[capability]
    on = _listed(capability, declared)
    off = _listed(capability, declared.model_copy(update={"declares_extensions": False}))

    assert on != off, "the profile declares something to strip"
    # The schemas lose exactly the extension keywords; the description loses its prose declaration (the
    # convention it names), as the named undeclared servers' descriptions do; nothing else changes.
    described = [tool.pop("description") for tool in on]
    bare = [tool.pop("description") for tool in off]
    assert _stripped(on) == off
    assert str(declared.box) in described[-1]
    assert all(str(declared.box) not in text for text in bare)


async def _answers(capability: Capability, profile: ConventionProfile, config: ServerConfig, image_b64: str,
                   size: ImageSize) -> list[Any]:  # fmt: skip
    async with Client(build_parametric(capability, config.model_copy(update={"profile": profile}))) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        arguments: dict[str, Any] = {"image": image_b64}
        if capability == "crop":
            stored = await call(client, "load_image", {"image": image_b64}, clock=1.0)
            handle = (stored.structured_content or {})["handle"]
            box = from_canonical(np.array([BOX]), profile.box, size)[0].tolist()
            arguments = {"handle": handle, "box": box}
        result = await call(client, capability, arguments, clock=2.0)
        assert set(tools) >= {capability}
        return [result.is_error, result.structured_content, [block.model_dump() for block in result.content]]


@pytest.mark.anyio
@pytest.mark.parametrize("capability", list(PROFILES))
async def test_declarations_off_changes_nothing_a_server_answers_on_a_seeded_scene(
    capability: Capability, config: ServerConfig, scene: Scene, image_b64: str
) -> None:
    size = ImageSize(width=scene.width, height=scene.height)
    declared = PROFILES[capability]
    on = await _answers(capability, declared, config, image_b64, size)
    off = await _answers(
        capability, declared.model_copy(update={"declares_extensions": False}), config, image_b64, size
    )

    assert on[0] is False, on
    assert on == off


# --- the factor ----------------------------------------------------------------------------------


def _design(tmp_path: Path, body: str, *, scenario: Path = PIPELINE, runs: int = 4) -> Path:
    path = tmp_path / "design.yaml"
    path.write_text(f"name: trial\nscenario: {scenario}\nseed: 3\nruns: {runs}\n{body}", encoding="utf-8")
    return path


def _declares(profile: ConventionProfile | None) -> bool | None:
    return None if profile is None else profile.declares_extensions


def test_the_declarations_factor_switches_every_profiled_server_and_nothing_else(tmp_path: Path) -> None:
    plan = plan_experiment(load_design(_design(tmp_path, "factors:\n  declarations: {kind: declarations}\n")))

    on, off = (cell.scenario for cell in plan.cells)
    assert [cell.level("declarations") for cell in plan.cells] == ["on", "off"]
    assert {alias: _declares(ref.profile) for alias, ref in on.servers.items()} == {"det": True, "crop": True}
    assert {alias: _declares(ref.profile) for alias, ref in off.servers.items()} == {
        "det": False,
        "crop": False,
    }
    for alias in ("det", "crop"):
        switched = on.servers[alias].profile.model_copy(update={"declares_extensions": False})  # type: ignore[union-attr]
        assert off.servers[alias].profile == switched
        assert off.servers[alias].truth is not None
        assert off.servers[alias].truth.declares_conventions is False  # type: ignore[union-attr]
    assert off.model_dump(exclude={"servers"}) == on.model_dump(exclude={"servers"})
    assert [contrast.name for contrast in plan.contrasts] == ["declarations: off vs on"]


def test_a_server_given_as_a_preset_is_expanded_to_its_profile_before_it_is_switched(tmp_path: Path) -> None:
    # detect_crop names two presets as servers: each becomes its parametric server with the preset's profile.
    body = "factors:\n  declarations:\n    kind: declarations\n    servers: [crop]\n    levels: [on, off]\n"
    plan = plan_experiment(load_design(_design(tmp_path, body, scenario=V1_DETECT_CROP)))

    on, off = (cell.scenario.servers for cell in plan.cells)
    assert (on["crop"].server, on["crop"].profile) == ("crop", PRESETS["crop-xywh"].profile)
    assert off["crop"].profile == PRESETS["crop-xywh"].profile.model_copy(update={"declares_extensions": False})
    assert (on["det"].server, on["det"].profile) == (off["det"].server, None) == ("detect-xyxy", None)


@pytest.mark.parametrize(
    ("servers", "field", "message"),
    [
        ("[crop, nope]", "factors.declarations.servers[1]", "has no server 'nope'"),
        ("[det, crop]", "factors.declarations.servers[0]", "has no profiled server 'det'"),
    ],
)
def test_an_alias_that_is_not_a_profiled_server_is_one_line_naming_it(
    tmp_path: Path, servers: str, field: str, message: str
) -> None:
    copied = tmp_path / "unprofiled.yaml"  # det is a parametric detector with no profile
    text = PIPELINE.read_text(encoding="utf-8")
    copied.write_text(text.replace("    profile: {box: xyxy/pixel/xy/top_left}\n", ""), encoding="utf-8")
    path = _design(tmp_path, f"factors:\n  declarations:\n    kind: declarations\n    servers: {servers}\n",
                   scenario=copied)  # fmt: skip

    with pytest.raises(DesignError) as raised:
        plan_experiment(load_design(path))

    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"{path}:8: {field}: ")
    assert message in raised.value.message


def test_the_shipped_declarations_experiment_crosses_the_switch_with_three_agents() -> None:
    plan = plan_experiment(load_design(SHIPPED))

    assert [cell.levels for cell in plan.cells] == [
        (("declarations", switch), ("agent", agent))
        for switch in ("on", "off")
        for agent in ("scripted", "retrieval", "llm")
    ]
    assert [contrast.name for contrast in plan.contrasts][:3] == [
        "declarations, scripted",
        "declarations, retrieval",
        "declarations, llm",
    ]


@pytest.mark.slow
def test_undeclared_conventions_are_a_planted_coords_effect_of_the_switch(tmp_path: Path) -> None:
    body = "factors:\n  declarations: {kind: declarations}\n"
    plan = plan_experiment(load_design(_design(tmp_path, body, runs=10)))
    out = tmp_path / "out"
    write_manifest(plan, out)
    anyio.run(lambda: run_cells(plan, out, device="cpu"))

    rows = analyse(plan, out).contrasts.set_index(["contrast", "outcome"])
    coords = rows.loc[("declarations: off vs on", "coords")]
    assert (coords["treatment"], coords["baseline"]) == (1.0, 0.0)
    assert coords["p_value"] < 0.01
    success = rows.loc[("declarations: off vs on", "task_success")]
    assert success["treatment"] == success["baseline"] == 1.0  # off strips declarations, not behaviour


# --- agents read declarations --------------------------------------------------------------------


def _tools(declares: bool) -> dict[str, types.Tool]:
    tools: dict[str, types.Tool] = {}
    for alias, capability, box in (("det", "detect", "xyxy/pixel"), ("crop", "crop", "xywh/pixel")):
        profile = ConventionProfile.model_validate({"box": box, "declares_extensions": declares})
        for listed in build_parametric(capability, ServerConfig(profile=profile))._tool_manager.list_tools():  # type: ignore[arg-type]
            tools[f"{alias}.{listed.name}"] = types.Tool(
                name=listed.name,
                description=listed.description,
                input_schema=listed.parameters,
                output_schema=listed.output_schema,
            )
    return tools


def test_the_llm_schema_offers_the_declared_conventions_and_an_adapter_only_when_declared() -> None:
    values = ["$scene.image", "$detect.detections[*].bbox"]
    declared = plan_schema(_tools(True), values, ["$detect.detections"], ["$item.bbox"])
    undeclared = plan_schema(_tools(False), values, ["$detect.detections"], ["$item.bbox"])

    crop = next(c for c in declared["anyOf"] if c["properties"]["tool"]["const"] == "crop.crop")
    box = crop["properties"]["arguments"]["properties"]["box"]
    assert "coordinate_system=xywh/pixel/xy/top_left" in box["description"]
    assert crop["properties"]["adapters"]["properties"]["box"]["enum"] == [
        None,
        "xyxy/pixel/xy/top_left -> xywh/pixel/xy/top_left",
    ]
    assert "adapters" not in json.dumps(undeclared)
    assert "description" not in json.dumps(undeclared)
    assert _stripped_descriptions(declared) == undeclared


def _stripped_descriptions(schema: dict[str, Any]) -> dict[str, Any]:
    """The declared schema less what declarations added: argument descriptions and the adapter choice."""
    text: dict[str, Any] = json.loads(json.dumps(schema))
    for choice in text["anyOf"]:
        choice["properties"].pop("adapters", None)
        for argument in choice["properties"].get("arguments", {}).get("properties", {}).values():
            argument.pop("description", None)
    return text


def test_an_adapter_the_llm_chooses_becomes_a_declared_adapter_on_its_node() -> None:
    from testbed.workflow import WorkflowNode

    decision = {
        "tool": "crop.crop",
        "for_each": "$detect.detections",
        "arguments": {"image": "$scene.image", "box": "$item.bbox"},
        "adapters": {"box": "xyxy/pixel/xy/top_left -> xywh/pixel/xy/top_left"},
    }
    node = WorkflowNode.model_validate(decision_node("crop", decision))

    assert str(node.adapters["box"]) == "box xyxy/pixel/xy/top_left -> xywh/pixel/xy/top_left"


def test_the_retrieval_agent_embeds_declared_conventions_only_when_declared() -> None:
    declared, undeclared = _tools(True), _tools(False)

    assert "coordinate_system=xywh/pixel/xy/top_left" in tool_document("crop.crop", declared["crop.crop"])
    assert tool_document("crop.crop", undeclared["crop.crop"]) == (
        f"crop.crop: {undeclared['crop.crop'].description or ''}"
    )
    assert declared_conventions(undeclared["det.detect"]) == {}
