"""No byte stored twice: the sandbox's scene file is its blob (a hard link), images are stored once by hash."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import anyio
import pytest

from testbed.events import BlobStore, RunStarted, read_events
from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"


def test_the_sandbox_scene_is_its_blob(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    scenario = load_scenario(V1 / "detect_crop_incompatible.yaml").model_copy(update={"runs": 2})
    anyio.run(lambda: run_experiment(scenario, out_dir=out, device="cpu"))
    blobs = BlobStore(out / "blobs")
    started = [event for event in read_events(out).events if isinstance(event, RunStarted)]
    assert [event.run for event in started] == [0, 1]
    for event in started:
        blob = blobs.path(event.image_blob)
        scene = out / "sandbox" / event.scope / "scene.png"
        assert blob is not None
        assert os.path.samefile(blob, scene)  # one inode: the bytes are on disk once
        assert scene.read_bytes() == blob.read_bytes()


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
