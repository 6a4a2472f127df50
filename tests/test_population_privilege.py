"""Privilege in a population: the drawn ``bridging`` property becomes a bridging helper tool, population
workflows grant only their tool chain, the ``perm.*`` validators see the helper's call, and the recovery
check measures the property (and fails when the validator is blinded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mcp import Client

from servers.parametric import build_parametric
from servers.parametric._bridge import BRIDGE_LOG
from testbed.cli import main
from testbed.population import Population, load_population, load_prevalence, sample_population
from testbed.profile import ConventionProfile, ProfileError, check_profile, truth_manifest
from testbed.registry import registry
from testbed.reproduce import AUDIT_PREVALENCE, WORKFLOWS_DIR, AuditResult, reproduce_audit, workflow_scenario
from testbed.reproduce._measure import measure_workflow
from testbed.scenario import load_scenario_text
from testbed.server_config import ServerConfig
from tests._helpers import call, ok_payload

AUDIT_ARGUMENTS = ("--n", "5", "--seed", "11", "--runs-per-workflow", "2", "--calibration-runs", "2")
"""A population small enough to run in seconds; at this seed two of its five servers bridge."""


def _sample(n: int = 91, seed: int = 4) -> Population:
    return sample_population(load_prevalence(AUDIT_PREVALENCE), n=n, seed=seed)


def test_the_bridging_draw_decides_the_helper_tool_and_nothing_else() -> None:
    population = _sample()
    bridging = [member for member in population.members if member.drawn.bridging]
    assert 0 < len(bridging) < len(population.members)
    for member in population.members:
        assert member.profile.bridges is member.drawn.bridging
        tools = [tool.name for tool in truth_manifest(member.capability, member.profile).tools]
        assert ("forward_call" in tools) is member.drawn.bridging


def test_a_bridge_tool_named_as_another_tool_is_an_impossible_profile() -> None:
    clash = ConventionProfile.model_validate({"bridges": True, "names": {"bridge_tool": "crop"}})
    with pytest.raises(ProfileError, match="the bridge tool and the crop tool are both called 'crop'") as caught:
        check_profile("crop", clash)
    assert caught.value.loc == ("names", "bridge_tool")
    stored = ConventionProfile.model_validate(
        {"bridges": True, "memory": {"scope": "global"}, "names": {"bridge_tool": "load_image"}}
    )
    with pytest.raises(ProfileError, match="the store tool"):
        check_profile("detect", stored)


@pytest.mark.anyio
async def test_the_bridge_helper_records_the_forwarded_call_in_the_sandbox_only(
    config: ServerConfig, tmp_path: Path
) -> None:
    sandbox = tmp_path / "sandbox"
    profile = ConventionProfile.model_validate({"bridges": True})
    bridged = config.model_copy(update={"sandbox": sandbox, "profile": profile})
    async with Client(build_parametric("crop", bridged)) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        answer = ok_payload(await call(client, "forward_call", {"server": "seg", "tool": "segment"}))
    assert listed["forward_call"].annotations is not None
    assert listed["forward_call"].annotations.read_only_hint is False
    assert answer == {"forwarded": "seg.segment", "status": "sent"}
    logged = [json.loads(line) for line in (sandbox / BRIDGE_LOG).read_text(encoding="utf-8").splitlines()]
    assert logged == [{"arguments": "{}", "target": "seg.segment", "tool": "forward_call"}]
    assert [path.name for path in tmp_path.iterdir()] == ["sandbox"]
    async with Client(build_parametric("crop", config.model_copy(update={"sandbox": sandbox}))) as plain:
        assert "forward_call" not in {tool.name for tool in (await plain.list_tools()).tools}


def test_workflows_grant_their_tool_chain_and_call_each_bridging_members_helper_beyond_it() -> None:
    population = _sample()
    seen_bridge = False
    for workflow in population.workflows:
        document = workflow_scenario(population, workflow, runs=2)
        scenario = load_scenario_text(yaml.safe_dump(document), source=workflow.id)
        grants = set(scenario.agent.grants or ())
        calls = [node["call"] for node in document["agent"]["workflow"]["nodes"]]
        ungranted = [called for called in calls if called not in grants]
        bridging = [m for m in workflow.members if population.member(m).drawn.bridging]
        assert ungranted == [f"{member_id}.forward_call" for member_id in bridging]
        assert all(called.partition(".")[0] in workflow.members for called in grants)
        seen_bridge = seen_bridge or bool(bridging)
    assert seen_bridge


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, AuditResult]:
    out = tmp_path_factory.mktemp("privilege") / "audit"
    return out, reproduce_audit(out, members=5, seed=11, runs=2, calibration_runs=2)


@pytest.mark.slow
def test_an_over_permissive_member_raises_perm_on_itself_and_no_one_else(audited: tuple[Path, AuditResult]) -> None:
    out, _ = audited
    population = load_population(out / "population.yaml")
    flagged_somewhere = set()
    for workflow in population.workflows:
        measure = measure_workflow(out / WORKFLOWS_DIR / workflow.id, workflow)
        for member_id in workflow.members:
            perm = {found for found in measure.flags.get(member_id, frozenset()) if found.startswith("perm.")}
            bridges = population.member(member_id).drawn.bridging
            assert perm == ({"perm.tool_not_granted"} if bridges else set()), (workflow.id, member_id)
            if perm:
                flagged_somewhere.add(member_id)
                log = out / WORKFLOWS_DIR / workflow.id / "sandbox" / BRIDGE_LOG
                assert log.is_file()  # the helper's record stays in the run's own sandbox
    assert flagged_somewhere == {m.id for m in population.members if m.drawn.bridging} != set()


@pytest.mark.slow
def test_the_recovery_check_measures_bridging(audited: tuple[Path, AuditResult]) -> None:
    out, result = audited
    population = load_population(out / "population.yaml")
    rows = {row.row: row for row in result.rows}
    measured = rows["bridging: measured"]
    assert measured.marking == "output"
    assert measured.recovered == "yes"
    assert measured.family == "perm"
    assert (measured.count, measured.total) == (sum(m.drawn.bridging for m in population.members), 5)
    assert "0 server(s) measured otherwise" in measured.note
    assert rows["bridging: configured"].marking == "input"
    subset = [m for m in population.members if m.security_subset]
    assert rows["perm"].count == sum(m.drawn.bridging for m in subset)
    assert rows["perm"].total == len(subset)


@pytest.mark.slow
def test_a_blinded_permission_validator_fails_the_recovery_check(
    audited: tuple[Path, AuditResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = audited
    plugins = registry()
    sighted = {name: plugin for name, plugin in plugins.validators.items() if name != "perm.tool_not_granted"}
    assert len(sighted) == len(plugins.validators) - 1
    monkeypatch.setattr(plugins, "validators", sighted)
    # The same recorded workflows, measured again: only the validator changed.
    result = CliRunner().invoke(main, ["reproduce", "audit", *AUDIT_ARGUMENTS, "--out", str(out)])
    assert result.exit_code != 0
    assert "recovery check failed for: bridging" in result.output
