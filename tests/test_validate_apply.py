"""Applying validators to a whole experiment: runs cut from events, a throwing validator isolated."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from testbed.validators import (
    VALIDATORS,
    RunRecord,
    ValidatorSpec,
    Violation,
    split_runs,
    validate_experiment,
    validate_runs,
)


def test_compatible_pipeline_has_no_violations_and_incompatible_one_has_coords_mismatch(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    recorded_v1_copy("detect_crop", tmp_path / "ok", runs=3)
    recorded_v1_copy("detect_crop_incompatible", tmp_path / "bad", runs=3)
    clean = validate_experiment(tmp_path / "ok")
    assert len(clean.runs) == 3
    assert clean.violations == ()
    assert clean.failures == ()
    found = {v.id for v in validate_experiment(tmp_path / "bad").violations}
    assert "coords.mismatch" in found


def test_a_validator_that_throws_is_reported_and_the_others_still_run(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    recorded_v1_copy("detect_crop_incompatible", tmp_path, runs=2)
    from testbed.events import BlobStore, read_events

    records = split_runs(read_events(tmp_path).events, BlobStore(tmp_path / "blobs"))

    def broken(record: RunRecord) -> Iterator[Violation]:
        raise RuntimeError("boom")
        yield  # pragma: no cover

    specs = (ValidatorSpec(name="broken", emits=("proto.timeout",), check=broken), *VALIDATORS)
    result = validate_runs(records, specs)
    assert [(f.validator, f.run) for f in result.failures] == [("broken", 0), ("broken", 1)]
    assert "RuntimeError: boom" in result.failures[0].error
    assert any(v.id == "coords.mismatch" for v in result.violations)
