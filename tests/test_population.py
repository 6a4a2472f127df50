"""Populations of parametric servers: prevalence files, sampling, population files and their one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from testbed.cli import main
from testbed.population import (
    PROPERTIES,
    Population,
    PopulationError,
    load_population,
    load_prevalence,
    sample_population,
    write_population,
)
from testbed.profile import check_profile
from testbed.protocol import MemoryScope
from testbed.reproduce import AUDIT_PREVALENCE


def _prevalence_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(AUDIT_PREVALENCE.read_text(encoding="utf-8"))
    return data


def _write(tmp_path: Path, data: Any, name: str = "file.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_shipped_prevalence_holds_the_audits_published_shares() -> None:
    prevalence = load_prevalence(AUDIT_PREVALENCE)
    assert (prevalence.population_size.value, prevalence.security_subset.value) == (91, 47)
    shares = {prop: prevalence.share(prop) for prop in PROPERTIES}
    assert shares == {
        "schema_divergence": 0.62,
        "no_output_validation": 0.89,
        "undeclared_conventions": 0.87,
        "bridging": 0.41,
        "memory_retention": 0.55,
        "declared_fallback": 0.09,
    }
    assert prevalence.orchestration_modes.shares == {
        "static": 0.37,
        "retrieval": 0.29,
        "dynamic": 0.21,
        "multi_agent": 0.13,
    }
    assert len(prevalence.box_conventions.shares) == 3
    assert len(prevalence.mask_formats.shares) == 5
    assert all(getattr(prevalence, prop).source for prop in PROPERTIES)


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d["bridging"].update(share=1.5), "bridging.share"),
        (lambda d: d["memory_retention"].update(share=-0.1), "memory_retention.share"),
        (lambda d: d.update(unexpected=1), "unexpected: unknown key"),
        (lambda d: d["schema_divergence"].update(typo=1), "schema_divergence.typo: unknown key"),
        (lambda d: d["orchestration_modes"]["shares"].update(static=0.5), "orchestration_modes.shares: shares sum to"),
        (lambda d: d["mask_formats"]["shares"].update(coco_rle=1.2), "mask_formats.shares.coco_rle"),
        (lambda d: d["population_size"].update(value=0), "population_size.value"),
        (lambda d: d["security_subset"].update(value=200), "security_subset.value: 200 exceeds"),
        (
            lambda d: d["capabilities"]["shares"].update(teleport=0.0),
            "capabilities.shares.teleport: unknown capability",
        ),
        (
            lambda d: d["box_conventions"]["shares"].update({"xyxy/furlongs": 0.0}),
            "box_conventions.shares.xyxy/furlongs",
        ),
    ],
)
def test_bad_prevalence_is_one_line_naming_file_and_field(tmp_path: Path, edit: Any, where: str) -> None:
    data = _prevalence_data()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(PopulationError) as caught:
        load_prevalence(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert where in message


def _sample(n: int = 91, seed: int = 7) -> Population:
    return sample_population(load_prevalence(AUDIT_PREVALENCE), n=n, seed=seed)


def test_sampled_profiles_are_possible_and_follow_their_drawn_properties() -> None:
    population = _sample()
    assert len(population.members) == 91
    assert sum(member.security_subset for member in population.members) == 47
    for member in population.members:
        check_profile(member.capability, member.profile)
        drawn, profile = member.drawn, member.profile
        assert profile.declares_extensions is not drawn.undeclared_conventions
        assert profile.validates_outputs is not drawn.no_output_validation
        assert (profile.memory.scope is MemoryScope.GLOBAL) is drawn.memory_retention
        assert (profile.fallback is not None) is drawn.declared_fallback
        assert (profile.schema_style.value != "full") is drawn.schema_divergence
        assert profile.bridges is drawn.bridging


def test_workflows_cover_every_member_and_chain_producers_into_consumers() -> None:
    population = _sample()
    used = {member_id for workflow in population.workflows for member_id in workflow.members}
    assert used == {member.id for member in population.members}
    shapes = {tuple(population.member(m).capability for m in w.members) for w in population.workflows}
    assert shapes == {("detect", "crop"), ("segment", "crop-mask"), ("detect", "segment", "crop-mask")}
    agents = {(w.mode, w.agent) for w in population.workflows}
    assert agents <= {("static", "scripted"), ("retrieval", "retrieval"), ("dynamic", "llm"), ("multi_agent", "multi")}


def test_realised_prevalence_approaches_the_configured_share_in_a_large_population() -> None:
    prevalence = load_prevalence(AUDIT_PREVALENCE)
    population = sample_population(prevalence, n=3000, seed=1)
    for prop in PROPERTIES:
        realised = sum(getattr(member.drawn, prop) for member in population.members) / 3000
        assert abs(realised - prevalence.share(prop)) < 0.03, prop


def test_same_seed_same_population_and_another_seed_another(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    write_population(_sample(seed=5), first)
    write_population(_sample(seed=5), second)
    assert first.read_bytes() == second.read_bytes()
    assert _sample(seed=5) != _sample(seed=6)


def test_population_file_round_trips_and_is_plain_editable_yaml(tmp_path: Path) -> None:
    population = _sample(n=20)
    path = tmp_path / "pop.yaml"
    write_population(population, path)
    assert load_population(path) == population
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["members"][0]["profile"]["declares_extensions"] = True  # a person edits a profile
    assert load_population(_write(tmp_path, data, "edited.yaml")).members[0].profile.declares_extensions


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda d: d["members"][2].update(capability="teleport"), "members[2].capability"),
        (lambda d: d["members"][2].update(capability="detect", profile={"schema_style": "content"}),
         "members[2].profile.schema_style: schema style 'content'"),
        (lambda d: d["members"][1]["profile"].update(colour="red"), "members[1].profile.colour: unknown key"),
        (lambda d: d["workflows"][0]["members"].__setitem__(0, "nobody"), "workflows[0].members[0]: names no member"),
    ],
)  # fmt: skip
def test_bad_population_is_one_line_naming_file_and_member(tmp_path: Path, edit: Any, where: str) -> None:
    population = _sample(n=12)
    data = population.document()
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(PopulationError) as caught:
        load_population(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert where in message
    if where.startswith("members["):
        index = int(where.split("[")[1].split("]")[0])
        assert f"(member {population.members[index].id!r})" in message


def test_population_sample_command_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "pop.yaml"
    result = CliRunner().invoke(main, ["population", "sample", "--n", "30", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(load_population(out).members) == 30
    assert load_population(out) == _sample(n=30, seed=3)


def test_population_sample_refuses_a_bad_prevalence_file(tmp_path: Path) -> None:
    data = _prevalence_data()
    data["bridging"]["share"] = 2
    bad = _write(tmp_path, data)
    result = CliRunner().invoke(main, ["population", "sample", "--prevalence", str(bad), "--out", str(tmp_path / "p")])
    assert result.exit_code != 0
    assert f"{bad}: bridging.share" in result.output
