"""The self-check: scenario ``expect`` lists, fault detectability, accuracy scoring, and ``testbed check``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from testbed._errors import TestbedError
from testbed.check import (
    RunObservation,
    check_faults,
    check_suite,
    measure_accuracy,
    scenario_paths,
    scenes_kept_in_the_inference_cache,
    score,
    with_clean_runs_from,
)
from testbed.cli._check import check
from testbed.scenario import load_scenario
from testbed.vision import shared_inference_cache

V1 = Path(__file__).resolve().parents[1] / "scenarios" / "v1"


def scenario_file(tmp_path: Path, source: str, *, expect: list[str]) -> Path:
    data = yaml.safe_load((V1 / source).read_text())
    data["expect"] = expect
    path = tmp_path / source
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_scenario_whose_expect_matches_its_fault_free_runs_passes(tmp_path: Path) -> None:
    report = check_suite([scenario_file(tmp_path, "detect_crop.yaml", expect=[])], runs=2)

    assert report.ok
    assert [s.name for s in report.scenarios] == ["detect_crop"]
    assert report.scenarios[0].found == frozenset()


def test_a_wrong_expect_fails_naming_the_missing_and_unexpected_ids(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "detect_crop_incompatible.yaml", expect=["mask.size_mismatch"])

    report = check_suite([path], runs=2)

    assert not report.ok
    (result,) = report.scenarios
    assert result.missing == {"mask.size_mismatch"}
    assert "coords.mismatch" in result.unexpected


def test_a_configured_fault_injected_alone_is_detected_in_its_run() -> None:
    scenario = load_scenario(V1 / "faults.yaml")
    only = tuple(f for f in scenario.faults if f.kind == "rename_field")
    checks = check_faults(scenario.model_copy(update={"faults": only}), runs=2)

    assert [(c.kind, c.applied, c.ok) for c in checks] == [("rename_field", 2, True)]


def test_recall_counts_applied_runs_and_false_positives_count_the_rest() -> None:
    observations = [
        RunObservation(run=0, applied=True, new_ids=frozenset({"proto.timeout"})),
        RunObservation(run=1, applied=True, new_ids=frozenset()),
        RunObservation(run=2, applied=False, new_ids=frozenset({"proto.timeout"})),
        RunObservation(run=3, applied=False, new_ids=frozenset({"coords.mismatch"})),
        RunObservation(run=4, applied=False, new_ids=frozenset()),
        RunObservation(run=5, applied=False, new_ids=frozenset()),
    ]

    (row,) = score("timeout", ["proto.timeout"], observations)

    assert (row.applied_runs, row.detected_runs, row.recall, row.missed) == (2, 1, 0.5, (1,))
    assert (row.clean_runs, row.false_positive_runs, row.false_positive_rate) == (4, 1, 0.25)


def test_a_fault_that_never_applied_has_no_recall() -> None:
    (row,) = score("drop", ["proto.timeout"], [RunObservation(run=0, applied=False, new_ids=frozenset())])

    assert row.recall is None
    assert row.false_positive_rate == 0.0


def test_a_folder_expands_to_its_yaml_files_in_order(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yaml", "notes.txt"):
        (tmp_path / name).write_text("")

    assert [p.name for p in scenario_paths([tmp_path])] == ["a.yaml", "b.yaml"]


def test_check_command_prints_ok_and_exits_zero_when_expect_matches(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "detect_crop.yaml", expect=[])

    result = CliRunner().invoke(check, [str(path), "--runs", "1"])

    assert result.exit_code == 0, result.output
    assert "detect_crop: OK" in result.output


def test_check_command_exits_non_zero_naming_the_unexpected_id(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "detect_crop_incompatible.yaml", expect=[])

    result = CliRunner().invoke(check, [str(path), "--runs", "1"])

    assert result.exit_code == 1
    assert "FAIL: unexpected" in result.output
    assert "coords.mismatch" in result.output
    assert "check failed: detect_crop_incompatible" in result.output


def test_check_command_reports_a_missing_path_as_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(check, [str(tmp_path / "nope.yaml")])

    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {tmp_path / 'nope.yaml'}: no such file or folder"]


def test_a_slow_call_in_the_short_baseline_does_not_hide_an_injected_timeout() -> None:
    against_long = [
        RunObservation(run=0, applied=True, new_ids=frozenset({"proto.timeout"})),
        RunObservation(run=1, applied=False, new_ids=frozenset({"proto.timeout"})),
    ]
    against_short = [
        RunObservation(run=0, applied=True, new_ids=frozenset()),
        RunObservation(run=1, applied=False, new_ids=frozenset()),
    ]

    (row,) = score("timeout", ["proto.timeout"], with_clean_runs_from(against_long, against_short))

    assert (row.recall, row.false_positive_rate) == (1.0, 0.0)


def test_while_scenes_are_kept_the_inference_cache_has_no_entry_bound_and_gets_it_back_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = shared_inference_cache()
    monkeypatch.setattr(cache, "max_entries", 4)
    with scenes_kept_in_the_inference_cache():
        with scenes_kept_in_the_inference_cache():
            assert cache.max_entries > 10**9
        assert cache.max_entries > 10**9
    assert cache.max_entries == 4

    monkeypatch.setattr(cache, "max_entries", 0)  # caching turned off stays off
    with scenes_kept_in_the_inference_cache():
        assert cache.max_entries == 0


def test_an_accuracy_measurement_computes_each_scenes_inferences_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A cache bound below one experiment's inferences (6 runs, a detection and a segmentation each), as the
    # default bound of 256 is below 200 runs': without the scenes kept, each experiment would miss every time.
    cache = shared_inference_cache()
    monkeypatch.setattr(cache, "max_entries", 4)
    before = cache.stats

    measure_accuracy(load_scenario(V1 / "faults.yaml"), ["rename_field", "mask_resolution"], 6)

    hits, misses = cache.stats.hits - before.hits, cache.stats.misses - before.misses
    assert hits + misses == 3 * 12  # the baseline's and the two kinds' experiments
    assert misses <= 12  # the baseline computes them (some may be cached from before); the kinds find them
    assert cache.max_entries == 4


def test_an_accuracy_measurement_refuses_no_workers_and_a_runner_workers_cannot_get() -> None:
    scenario = load_scenario(V1 / "faults.yaml")
    with pytest.raises(TestbedError, match="workers must be at least 1, not 0"):
        measure_accuracy(scenario, ["rename_field"], 2, workers=0)
    with pytest.raises(TestbedError, match="with 2 workers the accuracy runner must pickle"):
        measure_accuracy(scenario, ["rename_field"], 2, workers=2, runner=lambda _name, _variant: None)  # type: ignore[arg-type,return-value]


@pytest.mark.slow
def test_an_accuracy_measurement_gives_the_same_table_whatever_the_number_of_workers() -> None:
    scenario = load_scenario(V1 / "faults.yaml")
    kinds = ["truncate", "rename_field", "kill"]  # a waiting kind (short deadline and its baseline), two others
    lines: dict[int, list[str]] = {1: [], 2: []}

    tables = {
        workers: measure_accuracy(scenario, kinds, 8, workers=workers, progress=lines[workers].append)
        for workers in (2, 1)
    }

    assert tables[2] == tables[1]
    assert [(row.kind, row.applied_runs > 0, row.recall) for row in tables[1].rows] == [
        ("truncate", True, 1.0),
        ("rename_field", True, 1.0),
        ("kill", True, 1.0),
    ]
    assert len(lines[1]) == 5  # the baselines (with the scenario's deadlines and the short one) and the kinds
    assert sorted(lines[2]) == sorted(lines[1])
