"""Replay shows the agent the scene paths it saw live, so scenarios passing ``$scene.image_path`` reproduce."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import pytest

from testbed.events import EVENTS_FILE, ExperimentHeader, read_events
from testbed.orchestrator import replay_experiment, run_experiment
from testbed.scenario import Scenario, load_scenario

DELAY = "faults:\n  - {kind: delay, seconds: 0.01, target: {server: det}}\n"
"""Added to the scenario, a fault: it is then replayed through MCP sessions rather than served directly."""


def _scenario(tmp_path: Path, text: str) -> Scenario:
    path = tmp_path / "file.yaml"
    path.write_text(text)
    return load_scenario(path)


def _record(tmp_path: Path, text: str) -> Path:
    out = tmp_path / "exp"
    scenario = _scenario(tmp_path, text)
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    return out


def _header(out: Path) -> ExperimentHeader:
    header = read_events(out).events[0]
    assert isinstance(header, ExperimentHeader)
    return header


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "sessions"])
def test_a_scenario_passing_the_scene_path_replays(tmp_path: Path, file_reading_scenario: str, direct: bool) -> None:
    text = file_reading_scenario if direct else file_reading_scenario.replace("expect: []", DELAY + "expect: []")
    out = _record(tmp_path, text)
    assert _header(out).sandbox == str((out / "sandbox").resolve())

    report = anyio.run(lambda: replay_experiment(out))

    assert report.divergence is None, str(report.divergence)
    assert report.direct is direct


def test_a_moved_recording_still_replays_with_the_paths_it_recorded(tmp_path: Path, file_reading_scenario: str) -> None:
    out = _record(tmp_path, file_reading_scenario)
    moved = tmp_path / "elsewhere" / "exp"
    moved.parent.mkdir()
    shutil.move(out, moved)

    report = anyio.run(lambda: replay_experiment(moved))

    assert report.divergence is None, str(report.divergence)


def test_a_log_written_before_the_sandbox_was_recorded_replays_from_its_own_folder(
    tmp_path: Path, file_reading_scenario: str
) -> None:
    out = _record(tmp_path, file_reading_scenario)
    log = out / EVENTS_FILE
    first, rest = log.read_text(encoding="utf-8").split("\n", 1)
    header = json.loads(first)
    del header["sandbox"]
    log.write_text(json.dumps(header) + "\n" + rest, encoding="utf-8")
    assert _header(out).sandbox is None

    report = anyio.run(lambda: replay_experiment(out))

    assert report.divergence is None, str(report.divergence)
