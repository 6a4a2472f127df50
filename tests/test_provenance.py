"""``provenance.untracked``: values consumed with no recorded producer, and images made from nothing given."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from testbed.metrics import summarize
from testbed.orchestrator import replay_experiment
from testbed.report import MARKDOWN_FILE, write_report
from testbed.scenario import Scenario, load_scenario_text
from testbed.validators import validate_experiment

LAUNDERING = """
name: provenance_laundering
version: 1
description: detect -> vuln-provenance, whose crop_latest crops an image it was never given in the call.
seed: 0
runs: 2
scene: {synthetic: {min_objects: 2, max_objects: 3}}
servers:
  det: {server: detect}
  prov: {server: vuln-provenance}
task: {kind: none}
agent:
  kind: scripted
  workflow:
    nodes:
      - {id: detect, call: det.detect, args: {image: $scene.image}}
      - {id: load, call: prov.load_image, args: {image_b64: $scene.image}}
      - id: crop
        call: prov.crop_latest
        for_each: $detect.detections
        args: {box: $item.bbox}
expect: [provenance.untracked]
"""

MADE_UP = """
name: provenance_made_up_handle
version: 1
description: a cropper behind context references, sent a reference no call of the run produced.
seed: 0
runs: 1
scene: {synthetic: {min_objects: 1, max_objects: 2}}
servers:
  crop: {server: crop, profile: {memory: {scope: context}}}
task: {kind: none}
agent:
  kind: scripted
  workflow:
    nodes:
      - {id: load, call: crop.load_image, args: {image: $scene.image}}
      - id: crop
        call: crop.crop
        args: {handle: "context://run-0/_/image/0123456789abcdef/v7", box: [0, 0, 8, 8]}
expect: [provenance.untracked]
"""


def _provenance(directory: Path) -> list[tuple[str | None, str]]:
    result = validate_experiment(directory)
    return [(v.node, v.detail) for v in result.violations if v.id == "provenance.untracked"]


@pytest.mark.slow
def test_a_crop_made_from_state_the_call_was_not_given_is_reported_as_provenance_untracked(
    recorded_scenario: Callable[[Scenario], Path],
) -> None:
    directory = recorded_scenario(load_scenario_text(LAUNDERING))
    found = _provenance(directory)
    calls = (directory / "events.jsonl").read_text().count('"event":"call","run"') - 4  # 2 runs: detect and load each

    assert found
    assert len(found) == calls
    assert {node for node, _ in found} == {"crop"}
    assert all("crop_latest answered with an image although it was given no image" in d for _, d in found)


@pytest.mark.slow
def test_a_reference_no_call_produced_is_reported_as_provenance_untracked_in_replay_and_report(
    recorded_scenario: Callable[[Scenario], Path], tmp_path: Path
) -> None:
    directory = recorded_scenario(load_scenario_text(MADE_UP))
    found = _provenance(directory)
    replayed = anyio.run(lambda: replay_experiment(directory))
    write_report(summarize(validate_experiment(directory), source=str(directory)), tmp_path)

    assert found == [
        (
            "crop",
            "argument 'handle' of crop was sent 'context://run-0/_/image/0123456789abcdef/v7', which neither the "
            "scene nor any earlier call of this run produced",
        )
    ]
    assert replayed.divergence is None
    assert replayed.violations >= 1
    assert "provenance.untracked" in (tmp_path / MARKDOWN_FILE).read_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["detect_crop_ttl", "detect_segment_crop", "segment_crop_masked", "fanout"])
def test_v1_pipelines_pass_their_own_handles_images_and_masks_with_tracked_provenance(
    recorded_v1: Callable[..., Path], name: str
) -> None:
    directory = recorded_v1(name, 3)
    ids = Counter(v.id for v in validate_experiment(directory).violations)

    assert ids["provenance.untracked"] == 0
    assert (directory / "events.jsonl").read_text().count('"event":"call"') >= 6
