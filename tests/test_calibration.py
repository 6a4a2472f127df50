"""The validators' calibration beside their results: counts, Wilson bounds, and ``check --accuracy --format``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from testbed.check import (
    CALIBRATION_FIELDS,
    AccuracyRow,
    AccuracyTable,
    calibration_records,
    hits_needed,
    meets_recall_goal,
)
from testbed.cli._check import check
from testbed.metrics import summarize
from testbed.report import calibration_cells, calibration_html, proportion_text, write_report
from testbed.report._calibration import calibration_rich
from testbed.report._terminal import NON_TERMINAL_WIDTH
from testbed.validators import ValidationResult

V1 = Path(__file__).resolve().parents[1] / "scenarios" / "v1"
Z95 = 1.959963984540054
"""The two-sided 95 % normal quantile."""


def accuracy_table(detected: int, applied: int, false_flags: int, clean: int) -> AccuracyTable:
    row = AccuracyRow(
        kind="rename_field",
        violation_id="schema.structured_mismatch",
        applied_runs=applied,
        detected_runs=detected,
        clean_runs=clean,
        false_positive_runs=false_flags,
        missed=tuple(range(applied - detected)),
    )
    return AccuracyTable(scenario="faults", runs=applied + clean, probability=0.5, rows=(row,))


def test_wilson_bounds_of_a_perfect_row_match_the_closed_form() -> None:
    # With k = n the Wilson lower bound is n / (n + z²); with k = 0 the upper bound is z² / (n + z²).
    (record,) = calibration_records([accuracy_table(detected=384, applied=384, false_flags=0, clean=416)])

    assert (record["detected_runs"], record["applied_runs"]) == (384, 384)
    assert (record["false_positive_runs"], record["clean_runs"]) == (0, 416)
    assert record["recall"] == 1.0
    assert record["recall_low"] == pytest.approx(384 / (384 + Z95**2), abs=1e-12)
    assert record["false_positive_high"] == pytest.approx(Z95**2 / (416 + Z95**2), abs=1e-12)
    assert record["false_positive_low"] == 0.0
    assert record["meets_recall_goal"] is True


def test_the_upper_bound_of_no_false_flag_in_384_runs_is_the_known_value() -> None:
    row = accuracy_table(detected=10, applied=10, false_flags=0, clean=384).rows[0]
    interval = row.false_positive_interval()

    assert interval is not None
    assert interval.high == pytest.approx(0.0099047, abs=1e-7)


def test_the_goal_needs_381_hits_without_a_miss() -> None:
    assert hits_needed(0.99) == 381
    assert meets_recall_goal(accuracy_table(381, 381, 0, 1).rows[0]) is True
    assert meets_recall_goal(accuracy_table(380, 380, 0, 1).rows[0]) is False
    assert meets_recall_goal(accuracy_table(0, 0, 0, 5).rows[0]) is None


def test_a_single_miss_changes_the_printed_figures() -> None:
    perfect = accuracy_table(detected=384, applied=384, false_flags=0, clean=416)
    one_miss = accuracy_table(detected=383, applied=384, false_flags=0, clean=416)

    perfect_cells = calibration_cells(perfect.rows[0], perfect.confidence)
    miss_cells = calibration_cells(one_miss.rows[0], one_miss.confidence)

    assert perfect_cells[2] == "384/384 = 1.000 [0.990–1.000]"
    assert miss_cells[2].startswith("383/384 = 0.997 [")
    assert perfect_cells[4] == "yes"
    assert miss_cells[4] == "no"


def test_a_rate_inside_zero_and_one_is_never_printed_as_zero_or_one() -> None:
    table = accuracy_table(detected=9999, applied=10000, false_flags=1, clean=10000)
    interval = table.rows[0].recall_interval()

    assert proportion_text(9999, 10000, interval).startswith("9999/10000 = 0.9999 [")
    assert proportion_text(1, 10000, table.rows[0].false_positive_interval()).startswith("1/10000 = 0.0001 [")


def test_printed_bounds_are_rounded_outward() -> None:
    # 380/380 has a lower bound of 0.98999...: shown as 0.989, never as a goal-meeting 0.990.
    table = accuracy_table(detected=380, applied=380, false_flags=0, clean=1)

    assert "[0.989–1.000]" in calibration_cells(table.rows[0], table.confidence)[2]


def test_a_fault_that_never_applied_shows_counts_without_a_rate() -> None:
    table = accuracy_table(detected=0, applied=0, false_flags=0, clean=5)
    (record,) = calibration_records([table])

    assert calibration_cells(table.rows[0], table.confidence)[2] == "0/0 (n/a)"
    assert (record["recall"], record["recall_low"], record["meets_recall_goal"]) == ("", "", "")


def test_the_html_table_holds_every_count_and_bound() -> None:
    table = accuracy_table(detected=383, applied=384, false_flags=2, clean=416)

    page = calibration_html([table])

    assert "<h2>Validator calibration</h2>" in page
    assert "383/384 = 0.997" in page
    assert "2/416 = 0.005" in page
    assert page.count("<tr>") == 2, "one header row, one data row"


def test_the_rich_table_off_a_terminal_is_not_cut() -> None:
    table = accuracy_table(detected=383, applied=384, false_flags=2, clean=416)
    out = io.StringIO()

    Console(file=out, width=NON_TERMINAL_WIDTH).print(calibration_rich(table))

    text = out.getvalue()
    assert "…" not in text
    for cell in calibration_cells(table.rows[0], table.confidence):
        assert cell in text


def one_fault_scenario(tmp_path: Path) -> Path:
    data = yaml.safe_load((V1 / "faults.yaml").read_text())
    data["faults"] = [fault for fault in data["faults"] if fault["kind"] == "rename_field"]
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_check_accuracy_prints_json_and_csv_with_counts_and_bounds(tmp_path: Path) -> None:
    path = one_fault_scenario(tmp_path)
    base = [str(path), "--runs", "2", "--accuracy", "--accuracy-runs", "4"]

    as_json = CliRunner().invoke(check, [*base, "--format", "json"])
    as_csv = CliRunner().invoke(check, [*base, "--format", "csv"])

    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    (row,) = document["rows"]
    assert set(row) == set(CALIBRATION_FIELDS)
    assert (row["fault_kind"], row["violation_id"], row["runs"]) == ("rename_field", "schema.structured_mismatch", 4)
    assert row["applied_runs"] + row["clean_runs"] == 4
    assert row["detected_runs"] == row["applied_runs"], "every applied rename is detected"
    assert 0.0 < row["recall_low"] < row["recall_high"] == 1.0
    assert document["hits_needed_for_goal"] == 381
    assert as_csv.exit_code == 0, as_csv.output
    (csv_row,) = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert float(csv_row["recall_low"]) == pytest.approx(row["recall_low"])
    assert csv_row["false_positive_high"] != ""


@pytest.mark.slow
def test_check_accuracy_table_off_a_terminal_is_not_truncated(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        check, [str(one_fault_scenario(tmp_path)), "--runs", "2", "--accuracy", "--accuracy-runs", "2"]
    )

    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    assert "schema.structured_mismatch" in result.stdout
    assert "validator calibration on faults" in result.stdout


def test_format_without_accuracy_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(check, [str(tmp_path / "any.yaml"), "--format", "json"])

    assert result.exit_code == 2
    assert "--format json formats the --accuracy calibration: add --accuracy" in result.output


def test_a_report_embeds_the_calibration_beside_its_rates(tmp_path: Path) -> None:
    summary = summarize(ValidationResult(violations=(), failures=(), runs=()))
    table = accuracy_table(detected=383, applied=384, false_flags=0, clean=416)

    with_table = write_report(summary, tmp_path / "with", calibration=[table]).html.read_text(encoding="utf-8")
    without = write_report(summary, tmp_path / "without").html.read_text(encoding="utf-8")

    assert "Validator calibration" in with_table
    assert "383/384 = 0.997" in with_table
    assert "Validator calibration" not in without
