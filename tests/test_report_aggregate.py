"""``testbed report DIR...``: several experiments in one report, distinct servers counted once, bad input refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from testbed.cli import main
from testbed.cli._report import report
from testbed.events import EVENTS_FILE
from testbed.metrics import OVERALL, server_identity, summarize_experiments
from testbed.validators import validate_experiment

RUNS = 2


@pytest.fixture(scope="module")
def pair(recorded_v1: Callable[..., Path]) -> tuple[Path, Path]:
    """Two experiments sharing two servers (detect-xyxy, crop-xywh), one adding a third (detect-yxyx)."""
    return recorded_v1("detect_crop_incompatible", RUNS), recorded_v1("fanout", RUNS)


def flagged_names(directory: Path, violation_id: str) -> set[str]:
    """The registry names of the servers an ID is attributed to in one experiment, read from its violations."""
    result = validate_experiment(directory)
    names = {server.alias: server.server for server in result.runs[0].header.servers}
    return {names[v.server] for v in result.violations if v.id == violation_id and v.server in names}


def report_json(*args: str, per_id: int = 0) -> dict[str, Any]:
    """The JSON a report prints; with evidence (``per_id`` > 0) only on private copies: figures go into their blobs."""
    result = CliRunner().invoke(report, [*args, "--format", "json", "--per-id", str(per_id)])
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_servers_flagged_counts_every_distinct_server_once_across_experiments(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = pair

    document = report_json(str(first), str(second), "--out", str(tmp_path / "out"))

    assert document["experiments"] == [str(first), str(second)]
    assert document["runs"] == 2 * RUNS
    overall = [row for row in document["rows"] if row["group_kind"] == "all"]
    assert overall, "both experiments have violations"
    for row in overall:
        assert row["servers_total"] == 3, "detect-xyxy and crop-xywh are in both experiments, detect-yxyx in one"
        flagged = flagged_names(first, row["id"]) | flagged_names(second, row["id"])
        assert row["servers_flagged"] == len(flagged), row["id"]
    assert (tmp_path / "out" / "report.html").read_text(encoding="utf-8").count("2 experiments") >= 1


def test_aggregated_rates_add_up_the_runs_and_occurrences_of_each_experiment(pair: tuple[Path, Path]) -> None:
    results = [(str(path), validate_experiment(path)) for path in pair]

    together = summarize_experiments(results)

    for row in together.overall():
        alone = [next((r for r in summarize_experiments([one]).overall() if r.id == row.id), None) for one in results]
        assert row.runs == 2 * RUNS
        assert row.occurrences == sum(r.occurrences for r in alone if r is not None)
        assert row.runs_affected == sum(r.runs_affected for r in alone if r is not None)
        assert row.executions == sum(summarize_experiments([one]).executions for one in results)
    assert together.experiment_id is None
    assert together.experiments == tuple(path for path, _ in results)


def test_the_same_server_configured_otherwise_is_another_server(pair: tuple[Path, Path]) -> None:
    record = validate_experiment(pair[0]).runs[0]
    scenario = record.header.scenario

    def with_det(**changes: Any) -> Any:
        servers = {**scenario["servers"], "det": {**scenario["servers"]["det"], **changes}}
        header = record.header.model_copy(update={"scenario": {**scenario, "servers": servers}})
        return dataclasses.replace(record, header=header)

    moved, profiled = with_det(transport="stdio"), with_det(profile={"boxes": "cxcywh"})

    assert server_identity(moved, "det") == server_identity(record, "det"), "transport is not identity"
    assert server_identity(profiled, "det") != server_identity(record, "det")
    assert server_identity(record, "det").startswith("detect-xyxy ")


def test_a_folder_of_experiments_is_reported_together_into_its_report_folder(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    root = tmp_path / "population"
    for index, path in enumerate(pair):
        shutil.copytree(path, root / f"w{index}" / "exp")

    document = report_json(str(root), per_id=1)

    assert [Path(p).parent.name for p in document["experiments"]] == ["w0", "w1"]
    assert (root / "report" / "violations.csv").is_file()
    page = (root / "report" / "report.html").read_text(encoding="utf-8")
    assert f"of {root / 'w0' / 'exp'}" in page, "evidence names the experiment its run belongs to"


def test_a_single_experiment_reports_as_before(pair: tuple[Path, Path], tmp_path: Path) -> None:
    document = report_json(str(pair[0]), "--out", str(tmp_path / "out"))

    assert document["experiments"] == []
    assert document["experiment_id"] is not None
    assert all(row["servers_total"] == 2 for row in document["rows"] if row["group_kind"] == "all")


def refused(*args: str) -> str:
    result = CliRunner().invoke(main, ["report", *args, "--per-id", "0"])
    assert result.exit_code != 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_path_that_is_not_an_experiment_is_refused_by_name(pair: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    assert f"{tmp_path / 'missing'}: no such experiment directory" in refused(
        str(pair[0]), str(tmp_path / "missing"), "--out", str(tmp_path / "o")
    )
    assert f"{tmp_path / 'empty'}: not an experiment directory" in refused(
        str(pair[0]), str(tmp_path / "empty"), "--out", str(tmp_path / "o")
    )


def test_a_path_given_twice_is_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(pair[0], root / "a")

    assert "given twice" in refused(str(pair[0]), str(pair[0]), "--out", str(tmp_path / "o"))
    assert f"{root / 'a'}: given twice (also as {root / 'a'})" in refused(
        str(root / "a"), str(root), "--out", str(tmp_path / "o")
    )


def test_a_copy_of_the_same_experiment_is_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    shutil.copytree(pair[0], tmp_path / "copy")

    line = refused(str(pair[0]), str(tmp_path / "copy"), "--out", str(tmp_path / "o"))

    assert line.startswith(f"Error: {tmp_path / 'copy'}: the same experiment as {pair[0]}")


def test_experiments_of_another_testbed_version_are_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(pair[1], other)
    lines = (other / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    header["versions"]["mcp-vision-testbed"] = "0.0.1"
    (other / EVENTS_FILE).write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n", encoding="utf-8")

    line = refused(str(pair[0]), str(other), "--out", str(tmp_path / "o"))

    assert line.startswith(f"Error: {other}: recorded by mcp-vision-testbed 0.0.1")


def test_several_experiments_need_an_out_folder(pair: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(report, [str(pair[0]), str(pair[1])])

    assert result.exit_code == 2
    assert "several RUN_DIRs: give --out for the report files" in result.output


def test_overall_row_is_first_for_each_id(pair: tuple[Path, Path]) -> None:
    together = summarize_experiments([(str(path), validate_experiment(path)) for path in pair])

    for violation_id in together.ids:
        rows = [row for row in together.rows if row.id == violation_id]
        assert rows[0].group == OVERALL
