"""A run's blobs are durable before the run is: fsynced before the events that refer to them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from testbed.events import BLOBS_DIR, EVENTS_FILE, BlobStore, EventLog, ExperimentFinished

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fsynced files")

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios" / "v1"


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every file or directory fsynced from now on, in order."""
    synced: list[str] = []
    original = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        original(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def _finished() -> ExperimentFinished:
    return ExperimentFinished(time=time.time(), runs=1, finished_at=time.time())


def test_appending_events_fsyncs_the_new_blobs_and_their_folder_first(tmp_path: Path, fsynced: list[str]) -> None:
    log = EventLog(tmp_path)
    log.create([_finished()])
    digest = log.blobs.put_bytes(b"\x89PNG not really")
    fsynced.clear()

    log.append([_finished()])
    log.close()

    blob = str((tmp_path / BLOBS_DIR / f"{digest}.png").resolve())
    events = str((tmp_path / EVENTS_FILE).resolve())
    assert fsynced == [blob, str((tmp_path / BLOBS_DIR).resolve()), events]


def test_a_blob_is_fsynced_once_and_an_append_without_new_blobs_fsyncs_only_the_log(
    tmp_path: Path, fsynced: list[str]
) -> None:
    log = EventLog(tmp_path)
    log.create([_finished()])
    log.blobs.put_bytes(b"once")
    log.append([_finished()])
    fsynced.clear()

    log.blobs.put_bytes(b"once")
    log.append([_finished()])
    log.close()

    assert fsynced == [str((tmp_path / EVENTS_FILE).resolve())]


def test_a_blob_torn_by_a_crash_is_written_again_and_a_whole_one_is_left_alone(tmp_path: Path) -> None:
    data = bytes(range(256)) * 8
    digest = BlobStore(tmp_path).put_bytes(data)
    path = tmp_path / f"{digest}.png"
    path.write_bytes(data[:100])  # what a machine crash can leave of a blob written but never fsynced

    BlobStore(tmp_path).put_bytes(data)
    assert path.read_bytes() == data

    inode = path.stat().st_ino
    BlobStore(tmp_path).put_bytes(data)
    assert path.stat().st_ino == inode


def test_a_live_run_has_its_blobs_fsynced_before_it_is_handed_to_the_writer(
    tmp_path: Path, fsynced: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner fsyncs a run's blobs itself: a worker process writes blobs that another process's log records."""
    from testbed.orchestrator import run_experiment
    from testbed.scenario import load_scenario

    out = tmp_path / "exp"
    unsynced_at_append: list[set[str]] = []
    original_append = EventLog.append

    def append(self: EventLog, events: Any) -> None:
        present = {str(path.resolve()) for path in (out / BLOBS_DIR).iterdir() if not path.name.endswith(".tmp")}
        unsynced_at_append.append(present - set(fsynced))
        original_append(self, events)

    monkeypatch.setattr(EventLog, "append", append)
    scenario = load_scenario(SCENARIOS / "detect_segment_crop.yaml").model_copy(update={"runs": 2})
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu", workers=1))

    assert len(unsynced_at_append) == 3  # two runs, then the experiment's end
    assert unsynced_at_append == [set(), set(), set()]
    assert len(list((out / BLOBS_DIR).iterdir())) > 2
