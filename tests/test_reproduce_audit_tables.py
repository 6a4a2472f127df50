"""Table A's coordinate rows: "any coords finding" (undeclared included) apart from "a mismatch found"."""

from __future__ import annotations

from testbed.population import load_prevalence, sample_population
from testbed.reproduce import AUDIT_PREVALENCE, Measured, WorkflowMeasure, audit_rows


def test_the_coords_rows_count_undeclared_servers_apart_from_mismatched_ones() -> None:
    prevalence = load_prevalence(AUDIT_PREVALENCE)
    population = sample_population(prevalence, n=6, seed=1)
    first, second, third = (member.id for member in population.members[:3])
    flags = {
        first: frozenset({"coords.undeclared"}),
        second: frozenset({"coords.undeclared", "coords.mismatch"}),
        third: frozenset({"schema.output_schema_loose"}),
    }
    measured = Measured(
        [WorkflowMeasure(population.workflows[0], 1, {}, 1, 0, flags, frozenset(), validator_failures=0)]
    )
    rows = {row.row: row for row in audit_rows(population, prevalence, measured)}
    anything, mismatch = rows["coords"], rows["coords: mismatch found"]
    assert (anything.count, anything.total) == (2, 6)
    assert (mismatch.count, mismatch.total) == (1, 6)
    assert anything.paper == mismatch.paper  # both beside the paper's 24.6 %, each note saying what it counts
    assert "coords.undeclared included" in anything.note
    assert "other than coords.undeclared" in mismatch.note
    assert (anything.marking, mismatch.marking, mismatch.family) == ("output", "output", "coords")
