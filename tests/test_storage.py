"""No byte stored twice: the sandbox's scene file is its blob (a hard link), images are stored once by hash."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import pytest

from testbed.events import BlobStore, CallEvent, CallOutcomeKind, Event, EventLog, RunStarted, read_events
from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"


def test_the_sandbox_scene_is_its_blob(tmp_path: Path, file_reading_scenario: str) -> None:
    """A server that reads files finds the scene in the sandbox, as one inode with its blob."""
    out = tmp_path / "exp"
    (tmp_path / "file.yaml").write_text(file_reading_scenario)
    scenario = load_scenario(tmp_path / "file.yaml")
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    calls = [event for event in read_events(out).events if isinstance(event, CallEvent)]
    assert [call.outcome for call in calls] == [CallOutcomeKind.OK, CallOutcomeKind.OK]  # it read the file
    blobs = BlobStore(out / "blobs")
    started = [event for event in read_events(out).events if isinstance(event, RunStarted)]
    assert [event.run for event in started] == [0, 1]
    for event in started:
        blob = blobs.path(event.image_blob)
        scene = out / "sandbox" / event.scope / "scene.png"
        assert blob is not None
        assert os.path.samefile(blob, scene)  # one inode: the bytes are on disk once
        assert scene.read_bytes() == blob.read_bytes()


def test_no_scene_file_when_no_server_reads_files(tmp_path: Path) -> None:
    """Servers that take images by value only: the scene is stored once, in ``blobs/``, and nowhere else."""
    out = tmp_path / "exp"
    scenario = load_scenario(V1 / "detect_crop_incompatible.yaml").model_copy(update={"runs": 2})
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    started = [event for event in read_events(out).events if isinstance(event, RunStarted)]
    assert [event.run for event in started] == [0, 1]
    assert all(BlobStore(out / "blobs").path(event.image_blob) is not None for event in started)
    assert not list((out / "sandbox").rglob("*.png"))


def test_link_falls_back_to_a_copy_where_linking_is_impossible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    digest = blobs.put_bytes(b"\x89PNG\r\n\x1a\n not really an image")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    target = tmp_path / "sandbox" / "scene.png"
    target.parent.mkdir()
    target.write_bytes(b"stale")
    blobs.link(digest, target)
    blob = blobs.path(digest)
    assert blob is not None
    assert not os.path.samefile(blob, target)
    assert target.read_bytes() == blob.read_bytes()


def test_the_same_image_is_stored_once_however_it_arrives(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    first = blobs.put(base64.b64encode(png).decode("ascii"))
    second = blobs.put_bytes(png)
    assert first == second
    assert len(list((tmp_path / "blobs").iterdir())) == 1


def test_a_recording_reads_back_every_event_as_made_and_repeats_no_tool_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines leave out what earlier lines hold (``events._pack``); reading puts it back, event for event."""
    made: list[Event] = []
    create, append = EventLog.create, EventLog.append

    def kept_create(log: EventLog, events: Iterable[Event], **options: Any) -> None:
        made.extend(events := list(events))
        create(log, events, **options)

    def kept_append(log: EventLog, events: Iterable[Event]) -> None:
        made.extend(events := list(events))
        append(log, events)

    monkeypatch.setattr(EventLog, "create", kept_create)
    monkeypatch.setattr(EventLog, "append", kept_append)
    out = tmp_path / "exp"
    scenario = load_scenario(V1 / "detect_segment_crop.yaml").model_copy(update={"runs": 2})
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    assert [event.model_dump_json() for event in read_events(out).events] == [event.model_dump_json() for event in made]
    lines = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    in_runs = [line for line in lines if line.get("run") is not None and line["event"] in ("message", "call")]
    assert not [line for line in in_runs if '"tools": [' in json.dumps(line)]  # the handshake's, referred to
    calls = [line for line in in_runs if line["event"] == "call" and line["outcome"] == "ok"]
    assert calls
    assert all(call["elided"]["arguments"].startswith("request:") for call in calls)
    with_payload = [call for call in calls if call["tool"] in ("detect", "segment")]
    assert [call["elided"].get("payload", "")[:9] for call in with_payload] == ["response:"] * len(with_payload)
