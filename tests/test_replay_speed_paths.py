"""The fast paths of reading and replaying give what the slower paths give, and still catch every difference."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

import testbed.orchestrator._call as call_module
import testbed.orchestrator._replay as replay_module
import testbed.orchestrator._run as run_module
from testbed._errors import TestbedError
from testbed.events import (
    BLOBS_DIR,
    EVENTS_FILE,
    BlobStore,
    Event,
    MessageEvent,
    ReplayBlobs,
    externalize,
    read_events,
)
from testbed.events._pack import Packer
from testbed.events._store import BLOB_MIN_CHARS, externalized
from testbed.orchestrator import replay_experiment
from testbed.orchestrator._agents import replay_models
from testbed.orchestrator._direct_replay import UnreplayableError, replay_directly
from testbed.orchestrator._experiment import task_checker
from testbed.orchestrator._replay import first_divergence, load_recorded
from testbed.workflow import InvalidReferenceError, parse_reference


def _direct_events(directory: Path) -> tuple[list[Event], list[Event]]:
    """The recorded events, and the direct replay's."""
    _, recorded, scenario = load_recorded(directory)
    blobs = ReplayBlobs(BlobStore(directory / BLOBS_DIR))
    with tempfile.TemporaryDirectory() as sandbox:
        return recorded, anyio.run(
            lambda: replay_directly(
                recorded, scenario, blobs, sandbox=Path(sandbox), models=replay_models(scenario, recorded),
                check_task=task_checker(scenario),
            )
        )  # fmt: skip


def _refusals(directory: Path) -> list[str]:
    """Why the direct replay of ``directory`` gave up (it raises from inside its sessions' task groups)."""
    try:
        _direct_events(directory)
    except Exception as error:
        return _messages(error)
    return []


def _messages(error: BaseException) -> list[str]:
    if isinstance(error, BaseExceptionGroup):
        return [message for inner in error.exceptions for message in _messages(inner)]
    return [str(error)] if isinstance(error, UnreplayableError) else []


def test_a_log_read_back_and_written_again_is_the_same_bytes(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    # Reading completes each line in place and shares the handshake's parts: writing the events again with a
    # fresh packer must leave out exactly what the recorder left out, byte for byte.
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=3)
    written = (tmp_path / EVENTS_FILE).read_text(encoding="utf-8")
    events = read_events(tmp_path).events
    assert '"elided"' in written
    assert Packer().lines(events) == written
    assert all(getattr(event, "elided", None) is None for event in events)


def test_events_read_back_do_not_share_what_a_later_line_changes(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path]
) -> None:
    recorded_v1_copy("detect_crop", tmp_path, runs=2)
    events = read_events(tmp_path).events
    handshake = next(e for e in events if isinstance(e, MessageEvent) and e.run is None and "params" in e.message)
    in_runs = [
        e
        for e in events
        if isinstance(e, MessageEvent) and e.run is not None and e.direction is handshake.direction
        and e.server == handshake.server
    ]  # fmt: skip
    assert len(in_runs) >= 2
    metas = [event.message["params"]["_meta"] for event in in_runs]
    assert len({id(meta) for meta in metas}) == len(metas)  # each message its own _meta; only the tail is shared
    assert all(meta.items() >= handshake.message["params"]["_meta"].items() for meta in metas)


def test_replay_blobs_find_what_a_blob_store_finds(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / BLOBS_DIR)
    text_digest = store.put("t" * BLOB_MIN_CHARS + "\r\nend")  # read back as BlobStore.get reads text
    view = ReplayBlobs(BlobStore(tmp_path / BLOBS_DIR))
    assert view.get(text_digest) == store.get(text_digest)
    assert view.path(text_digest) == store.path(text_digest)
    later = store.put("u" * BLOB_MIN_CHARS)  # stored after the view listed the folder
    assert view.get(later) == store.get(later)
    assert view.path("0" * 64) is None
    with pytest.raises(TestbedError, match="blob missing from the experiment directory"):
        view.get("0" * 64)
    gone = store.put("v" * BLOB_MIN_CHARS)
    listed = ReplayBlobs(BlobStore(tmp_path / BLOBS_DIR))
    assert listed.get(text_digest) == store.get(text_digest)  # lists the folder, ``gone`` in it
    (tmp_path / BLOBS_DIR / f"{gone}.txt").unlink()
    with pytest.raises(TestbedError, match="blob missing from the experiment directory"):
        listed.get(gone)


def test_direct_replay_of_a_fan_out_gives_the_events_the_session_replay_gives(
    tmp_path: Path, recorded_v1_copy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=3)

    def unused(*_: object, **__: object) -> None:
        raise AssertionError("a direct replay arms no deadline (none could expire) and starts no task group")

    guarded = SimpleNamespace(**{**vars(anyio), "fail_after": unused, "create_task_group": unused})
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "anyio", guarded)
        patch.setattr(call_module, "anyio", guarded)
        recorded, direct = _direct_events(tmp_path)
    assert {id(event) for event in direct} <= {id(event) for event in recorded}  # the recorded ones, each checked
    assert first_divergence(recorded, direct)[1] is None

    sessions: list[list[Event]] = []
    offline = replay_module._replay_offline

    async def through_sessions(*args: Any) -> list[Event]:
        sessions.append(await offline(*args))
        return sessions[-1]

    def refuse(*_: object, **__: object) -> None:
        raise UnreplayableError("test: replay through sessions")

    monkeypatch.setattr(replay_module, "replay_directly", refuse)
    monkeypatch.setattr(replay_module, "_replay_offline", through_sessions)
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert not report.direct
    assert report.divergence is None
    compared, divergence = first_divergence(direct, sessions[0])
    assert divergence is None
    assert compared == report.events > 3 * 5


def test_a_fan_out_call_that_differs_is_found_and_named(tmp_path: Path, recorded_v1_copy: Callable[..., Path]) -> None:
    # The last item of a fan-out step, made after the others in the same step: the direct replay must give up and
    # the session replay name it.
    recorded_v1_copy("detect_segment_crop", tmp_path, runs=2)
    events_file = tmp_path / EVENTS_FILE
    lines = events_file.read_text(encoding="utf-8").splitlines()
    requests = [
        index
        for index, line in enumerate(lines)
        if (document := json.loads(line)).get("event") == "message" and document["run"] == 1
        and document["node"] == "crop" and document["direction"] == "c->s"
    ]  # fmt: skip
    assert len(requests) >= 2
    document = json.loads(lines[requests[-1]])
    box = document["message"]["params"]["arguments"]["box"]
    box[0] += 1.0
    lines[requests[-1]] = json.dumps(document)
    events_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    refusal = f"run 1 crop#{document['item']} (crop): the request differs from the recorded one"
    assert refusal in _refusals(tmp_path)
    report = anyio.run(lambda: replay_experiment(tmp_path))
    assert report.divergence is not None
    assert not report.direct
    assert report.divergence.run == 1
    assert report.divergence.where == f"message crop#{document['item']}"
    assert report.divergence.field.startswith("message.params.arguments.box")


def test_a_parsed_reference_is_kept_and_a_malformed_one_fails_every_time() -> None:
    assert parse_reference("$detect.detections[*].bbox") is parse_reference("$detect.detections[*].bbox")
    for _ in range(2):
        with pytest.raises(InvalidReferenceError, match="unexpected"):
            parse_reference("$detect.detections!")


class _Label(StrEnum):
    CIRCLE = "circle"


def _externalized_by_walk(value: Any, blobs: BlobStore) -> Any:
    """What externalize returned before its leaves were checked inline."""
    if isinstance(value, str):
        return {"$blob": blobs.put(value)} if len(value) >= BLOB_MIN_CHARS else value
    if isinstance(value, dict):
        return {key: _externalized_by_walk(item, blobs) for key, item in value.items()}
    if isinstance(value, list):
        return [_externalized_by_walk(item, blobs) for item in value]
    return value


def test_externalize_copies_and_replaces_as_a_plain_walk_does(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / BLOBS_DIR)
    inner = [1, 2.5, True, None]
    value = {
        "numbers": inner,
        "label": _Label.CIRCLE,
        "long": "x" * BLOB_MIN_CHARS,
        "nested": [{"flag": False, "text": "y" * (BLOB_MIN_CHARS + 1), "more": [[0.0], {}]}],
        "tuple": (1, 2),
    }
    externalized = externalize(value, store)
    assert json.dumps(externalized) == json.dumps(_externalized_by_walk(value, store))
    assert externalized["numbers"] == inner
    assert externalized["numbers"] is not inner
    assert externalized["label"] is _Label.CIRCLE


def test_externalized_equals_externalize_and_shares_what_holds_no_long_string(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / BLOBS_DIR)
    untouched = {"boxes": [[1.0, 2.0, 3.0, 4.0]], "label": "circle", "flags": [True, None]}
    value: dict[str, Any] = {
        "content": [{"text": "z" * BLOB_MIN_CHARS, "type": "text"}],
        "structured": untouched,
        "id": 3,
    }
    shared = externalized(value, store)
    assert shared == externalize(value, store)
    assert shared is not value
    assert shared["structured"] is untouched
    assert shared["content"][0]["text"] == {"$blob": store.put("z" * BLOB_MIN_CHARS)}
    assert value["content"][0]["text"] == "z" * BLOB_MIN_CHARS  # the value itself is left as it was
    assert externalized(untouched, store) is untouched
