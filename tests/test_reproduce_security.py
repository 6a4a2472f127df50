"""``testbed reproduce security``: the attack table (utility, utility under attack, attack success, share
flagged, Wilson intervals) from recorded cells, table B over the population's security subset beside the
paper's figures, resumable and seeded; and the CLI over it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from testbed._errors import TestbedError
from testbed.population import load_population
from testbed.reproduce import Calibration, Row, SecurityResult, reproduce_security
from testbed.reproduce._security_suite import ATTACKS_DIR

SUITE = ("remote_code_execution.yaml", "prompt_injection.yaml")


@pytest.fixture(scope="module")
def small_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("suite")
    for name in SUITE:
        shutil.copy(ATTACKS_DIR / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def reproduced(
    small_suite: Path, tmp_path_factory: pytest.TempPathFactory, tiny_calibration: Calibration
) -> tuple[Path, SecurityResult]:
    out = tmp_path_factory.mktemp("security") / "out"
    result = reproduce_security(
        out, quick=True, seed=3, suite_dir=small_suite, agents=("scripted",), calibration=tiny_calibration
    )
    return out, result


def _row(result: SecurityResult, name: str) -> Row:
    return next(row for row in result.rows if row.row == name)


@pytest.mark.slow
def test_the_attack_table_holds_utility_attack_success_and_flagged_share_per_vector_and_agent(
    reproduced: tuple[Path, SecurityResult],
) -> None:
    _, result = reproduced

    rce = "remote_code_execution / scripted"
    assert (_row(result, f"{rce}: utility").count, _row(result, f"{rce}: utility").total) == (2, 2)
    assert (_row(result, f"{rce}: attack success").count, _row(result, f"{rce}: attack success").total) == (2, 2)
    assert _row(result, f"{rce}: attacks flagged").total == 2
    injection = _row(result, "prompt_injection / scripted: attack success")
    assert (injection.count, injection.total) == (0, 2)  # the ground-truth agent never follows an injection
    assert injection.value is not None
    assert injection.value.high > 50  # Wilson: 0/2 is no proof of safety
    assert _row(result, "containment: canaries unchanged").recovered == "yes"
    assert result.failed == []


@pytest.mark.slow
def test_table_b_is_measured_over_the_security_subset_beside_the_papers_figures(
    reproduced: tuple[Path, SecurityResult],
) -> None:
    out, result = reproduced
    table_b = [row for row in result.rows if row.table == "B security"]

    assert {row.row for row in table_b} == {"perm", "untyped connections", "memory warnings"}
    assert all(row.marking == "output" and row.paper is not None for row in table_b)
    assert all("security-subset" in row.note for row in table_b)
    population = load_population(out / "population" / "population.yaml")
    subset = [member for member in population.members if member.security_subset]
    perm = next(row for row in table_b if row.row == "perm")
    assert (perm.count, perm.total) == (sum(member.drawn.bridging for member in subset), len(subset))
    assert perm.count  # the seed draws bridging servers into the subset: the figure is measured, not empty


@pytest.mark.slow
def test_the_outputs_are_written_and_a_rerun_resumes_without_recording_again(
    reproduced: tuple[Path, SecurityResult], small_suite: Path, tiny_calibration: Calibration
) -> None:
    out, result = reproduced
    log = out / "attacks" / "attack_remote_code_execution" / "scripted" / "attack" / "events.jsonl"
    before = log.read_bytes()

    again = reproduce_security(
        out, quick=True, seed=3, suite_dir=small_suite, agents=("scripted",), calibration=tiny_calibration
    )

    assert {"tables.csv", "tables.parquet", "attack_table.md", "report.html"} <= {path.name for path in result.files}
    assert "| remote_code_execution | scripted |" in (out / "attack_table.md").read_text(encoding="utf-8")
    assert log.read_bytes() == before
    assert [row.count for row in again.rows] == [row.count for row in result.rows]


@pytest.mark.slow
def test_an_output_directory_of_another_seed_is_refused_in_one_line(
    reproduced: tuple[Path, SecurityResult], small_suite: Path, tiny_calibration: Calibration
) -> None:
    out, _ = reproduced

    with pytest.raises(TestbedError, match="choose another --out"):
        reproduce_security(
            out, quick=True, seed=4, suite_dir=small_suite, agents=("scripted",), calibration=tiny_calibration
        )


def test_the_cli_prints_the_table_and_exits_non_zero_when_a_check_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from testbed.cli import _reproduce as cli
    from testbed.cli import main

    broken = Row("E attacks", "x / scripted / attack: canaries", "output", "files", 1, None, None, recovered="NO")
    calls: list[tuple[Path, bool, int]] = []

    def fake(
        out_dir: Path, *, quick: bool, seed: int, progress: object = None, calibration_runs: int | None = None
    ) -> SecurityResult:
        calls.append((out_dir, quick, seed))
        return SecurityResult(rows=[broken], files=[out_dir / "tables.csv"], failed=[broken])

    monkeypatch.setattr(cli, "reproduce_security", fake)
    result = CliRunner().invoke(main, ["reproduce", "security", "--quick", "--seed", "7", "--out", str(tmp_path)])

    assert calls == [(tmp_path, True, 7)]
    assert result.exit_code != 0
    assert "canaries" in result.output
    assert "1 check(s) failed" in result.output
