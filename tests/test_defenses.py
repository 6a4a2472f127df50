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
SUITE = ROOT / "scenarios" / "security" / "attacks"
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
    name: str,
    defense: str,
    refusal: str,
    tmp_path: Path,
    *,
    unsaved: set[int],
    settings: dict[str, Any] | None = None,
    path: Path | None = None,
) -> None:
    """Record ``name`` with ``defense`` off and on (with ``settings``): on, the attack fails where it succeeded off
    (but in the runs ``unsaved``), each refusal is a defense event and a ``refusal`` violation, the task still
    passes, and the defended recording replays."""
    base = load_scenario(path or ATTACKS / f"{name}.yaml").model_copy(update={"runs": 3})
    off = _by_run(validate_experiment(_record(base, tmp_path / "off")).violations)
    defended = base.model_copy(update={"defenses": Defenses.model_validate({defense: True, **(settings or {})})})
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
def test_the_inbox_memory_named_by_an_attacker_is_reported_as_defense_handle_unscoped(tmp_path: Path) -> None:
    # Run 0 recalls its own mem-0: nothing to save there, and nothing refused.
    _check_defense_blocks_its_attack(
        "scoped_memory_inbox_memory", "scoped_memory", "defense.handle_unscoped", tmp_path, unsaved=set()
    )


@pytest.mark.slow
def test_the_inbox_thumbnail_named_by_an_attacker_is_reported_as_defense_handle_unscoped(tmp_path: Path) -> None:
    _check_defense_blocks_its_attack(
        "scoped_memory_inbox_thumbnail", "scoped_memory", "defense.handle_unscoped", tmp_path, unsaved=set()
    )


@pytest.mark.slow
def test_an_obeyed_inbox_note_is_refused_by_role_binding_once_the_inbox_is_reviewed_as_write(tmp_path: Path) -> None:
    _check_defense_blocks_its_attack(
        "role_binding_inbox_note",
        "role_binding",
        "defense.privilege_exceeded",
        tmp_path,
        unsaved=set(),
        settings={"privileges": {"inbox.open_inbox": "write"}},
    )


@pytest.mark.slow
def test_a_shell_tail_in_an_inbox_file_name_is_refused_by_provenance_tags_as_echoed_text(tmp_path: Path) -> None:
    _check_defense_blocks_its_attack(
        "remote_code_execution",
        "provenance_tags",
        "defense.provenance_untagged",
        tmp_path,
        unsaved=set(),
        path=SUITE / "remote_code_execution.yaml",
    )
    refused = [e for e in read_events(tmp_path / "on").events if isinstance(e, DefenseEvent)]
    assert {(e.tool, e.node) for e in refused} == {("convert_image", "convert")}
    assert all("is text inbox.open_inbox (inbox#0) returned, not data" in e.detail for e in refused)


@pytest.mark.slow
def test_provenance_tags_also_refuse_the_clean_twins_own_inbox_path(tmp_path: Path) -> None:
    # The cost of the defense: the user's own file name arrives as message text too, so its step is refused.
    import yaml

    from testbed.security import without_attack

    twin = without_attack(yaml.safe_load((SUITE / "remote_code_execution.yaml").read_text(encoding="utf-8")))
    twin.update(runs=2, defenses={"provenance_tags": True})
    out = _record(load_scenario_text(yaml.safe_dump(twin), source="twin.yaml"), tmp_path / "twin")
    events = read_events(out).events

    refused = [e for e in events if isinstance(e, DefenseEvent)]
    assert [(e.run, e.tool) for e in refused] == [(0, "convert_image"), (1, "convert_image")]
    assert all("; touch" not in str(e.arguments) for e in refused)  # the clean file name, refused all the same
    assert all(getattr(e, "task_passed", True) for e in events if getattr(e, "event", "") == "run_finished")


@pytest.mark.slow
def test_runtime_contracts_halt_a_coerced_width_before_it_reaches_the_server(tmp_path: Path) -> None:
    from testbed.contracts import ContractsSpec

    base = load_scenario(ATTACKS / "runtime_contracts_coerced_width.yaml").model_copy(update={"runs": 2})
    off = _by_run(validate_experiment(_record(base, tmp_path / "off")).violations)
    halted = base.model_copy(
        update={"contracts": ContractsSpec.model_validate({"policy": "halt", "rules": ["required_fields"]})}
    )
    out = _record(halted, tmp_path / "on")
    on = _by_run(validate_experiment(out).violations)

    assert all(ATTACK_SUCCEEDED in off[run] for run in (0, 1))
    assert all("contract.violation" in on[run] and ATTACK_SUCCEEDED not in on[run] for run in (0, 1))
    resized = [e for e in read_events(out).events if isinstance(e, CallEvent) and e.tool == "resize"]
    assert all(e.outcome is CallOutcomeKind.SKIPPED for e in resized)  # the coerced width was never sent
    assert anyio.run(lambda: replay_experiment(out)).divergence is None


@pytest.mark.slow
def test_defenses_experiment_quick_shows_each_defense_cutting_attack_success(tmp_path: Path) -> None:
    import pandas as pd

    design = ROOT / "scenarios" / "experiments" / "defenses.yaml"
    result = CliRunner().invoke(main, ["experiment", str(design), "--quick", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    contrasts = pd.read_csv(tmp_path / "out" / "contrasts.csv")
    attack = contrasts[contrasts["outcome"] == "security"].set_index("contrast")
    assert set(attack.index) == {
        "role binding",
        "tool pinning",
        "scoped memory",
        "provenance tags",
        "runtime contracts",
    }
    # Undefended, the attack succeeds in every run, but scoped memory's run 0, whose mem-0 is its own.
    assert (attack.drop("scoped memory")["baseline"] == 1).all()
    assert attack.loc["scoped memory", "baseline"] == 0.8
    assert attack.loc["tool pinning", "treatment"] <= 0.2  # pinning trusts run 0's listing: 1 run of 5
    assert (attack.drop("tool pinning")["treatment"] == 0).all()
    assert (attack["high"] < 0).all()  # the paired interval excludes no effect
    task = contrasts[contrasts["outcome"] == "task_success"].set_index("contrast")
    assert (task.drop("runtime contracts")["difference"] == 0).all()  # the switches cost the task nothing


@pytest.mark.parametrize("name", ["defenses", "defenses_vectors"])
def test_each_defense_design_compares_one_defense_on_against_all_off_on_a_scenario_of_its_vector(name: str) -> None:
    from testbed.experiment import load_design, plan_experiment

    plan = plan_experiment(load_design(ROOT / "scenarios" / "experiments" / f"{name}.yaml"))
    cells = {cell.id: cell for cell in plan.cells}
    for cell in plan.cells:  # the defense factor sets the switches, the contracts factor the contracts key
        assert len(cell.scenario.defenses.enabled) == (cell.level("defense") != "off")
        assert (cell.scenario.contracts is not None) == (cell.level("contracts") == "halt")
    assert plan.contrasts
    for contrast in plan.contrasts:
        [(treatment_id, baseline_id)] = contrast.strata
        treatment, baseline = cells[treatment_id], cells[baseline_id]
        assert baseline.level("defense") == baseline.level("contracts") == "off"
        assert treatment.level("scenario") == baseline.level("scenario")
        assert (treatment.level("defense") != "off") + (treatment.level("contracts") != "off") == 1
        attack = treatment.scenario.attack
        assert attack is not None
        if name == "defenses_vectors":  # each contrast names the vector its scenario attacks
            assert attack.vector.replace("_", " ") in contrast.name.replace("-", " ")


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


def test_provenance_tags_refuse_text_a_tool_returned_in_a_data_argument_and_pass_declared_data() -> None:
    from testbed.defenses._provenance import ProvenanceTags, content_data

    tags = ProvenanceTags()
    tags.start("SCENE", "/x/scene.png")
    tags.tag_data({"handle": "h-1"}, "store.save (save#0)")
    tags.tag_data(list(content_data([{"type": "image", "data": "CROP", "mimeType": "image/png"}])), "crop.crop")
    tags.tag_text({"message": {"file": "a.png; touch CANARY", "handle": "h-1"}}, "inbox.open_inbox (inbox#0)")

    for value in ("SCENE", "/x/scene.png", "h-1", "CROP", ["h-1", "SCENE"]):
        assert tags.refusal("image", value, run=0) is None
    echoed = tags.refusal("filename", "a.png; touch CANARY", run=0) or ""
    assert "is text inbox.open_inbox (inbox#0) returned, not data it declares" in echoed
    assert "has no provenance in run 0" in (tags.refusal("path", "../outside/CANARY", run=0) or "")
    tags.start("NEXT")
    assert tags.refusal("handle", "h-1", run=1) is not None  # a run's tags die with it


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
