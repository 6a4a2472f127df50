"""The registry: plug-ins register factories, are checked at once, namespaced, and never take the testbed down."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, ConfigDict

from testbed import registry as registry_module
from testbed.faults import EffectContext, PayloadFault, PayloadPath, load_faults
from testbed.protocol import SchemaStyle, ServerTruth, ToolTruth
from testbed.registry import (
    AgentSpec,
    PluginError,
    Registry,
    agent,
    fault_kind,
    load_entry_points,
    registering_as,
    registry,
    scene_source,
    server,
    validator,
)
from testbed.scenario import ScenarioError, load_scenario_text
from testbed.scenes import Scene, SceneSpec, generate_scene
from testbed.server_config import ServerConfig


@pytest.fixture
def isolated_registry() -> Iterator[Registry]:
    """The process registry, restored to what it held before the test registered anything."""
    reg = registry()
    saved = {name: dict(table) for name, table in reg._tables().items()}
    points = list(reg.entry_points)
    yield reg
    for name, table in reg._tables().items():
        table.clear()
        table.update(saved[name])
    reg.entry_points[:] = points


def _truth(name: str, *tools: str) -> ServerTruth:
    return ServerTruth(
        name=name,
        kind="detection",
        summary="test server",
        declares_conventions=False,
        tools=tuple(ToolTruth(name=tool, schema_style=SchemaStyle.CONTENT) for tool in tools),
    )


def _server_with(*tools: str) -> Any:
    def build(config: ServerConfig) -> MCPServer:
        mcp = MCPServer("test")
        for tool in tools:
            mcp.tool(name=tool)(lambda: "ok")
        return mcp

    return build


def test_the_built_in_plugins_arrive_through_the_entry_point_group() -> None:
    reg = registry()
    loaded = {point.name: point for point in reg.entry_points}
    assert loaded["servers"].error is None
    assert loaded["agents"].error is None
    servers = [line for line in loaded["servers"].registered if line.startswith("server ")]
    assert len(servers) == 11 + 5 + 11 + 5  # named + parametric + vulnerable (vuln-*) + case studies (case-*)
    assert set(reg.agents) >= {"scripted", "retrieval", "llm", "multi"}
    assert set(reg.tasks) >= {"none", "detect_all", "segment_all", "crop_every"}
    assert set(reg.scene_sources) >= {"synthetic", "images"}
    assert all(plugin.origin.distribution == "mcp-vision-testbed" for plugin in reg.servers.values())


def test_a_plugin_server_is_namespaced_by_its_distribution(isolated_registry: Registry) -> None:
    with registering_as("my-dist"):
        server("weird", truth=_truth("weird", "detect"))(_server_with("detect"))
    plugin = isolated_registry.server("my-dist/weird")
    assert plugin.truth.name == "my-dist/weird"
    assert [tool.name for tool in plugin.tools] == ["detect"]


def test_a_manifest_that_lists_other_tools_than_the_server_declares_is_refused(isolated_registry: Registry) -> None:
    with registering_as("my-dist"), pytest.raises(PluginError) as caught:
        server("weird", truth=_truth("weird", "detect", "segment"))(_server_with("detect"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("plugin my-dist: server 'weird': ")
    assert "['segment'] that the server does not declare" in message
    assert "my-dist/weird" not in isolated_registry.servers


def test_a_manifest_named_otherwise_than_its_server_is_refused(isolated_registry: Registry) -> None:
    with registering_as("my-dist"), pytest.raises(PluginError, match="its truth manifest is named 'other'; name it"):
        server("weird", truth=_truth("other", "detect"))(_server_with("detect"))


def test_a_duplicate_name_is_refused_naming_both_plugins(isolated_registry: Registry) -> None:
    with registering_as("my-dist"):
        server("weird", truth=_truth("weird", "detect"))(_server_with("detect"))
        with pytest.raises(PluginError, match="already registered by my-dist; choose another name"):
            server("weird", truth=_truth("weird", "detect"))(_server_with("detect"))


def test_a_fault_kind_expecting_an_uncatalogued_id_is_refused(isolated_registry: Registry) -> None:
    with (
        registering_as("my-dist"),
        pytest.raises(PluginError, match=r"expects 'coords\.nonsense', not in"),
    ):

        @fault_kind
        class Nonsense(PayloadFault):
            kind: Literal["my-dist/nonsense"] = "my-dist/nonsense"
            expected = ("coords.nonsense",)


def test_a_validator_emitting_an_uncatalogued_id_is_refused(isolated_registry: Registry) -> None:
    with registering_as("my-dist"), pytest.raises(PluginError, match=r"emits 'made\.up', not in the violation"):
        validator("check", emits=["made.up"])(lambda record: [])


def test_a_registered_fault_kind_is_valid_in_a_fault_list(isolated_registry: Registry) -> None:
    with registering_as("my-dist"):

        @fault_kind
        class Jitter(PayloadFault):
            """Boxes move a little."""

            kind: Literal["my-dist/jitter"] = "my-dist/jitter"
            expected = ("coords.mismatch",)

            def alter(self, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
                return payload, "moved nothing"

    faults = load_faults([{"kind": "my-dist/jitter", "target": {"server": "det", "path": "boxes"}}])
    assert isinstance(faults[0], Jitter)
    assert faults[0].expected == ("coords.mismatch",)


def test_an_unknown_fault_kind_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"faults\[0\]\.kind: unknown kind 'melt'; expected one of: delay, timeout"):
        load_faults([{"kind": "melt", "target": {"server": "det"}}])


class _EchoSpec(AgentSpec):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["my-dist/echo"] = "my-dist/echo"
    loud: bool = False


_SCENARIO = """
name: plugin-kinds
version: 1
seed: 0
runs: 1
scene: {SCENE}
servers: {det: {server: detect-xyxy}}
task: {kind: none}
agent: {AGENT}
"""


def test_a_plugin_agent_kind_is_valid_in_a_scenario_and_its_errors_keep_their_field(
    isolated_registry: Registry,
) -> None:
    with registering_as("my-dist"):
        agent("echo", spec=_EchoSpec)(lambda spec, models, *, seed: None)
    text = _SCENARIO.replace("{SCENE}", "{synthetic: {}}")
    scenario = load_scenario_text(text.replace("{AGENT}", "{kind: my-dist/echo, loud: true}"))
    assert isinstance(scenario.agent, _EchoSpec)
    assert scenario.agent.loud
    with pytest.raises(ScenarioError, match=r"agent\.loud: input should be a valid boolean"):
        load_scenario_text(text.replace("{AGENT}", "{kind: my-dist/echo, loud: maybe}"))
    with pytest.raises(ScenarioError, match=r"agent\.kind: unknown kind 'echo'.*my-dist/echo"):
        load_scenario_text(text.replace("{AGENT}", "{kind: echo}"))


class _FlatSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    objects: int = 2


def test_a_plugin_scene_source_feeds_the_runs(isolated_registry: Registry) -> None:
    seen: list[tuple[int, int]] = []

    def flat(spec: _FlatSpec, *, seed: int, run: int, base_dir: Path | None) -> Scene:
        seen.append((seed, run))
        return generate_scene(SceneSpec(min_objects=spec.objects, max_objects=spec.objects), seed + run)

    with registering_as("my-dist"):
        scene_source("flat", spec=_FlatSpec)(flat)
    text = _SCENARIO.replace(
        "{AGENT}", "{kind: scripted, workflow: {nodes: [{id: d, call: det.detect, args: {image: $scene.image}}]}}"
    )
    scenario = load_scenario_text(text.replace("{SCENE}", "{my-dist/flat: {objects: 3}}"))
    name, spec = scenario.scene.selected
    scene = isolated_registry.scene_source(name).load(spec, seed=scenario.seed, run=4, base_dir=None)
    assert (name, len(scene.objects), seen) == ("my-dist/flat", 3, [(0, 4)])
    with pytest.raises(ScenarioError, match=r"unknown scene source 'my-dist/nope'"):
        load_scenario_text(text.replace("{SCENE}", "{my-dist/nope: {}}"))


def _entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> EntryPoint:
    module = f"plugin_{name}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    return EntryPoint(name=name, value=module, group=registry_module.GROUP)


def test_a_broken_plugin_is_one_warning_and_its_partial_registrations_are_taken_back(
    isolated_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    good = _entry_point(
        tmp_path,
        monkeypatch,
        "good",
        """
        from testbed.registry import task_checker

        @task_checker("plugin_good_task")
        def check(readings, scene, size, *, class_name):
            return None, "nothing to check"
        """,
    )
    broken = _entry_point(
        tmp_path,
        monkeypatch,
        "broken",
        """
        from testbed.registry import task_checker

        @task_checker("plugin_half_task")
        def check(readings, scene, size, *, class_name):
            return None, "half"

        raise RuntimeError("boom at import")
        """,
    )
    with caplog.at_level(logging.WARNING, logger="testbed.plugins"):
        loaded = load_entry_points(isolated_registry, points=[broken, good])
    assert loaded == 1
    assert "unknown-distribution/plugin_good_task" in isolated_registry.tasks
    assert "unknown-distribution/plugin_half_task" not in isolated_registry.tasks
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == ["testbed: plug-in broken from unknown distribution not loaded: RuntimeError: boom at import"]
    assert isolated_registry.entry_points[-2].error == "RuntimeError: boom at import"
