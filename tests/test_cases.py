"""The paper's case studies (``scenarios/cases``, ``servers/cases``) and ``testbed reproduce cases``."""

from __future__ import annotations

import asyncio
import base64
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import servers  # noqa: F401  (registers the case servers)
from testbed._errors import TestbedError
from testbed.imaging import encode_png_base64
from testbed.orchestrator import run_experiment
from testbed.reproduce import CASES_DIR, Calibration, CaseFamily, load_case, load_cases, reproduce_cases
from testbed.reproduce._cases_measure import VariantMeasure, case_rows
from testbed.reproduce._cases_run import allocate, variant_scenario
from testbed.scenario import load_scenario_text
from testbed.validators import validate_experiment
from testbed.validators._payload import why_not_an_image
from tests._helpers import CasesCommand

# --- helpers -----------------------------------------------------------------------------------


def _case(name: str) -> CaseFamily:
    return load_case(CASES_DIR / f"{name}.yaml")


def _found(case: CaseFamily, variant: str, tmp_path: Path, *, runs: int = 2) -> dict[int, set[str]]:
    """Run one variant of a case for ``runs`` runs; the IDs found in each run."""
    directory = tmp_path / variant
    directory.mkdir(parents=True)
    text = yaml.safe_dump(variant_scenario(case, variant, runs=runs, seed=3), sort_keys=False)
    scenario = load_scenario_text(text, source=str(directory / "scenario.yaml"), base_dir=directory)
    asyncio.run(run_experiment(scenario, out_dir=directory, transport="inprocess"))
    result = validate_experiment(directory)
    assert len(result.runs) == runs
    assert not result.failures
    found: dict[int, set[str]] = {run: set() for run in range(runs)}
    for violation in result.violations:
        found[violation.run].add(violation.id)
    return found


def _small_cases(tmp_path: Path, size: int) -> Path:
    """The shipped case files with every quick size set to ``size`` (a fast in-process run)."""
    directory = tmp_path / "cases"
    directory.mkdir()
    for path in sorted(CASES_DIR.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        document["quick_size"] = size
        (directory / path.name).write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return directory


# --- case files --------------------------------------------------------------------------------


def test_the_five_cases_are_sized_as_in_the_paper() -> None:
    sizes = {case.system: (case.size, case.size_from_paper) for case in load_cases()}
    assert sizes == {
        "SUMO+YOLO": (134, True),
        "ALITA": (143, True),
        "FHIR-like": (108, True),
        "Blender-like": (97, True),
        "ParaView-like": (100, False),
    }


def test_a_case_size_of_zero_is_a_one_line_error_naming_the_file_and_field(tmp_path: Path) -> None:
    document = yaml.safe_load((CASES_DIR / "alita.yaml").read_text(encoding="utf-8"))
    document["size"] = 0
    path = tmp_path / "alita.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(TestbedError) as error:
        load_case(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    assert "size" in message


def test_variant_shares_that_do_not_sum_to_one_are_refused(tmp_path: Path) -> None:
    document = yaml.safe_load((CASES_DIR / "fhir.yaml").read_text(encoding="utf-8"))
    document["variants"]["matching_spacing"]["share"] = 0.5
    path = tmp_path / "fhir.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(TestbedError, match="shares sum to"):
        load_case(path)


def test_allocation_is_one_seeded_draw_over_every_unit() -> None:
    case = _case("sumo_yolo")
    counts = allocate(case, runs=134, seed=5)
    assert sum(counts.values()) == 134
    assert counts == allocate(case, runs=134, seed=5)
    assert counts != allocate(case, runs=134, seed=6)


# --- each case's mechanism, caught by its validator --------------------------------------------


def test_pixel_boxes_into_a_normalized_reader_are_reported_as_coords_mismatch(tmp_path: Path) -> None:
    case = _case("sumo_yolo")
    assert all("coords.mismatch" in ids for ids in _found(case, "conflicting", tmp_path).values())
    assert all("coords.mismatch" not in ids for ids in _found(case, "consistent", tmp_path).values())


def test_generated_tools_leaking_numpy_integers_are_reported_as_schema_structured_mismatch(tmp_path: Path) -> None:
    case = _case("alita")
    assert all("schema.structured_mismatch" in ids for ids in _found(case, "drifting", tmp_path).values())
    assert all(not ids for ids in _found(case, "conforming", tmp_path).values())


def test_an_undocumented_pixel_spacing_is_reported_as_coords_scale_mismatch(tmp_path: Path) -> None:
    case = _case("fhir")
    assert all("coords.scale_mismatch" in ids for ids in _found(case, "undocumented_spacing", tmp_path).values())
    assert all("coords.scale_mismatch" not in ids for ids in _found(case, "matching_spacing", tmp_path).values())


def test_a_stale_binding_to_an_orphaned_datablock_is_reported_as_memory_handle_unknown(tmp_path: Path) -> None:
    case = _case("blender")
    assert all("memory.handle_unknown" in ids for ids in _found(case, "stale_binding", tmp_path).values())
    assert all(not ids for ids in _found(case, "fresh_binding", tmp_path).values())


def test_a_raw_texture_nested_in_json_is_reported_as_conn_binary_unparseable(tmp_path: Path) -> None:
    found = _found(_case("paraview"), "with_memoisation", tmp_path)
    assert all(ids == {"conn.binary_unparseable"} for ids in found.values())


def test_an_encoded_image_is_parseable_and_raw_pixels_are_not() -> None:
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    assert why_not_an_image(encode_png_base64(pixels)) is None
    assert why_not_an_image("data:image/png;base64," + encode_png_base64(pixels)) is None
    assert why_not_an_image(base64.b64encode(pixels.tobytes()).decode()) is not None
    assert why_not_an_image("not base64 at all!") == "not base64"


# --- table D -----------------------------------------------------------------------------------


def _measure(name: str, affected: bool, runs: int, flagged: int) -> VariantMeasure:
    return VariantMeasure(name, affected, runs, flagged, flagged, (), (), ())


def test_the_finding_row_fails_when_the_validators_miss_the_mechanism() -> None:
    case = _case("sumo_yolo")
    counts = {"conflicting": 10, "consistent": 30}
    caught = case_rows(case, counts, [_measure("conflicting", True, 10, 10), _measure("consistent", False, 30, 0)])
    blind = case_rows(case, counts, [_measure("conflicting", True, 10, 0), _measure("consistent", False, 30, 0)])
    finding = [row for row in caught if row.recovered]
    assert [row.recovered for row in finding] == ["yes"]
    assert finding[0].marking == "output"
    assert [row.recovered for row in blind if row.recovered] == ["NO"]
    assert {row.marking for row in caught if "units" in row.row or "size" in row.row} == {"input"}


@pytest.mark.slow
def test_reproduce_cases_is_byte_reproducible_resumable_and_refuses_another_seed(
    tmp_path: Path, tiny_calibration: Calibration
) -> None:
    cases_dir = _small_cases(tmp_path, 3)
    first = reproduce_cases(tmp_path / "a", quick=True, seed=11, cases_dir=cases_dir, calibration=tiny_calibration)
    second = reproduce_cases(tmp_path / "b", quick=True, seed=11, cases_dir=cases_dir, calibration=tiny_calibration)
    table = (tmp_path / "a" / "tables.csv").read_bytes()
    assert table == (tmp_path / "b" / "tables.csv").read_bytes()
    assert not first.failed
    assert first.rows == second.rows
    assert first.timings
    shutil.rmtree(tmp_path / "a" / "alita")  # an interrupted run: one case missing
    again = reproduce_cases(tmp_path / "a", quick=True, seed=11, cases_dir=cases_dir, calibration=tiny_calibration)
    assert again.rows == first.rows
    assert (tmp_path / "a" / "tables.csv").read_bytes() == table
    with pytest.raises(TestbedError, match="choose another --out"):
        reproduce_cases(tmp_path / "a", quick=True, seed=12, cases_dir=cases_dir, calibration=tiny_calibration)


@pytest.mark.slow
def test_reproduce_cases_command_prints_table_d_marked_input_and_output(reproduced_cases_quick: CasesCommand) -> None:
    result = reproduced_cases_quick
    assert result.exit_code == 0, result.output
    assert "SUMO+YOLO" in result.output
    assert "ParaView-like" in result.output
    assert "input" in result.output
    assert "output" in result.output
    assert (result.out / "tables.csv").is_file()
    assert (result.out / "timings.csv").is_file()
