"""What a long job keeps is left out of cyclic collections while it runs (``testbed._gc``)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from testbed._gc import kept_objects_unscanned, leave_kept_objects_unscanned
from testbed.events import RunStarted
from testbed.orchestrator import replay_experiment
from testbed.validators import validate_experiment


@pytest.fixture(autouse=True)
def _nothing_frozen_around() -> None:
    assert gc.get_freeze_count() == 0, "another test left objects frozen"


def test_objects_that_exist_on_entering_are_left_out_until_the_block_ends() -> None:
    before = object.__new__(_Node)
    with kept_objects_unscanned():
        assert gc.get_freeze_count() > 0
        assert not _in_collections(before)
        during = _Node()
        assert _in_collections(during)
    assert _in_collections(before)
    assert gc.get_freeze_count() == 0


def test_nested_blocks_put_objects_back_only_when_the_outer_one_ends() -> None:
    kept = _Node()
    with kept_objects_unscanned():
        with kept_objects_unscanned():
            pass
        assert not _in_collections(kept)
    assert _in_collections(kept)


def test_what_a_job_reads_can_be_left_out_too_and_only_inside_a_block() -> None:
    leave_kept_objects_unscanned()  # outside a block: nothing happens
    assert gc.get_freeze_count() == 0
    with kept_objects_unscanned():
        read = _Node()
        leave_kept_objects_unscanned()
        assert not _in_collections(read)
    assert _in_collections(read)


def test_objects_the_process_froze_itself_stay_frozen() -> None:
    its_own = _Node()
    gc.freeze()
    try:
        with kept_objects_unscanned():
            pass
        assert not _in_collections(its_own)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert _in_collections(its_own)


def test_cyclic_garbage_made_inside_a_block_is_still_collected() -> None:
    with kept_objects_unscanned():
        cycle = _Node()
        cycle.other = cycle
        del cycle
        assert gc.collect() > 0


def test_replay_and_validation_leave_the_recorded_events_out_while_they_run(
    recorded_v1: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import testbed.orchestrator._replay as replay_module
    import testbed.validators._apply as apply_module

    directory = recorded_v1("detect_segment_crop", 2)
    seen: list[tuple[int, bool]] = []

    def watching(module: Any, name: str) -> None:
        original = getattr(module, name)

        def watched(*args: Any, **kwargs: Any) -> Any:
            events = next(arg for arg in (*args, *kwargs.values()) if isinstance(arg, list) and arg)
            started = next(event for event in events if isinstance(event, RunStarted))
            seen.append((gc.get_freeze_count(), _in_collections(started)))
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, watched)

    watching(replay_module, "replay_directly")
    watching(apply_module, "split_runs")
    anyio.run(replay_experiment, directory)
    validate_experiment(directory)
    assert len(seen) >= 2
    assert all(count > 0 and not in_collections for count, in_collections in seen), seen
    assert gc.get_freeze_count() == 0


class _Node:
    other: Any = None


def _in_collections(thing: object) -> bool:
    return any(found is thing for found in gc.get_objects())


def test_validating_runs_read_earlier_leaves_their_events_out(recorded_v1: Callable[..., Path]) -> None:
    from testbed.events import BLOBS_DIR, BlobStore, read_events
    from testbed.validators import ValidatorSpec, split_runs, validate_runs

    directory = recorded_v1("detect_segment_crop", 2)
    records = split_runs(read_events(directory).events, BlobStore(directory / BLOBS_DIR))
    seen: list[tuple[int, bool]] = []

    def watch(record: Any) -> list[Any]:
        seen.append((gc.get_freeze_count(), _in_collections(record.started)))
        return []

    validate_runs(records, [ValidatorSpec(name="watch", emits=(), check=watch)])
    assert seen
    assert all(count > 0 and not in_collections for count, in_collections in seen), seen


def test_a_live_experiment_leaves_its_servers_and_models_out_while_runs_execute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import testbed.orchestrator._runner as runner_module
    from testbed.orchestrator import run_experiment
    from testbed.scenario import load_scenario

    counts: list[int] = []
    original = runner_module.execute_run  # type: ignore[attr-defined]

    async def watched(*args: Any, **kwargs: Any) -> Any:
        counts.append(gc.get_freeze_count())
        return await original(*args, **kwargs)

    monkeypatch.setattr(runner_module, "execute_run", watched)
    scenario = load_scenario(SCENARIOS / "detect_segment_crop.yaml").model_copy(update={"runs": 2})
    anyio.run(lambda: run_experiment(scenario, out_dir=tmp_path / "exp", device="cpu"))
    assert len(counts) == 2
    assert all(count > 0 for count in counts)
    assert gc.get_freeze_count() == 0


SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios" / "v1"
