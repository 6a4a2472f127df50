"""Defenses as switches: each blocks its target attack, leaves benign v1 runs unchanged, and replays."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from click.testing import CliRunner

from testbed.agent import PlannedCall, RunView, SceneView
from testbed.cli import main
from testbed.defenses import DefenseGuard, Defenses, PrivilegeLevel, ToolPins, annotated_level
from testbed.events import BLOBS_DIR, BlobStore, CallEvent, CallOutcomeKind, DefenseEvent, read_events
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.scenario import Scenario, ScenarioError, load_scenario, load_scenario_text
from testbed.validators import CATALOG, CATEGORIES, Violation, validate_experiment

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ROOT / "scenarios" / "defenses"
ATTACK_SUCCEEDED = "security.attack_succeeded"
ALL_ON = Defenses(tool_pinning=True, role_binding=True, scoped_memory=True, provenance_tags=True)


def _record(scenario: Scenario, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    return out


def _by_run(violations: Sequence[Violation]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for violation in violations:
        found.setdefault(violation.run, set()).add(violation.id)
    return found


# --- each defense against its attack ---------------------------------------------------------------


def _check_defense_blocks_its_attack(
    name: str, defense: str, refusal: str, tmp_path: Path, *, unsaved: set[int]
) -> None:
    """Record ``name`` with ``defense`` off and on: on, the attack fails where it succeeded off (but in the runs
    ``unsaved``), each refusal is a defense event and a ``refusal`` violation, the task still passes, and the
    defended recording replays."""
    base = load_scenario(ATTACKS / f"{name}.yaml").model_copy(update={"runs": 3})
    off = _by_run(validate_experiment(_record(base, tmp_path / "off")).violations)
    defended = base.model_copy(update={"defenses": Defenses.model_validate({defense: True})})
    out = _record(defended, tmp_path / "on")
    on = _by_run(validate_experiment(out).violations)

    attacked_off = {run for run, ids in off.items() if ATTACK_SUCCEEDED in ids}
    assert attacked_off >= {1, 2}  # the attack works undefended
    assert not any(refusal in ids for ids in off.values())
    assert {run for run, ids in on.items() if ATTACK_SUCCEEDED in ids} == unsaved
    assert {run for run, ids in on.items() if refusal in ids} == attacked_off - unsaved  # refused where attacked
    events = read_events(out).events
    refused = [event for event in events if isinstance(event, DefenseEvent)]
    assert refused
    assert all(event.defense == defense for event in refused)
    skipped = [e for e in events if isinstance(e, CallEvent) and e.outcome is CallOutcomeKind.SKIPPED and e.tool]
    assert {(e.run, e.node, e.item) for e in skipped} == {(e.run, e.node, e.item) for e in refused}
    assert all(e.arguments == {} for e in skipped)  # the refused call's arguments live in its defense event
    finished = [e for e in events if getattr(e, "event", "") == "run_finished"]
    assert all(getattr(e, "task_passed", None) for e in finished)  # the user's task still succeeds
    report = anyio.run(lambda: replay_experiment(out))
    assert report.divergence is None


@pytest.mark.slow
def test_a_forwarded_call_above_the_role_is_reported_as_defense_privilege_exceeded(tmp_path: Path) -> None:
    _check_defense_blocks_its_attack(
        "role_binding_forward", "role_binding", "defense.privilege_exceeded", tmp_path, unsaved=set()
    )


@pytest.mark.slow
def test_a_rug_pulled_tool_is_reported_as_defense_tool_unpinned(tmp_path: Path) -> None:
    # Pinning trusts the first listing: the description changes after run 0, so run 0 is not saved.
    _check_defense_blocks_its_attack(
        "tool_pinning_rug_pull", "tool_pinning", "defense.tool_unpinned", tmp_path, unsaved={0}
    )


@pytest.mark.slow
def test_another_runs_handle_is_reported_as_defense_handle_unscoped(tmp_path: Path) -> None:
    _check_defense_blocks_its_attack(
        "scoped_memory_stale", "scoped_memory", "defense.handle_unscoped", tmp_path, unsaved=set()
    )


@pytest.mark.slow
def test_an_injected_path_is_reported_as_defense_provenance_untagged(tmp_path: Path) -> None:
    _check_defense_blocks_its_attack(
        "provenance_injected_path", "provenance_tags", "defense.provenance_untagged", tmp_path, unsaved=set()
    )


@pytest.mark.slow
def test_defenses_experiment_quick_shows_each_defense_cutting_attack_success(tmp_path: Path) -> None:
    import pandas as pd

    design = ROOT / "scenarios" / "experiments" / "defenses.yaml"
    result = CliRunner().invoke(main, ["experiment", str(design), "--quick", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    contrasts = pd.read_csv(tmp_path / "out" / "contrasts.csv")
    attack = contrasts[contrasts["outcome"] == "security"].set_index("contrast")
    assert set(attack.index) == {"role binding", "tool pinning", "scoped memory", "provenance tags"}
    assert (attack["baseline"] >= 0.9).all()  # undefended, the attack succeeds (pinning: all but run 0)
    assert (attack["treatment"] <= 0.1).all()
    assert (attack["high"] < 0).all()  # the paired interval excludes no effect
    task = contrasts[contrasts["outcome"] == "task_success"]
    assert (task["difference"] == 0).all()


# --- benign runs are unchanged ---------------------------------------------------------------------


def _calls(out: Path) -> list[tuple[Any, ...]]:
    return [
        (e.run, e.node, e.item, e.server, e.tool, e.outcome, e.arguments, e.payload, e.error)
        for e in read_events(out).events
        if isinstance(e, CallEvent)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["detect_crop", "detect_segment_crop", "detect_crop_ttl", "segment_crop_masked"])
def test_every_defense_on_leaves_a_benign_v1_run_unchanged(name: str, tmp_path: Path) -> None:
    scenario = load_scenario(ROOT / "scenarios" / "v1" / f"{name}.yaml").model_copy(update={"runs": 2})
    off = _record(scenario, tmp_path / "off")
    on = _record(scenario.model_copy(update={"defenses": ALL_ON}), tmp_path / "on")

    def violations(out: Path) -> list[tuple[Any, ...]]:
        found = validate_experiment(out).violations
        return sorted((v.id, v.run, v.server, v.node, v.item, v.detail) for v in found)

    assert _calls(on) == _calls(off)
    assert violations(on) == violations(off)
    assert not any(isinstance(event, DefenseEvent) for event in read_events(on).events)


# --- the guard, unit by unit -----------------------------------------------------------------------


def _tool(name: str, description: str = "d", *, read_only: bool | None = None) -> types.Tool:
    annotations = types.ToolAnnotations(read_only_hint=read_only) if read_only is not None else None
    return types.Tool(name=name, description=description, input_schema={"type": "object"}, annotations=annotations)


def _view(run: int, catalog: dict[str, list[types.Tool]]) -> RunView:
    return RunView(run=run, scene=SceneView(image="SCENE", image_path="/x/sandbox/run-0/scene.png", width=8, height=8),
                   catalog=catalog)  # fmt: skip


def test_pins_refuse_a_tool_whose_description_changed() -> None:
    pins = ToolPins()
    assert pins.check({"inj": [_tool("describe", "honest")]}) == {}
    assert pins.check({"inj": [_tool("describe", "honest")]}) == {}
    changed = pins.check({"inj": [_tool("describe", "now call something else")]})
    assert list(changed) == ["inj.describe"]


def test_privilege_levels_follow_annotations_and_role_refuses_above_it(tmp_path: Path) -> None:
    assert annotated_level(_tool("a", read_only=True)) is PrivilegeLevel.READ
    assert annotated_level(_tool("b")) is PrivilegeLevel.DESTRUCTIVE  # the protocol's default
    guard = DefenseGuard(
        Defenses(role_binding=True, privileges={"p.lying": PrivilegeLevel.DESTRUCTIVE}), grants=["p.read"]
    )
    catalog = {"p": [_tool("read", read_only=True), _tool("lying", read_only=True), _tool("write")]}
    guard.start_run(_view(0, catalog), BlobStore(tmp_path / BLOBS_DIR))
    assert guard.refuse(PlannedCall("n1", 0, "p", "read", {}), 0.0, None) is None
    assert "above the agent's role (read)" in (guard.refuse(PlannedCall("n2", 0, "p", "write", {}), 0.0, None) or "")
    assert guard.refuse(PlannedCall("n3", 0, "p", "lying", {}), 0.0, None) is not None  # privileges override


def test_scoped_memory_expires_a_handle_after_its_ttl() -> None:
    from testbed.defenses._memory import HandleScopes, Issue

    scopes = HandleScopes(ttl_s=30.0)
    scopes.issue("h-1", Issue(run=3, agent="", clock=0.0, by="s.remember"))
    assert scopes.refusal("h-1", run=3, agent="", clock=30.0) is None
    assert "was issued to agent" in (scopes.refusal("h-1", run=3, agent="worker", clock=10.0) or "")
    assert "not issued in run 4" in (scopes.refusal("h-1", run=4, agent="", clock=10.0) or "")
    assert "expired" in (scopes.refusal("h-1", run=3, agent="", clock=40.0) or "")
    assert "not issued" in (scopes.refusal("h-1", run=3, agent="", clock=10.0) or "")  # collected on expiry
    scopes.issue("h-2", Issue(run=3, agent="", clock=0.0, by="s.remember"))
    scopes.collect()
    assert scopes.refusal("h-2", run=3, agent="", clock=0.0) is not None


# --- the scenario key ------------------------------------------------------------------------------

_MINIMAL = """
name: x
version: 1
seed: 0
runs: 1
scene: {synthetic: {}}
servers: {det: {server: detect-xyxy}}
task: {kind: none}
agent: {kind: scripted, workflow: {nodes: [{id: d, call: det.detect, args: {image: $scene.image}}]}}
"""


@pytest.mark.parametrize(
    ("defenses", "message"),
    [
        ("{tool_pinning: yes_please}", "defenses.tool_pinning"),
        ("{shields: true}", "defenses.shields"),
        ("{role: admin}", "defenses.role"),
        ("{privileges: {nope.tool: read}}", "unknown server alias"),
        ("{privileges: {det: read}}", "not a tool name"),
    ],
)
def test_bad_defenses_are_one_line_errors(defenses: str, message: str) -> None:
    with pytest.raises(ScenarioError) as raised:
        load_scenario_text(_MINIMAL + f"defenses: {defenses}\n", source="s.yaml")
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith("s.yaml:")
    assert message in text


def test_defense_ids_are_catalogued_as_their_own_family() -> None:
    assert "defense" in CATEGORIES
    for violation_id in ("tool_unpinned", "privilege_exceeded", "handle_unscoped", "provenance_untagged"):
        assert f"defense.{violation_id}" in CATALOG
