"""events.jsonl stores no part of a message twice, and reads back every event exactly as it was made."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from testbed._errors import TestbedError
from testbed.events import (
    CallEvent,
    CallOutcomeKind,
    Direction,
    Event,
    EventLog,
    ExperimentHeader,
    MessageEvent,
    RunFinished,
    RunStarted,
    ServerRecord,
    read_events,
)

TOOLS = {"tools": [{"name": "detect", "description": "x" * 300, "inputSchema": {"type": "object"}}]}
CLIENT_META = {"protocolVersion": "2026-07-28", "clientInfo": {"name": "mcp", "version": "0.1.0"}}
SERVER_META = {"serverInfo": {"name": "det", "version": "0.1.0"}}
STRUCTURED = {"detections": [{"bbox": [1.0, 2.5, 3.0, 4.0], "score": 0.25, "label": "circle"}], "count": 1}


def _header() -> ExperimentHeader:
    server = ServerRecord(alias="det", server="detect-xyxy", transport="inprocess", protocol_version="2026-07-28",
                          server_info=None, tools=TOOLS["tools"], truth=None)  # fmt: skip
    return ExperimentHeader(
        time=0.0, experiment_id="x", scenario={}, scenario_path=None, seed=0, runs=1, versions={},
        git_revision=None, device="cpu", weights={}, servers=[server], started_at=0.0,
    )  # fmt: skip


def _message(run: int, node: str, seq: int, direction: Direction, message: dict[str, Any]) -> MessageEvent:
    return MessageEvent(
        time=1.0, run=run, node=node, item=0, seq=seq, server="det", direction=direction, message=message
    )


def _handshake() -> list[MessageEvent]:
    to_server, to_client = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
    messages = [
        (to_server, {"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": {"_meta": CLIENT_META}}),
        (to_client, {"jsonrpc": "2.0", "id": 0, "result": {"supportedVersions": [], "_meta": SERVER_META}}),
        (to_server, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        (to_client, {"jsonrpc": "2.0", "id": 1, "result": TOOLS}),
    ]
    return [
        MessageEvent(time=1.0, run=None, node=None, item=None, seq=seq, server="det", direction=way, message=message)
        for seq, (way, message) in enumerate(messages)
    ]


def _run(run: int, *, text: str | None = None, payload: Any = STRUCTURED) -> list[Event]:
    arguments = {"image": {"$blob": "ab" * 32}, "threshold": 0.5}
    params = {"_meta": {"scope": f"run-{run}", **CLIENT_META}, "name": "detect", "arguments": arguments}
    result: dict[str, Any] = {
        "content": [{"type": "text", "text": json.dumps(STRUCTURED) if text is None else text}],
        "structuredContent": STRUCTURED,
        "isError": False,
        "_meta": SERVER_META,
    }
    to_server, to_client = Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT
    started = RunStarted(
        time=1.0, run=run, scope=f"run-{run}", scene_source="s", image_blob="ab" * 32, width=4, height=4,
        ground_truth=[],
    )  # fmt: skip
    call = CallEvent(
        time=1.0, run=run, node="detect", item=0, server="det", tool="detect", arguments=arguments, adapters=[],
        clock=0.0, outcome=CallOutcomeKind.OK, payload=payload, duration_s=0.1,
    )  # fmt: skip
    return [
        started,
        _message(run, "@list", 0, to_server, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        _message(run, "@list", 1, to_client, {"jsonrpc": "2.0", "id": 1, "result": TOOLS}),
        _message(run, "detect", 0, to_server, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}),
        _message(run, "detect", 1, to_client, {"jsonrpc": "2.0", "id": 2, "result": result}),
        call,
        RunFinished(time=1.0, run=run, calls=1, failed_calls=0, task_passed=None, task_detail=""),
    ]


def _write(directory: Path, batches: list[list[Event]]) -> EventLog:
    log = EventLog(directory)
    log.create([_header(), *_handshake()])
    for batch in batches:
        log.append(batch)
    log.close()
    return log


def _lines(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]


def _messages(lines: list[dict[str, Any]], node: str, direction: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == "message" and line["node"] == node
            and line["direction"] == direction]  # fmt: skip


def test_every_event_reads_back_as_made(tmp_path: Path) -> None:
    batches = [_run(0), _run(1)]
    _write(tmp_path, batches)
    read = read_events(tmp_path).events
    assert [event.model_dump_json() for event in read] == [
        event.model_dump_json() for event in [_header(), *_handshake(), *batches[0], *batches[1]]
    ]


def test_what_the_log_holds_already_is_left_out_of_the_line(tmp_path: Path) -> None:
    _write(tmp_path, [_run(0), _run(1)])
    lines = _lines(tmp_path)
    listings = _messages(lines, "@list", "s->c")
    assert [line["message"]["result"] for line in listings] == [None, None]
    assert all(line["elided"] == {"result": "handshake"} for line in listings)  # the handshake's tools/list
    responses = _messages(lines, "detect", "s->c")
    assert all(line["message"]["result"]["structuredContent"] is None for line in responses)
    assert all(line["message"]["result"]["_meta"] == {} for line in responses)  # the handshake's
    assert all(line["elided"] == {"result._meta": "handshake", "result.structuredContent": "text:0"}
               for line in responses)  # fmt: skip
    requests = _messages(lines, "detect", "c->s")
    assert [line["message"]["params"]["_meta"] for line in requests] == [{"scope": "run-0"}, {"scope": "run-1"}]
    handshake = [line for line in lines if line["event"] == "message" and line["run"] is None]
    assert [line["message"] for line in handshake] == [event.message for event in _handshake()]  # kept whole
    calls = [line for line in lines if line["event"] == "call"]
    assert [(call["arguments"], call["payload"]) for call in calls] == [({}, None), ({}, None)]
    assert all(call["elided"] == {"arguments": "request:0", "payload": "response:1"} for call in calls)
    assert all("elided" not in line for line in _messages(lines, "@list", "c->s"))  # nothing to leave out


@pytest.mark.parametrize(
    ("text", "payload", "elided"),
    [
        (json.dumps(STRUCTURED, separators=(",", ":")), STRUCTURED, True),  # same JSON, other bytes: the text stays
        (json.dumps({**STRUCTURED, "count": 1.0}), STRUCTURED, False),  # 1.0 == 1 in Python, not in JSON
        ("not json", {"other": True}, False),
    ],
)
def test_a_part_is_left_out_only_when_it_comes_back_byte_for_byte(
    tmp_path: Path, text: str, payload: Any, elided: bool
) -> None:
    batch = _run(0, text=text, payload=payload)
    _write(tmp_path, [batch])
    lines = _lines(tmp_path)
    (response,) = _messages(lines, "detect", "s->c")
    assert (response["message"]["result"]["structuredContent"] is None) is elided
    assert response["message"]["result"]["content"][0]["text"] == text
    (call,) = [line for line in lines if line["event"] == "call"]
    assert (call["payload"] is None) is (payload == STRUCTURED)
    read = read_events(tmp_path).events
    assert [event.model_dump_json() for event in read[5:]] == [event.model_dump_json() for event in batch]


def test_a_version_1_log_reads_as_before(tmp_path: Path) -> None:
    """Lines written before anything was left out (format version 1) read back unchanged."""
    events: list[Event] = [_header().model_copy(update={"format_version": 1}), *_handshake(), *_run(0)]
    (tmp_path / "events.jsonl").write_text("".join(event.model_dump_json() + "\n" for event in events))
    read = read_events(tmp_path).events
    assert [event.model_dump_json() for event in read] == [event.model_dump_json() for event in events]
    assert isinstance(read[0], ExperimentHeader)
    assert read[0].format_version == 1


def test_a_reference_to_a_message_not_recorded_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path, [_run(0)])
    path = tmp_path / "events.jsonl"
    lines = path.read_text().splitlines()
    kept = [line for line in lines if '"node":"detect","item":0,"seq":0' not in line]  # drop the request
    path.write_text("\n".join(kept) + "\n")
    with pytest.raises(TestbedError, match=r"events\.jsonl:\d+: corrupt event .*message 0 \(c->s\)"):
        read_events(tmp_path)


def test_a_meta_that_does_not_end_with_the_handshake_s_is_kept_whole(tmp_path: Path) -> None:
    batch = _run(0)
    request = batch[3]
    assert isinstance(request, MessageEvent)
    reordered = {"name": "detect", "arguments": {}, "_meta": {**dict(reversed(CLIENT_META.items())), "scope": "x"}}
    batch[3] = request.model_copy(update={"message": {**request.message, "params": reordered}})
    _write(tmp_path, [batch])
    (line,) = _messages(_lines(tmp_path), "detect", "c->s")
    assert "elided" not in line
    read = read_events(tmp_path).events
    assert [event.model_dump_json() for event in read[5:]] == [event.model_dump_json() for event in batch]


def test_the_log_reads_without_its_blobs(tmp_path: Path) -> None:
    """A text block stored as a blob keeps its structured content in the line: blobs hold only long strings."""
    batch = _run(0, text=json.dumps(STRUCTURED) + " " * 600)
    response = batch[4]
    assert isinstance(response, MessageEvent)
    content = [{"type": "text", "text": {"$blob": "cd" * 32}}]  # as recorded: the long text externalized
    batch[4] = response.model_copy(update={"message": {**response.message, "result": {
        **response.message["result"], "content": content}}})  # fmt: skip
    _write(tmp_path, [batch])
    (line,) = _messages(_lines(tmp_path), "detect", "s->c")
    assert line["message"]["result"]["structuredContent"] == STRUCTURED
    shutil.rmtree(tmp_path / "blobs")
    read = read_events(tmp_path).events
    assert [event.model_dump_json() for event in read[5:]] == [event.model_dump_json() for event in batch]


def test_a_run_recorded_again_refers_to_its_own_messages(tmp_path: Path) -> None:
    """A run re-recorded after a kill (its first, unfinished attempt still in the log) reads back as recorded."""
    first: list[Event] = [event for event in _run(0) if not isinstance(event, CallEvent | RunFinished)]
    again = _run(0, payload={"other": 1})
    _write(tmp_path, [list(first), again])
    read = read_events(tmp_path).events
    assert [event.model_dump_json() for event in read[5:]] == [event.model_dump_json() for event in [*first, *again]]


def test_a_value_edited_into_the_line_wins_over_what_it_left_out(tmp_path: Path) -> None:
    _write(tmp_path, [_run(0)])
    path = tmp_path / "events.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        if line["event"] == "call":
            line["payload"] = {"edited": True}
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (call,) = [event for event in read_events(tmp_path).events if isinstance(event, CallEvent)]
    assert call.payload == {"edited": True}
    assert call.arguments == {"image": {"$blob": "ab" * 32}, "threshold": 0.5}  # still put back


def test_a_tool_list_unlike_the_handshake_s_stays_in_the_line(tmp_path: Path) -> None:
    """A rug pull: the run's tools/list differs from the handshake's, so the line keeps it."""
    batch = _run(0)
    listing = batch[2]
    assert isinstance(listing, MessageEvent)
    changed = {"tools": [{**TOOLS["tools"][0], "description": "now something else"}]}
    batch[2] = listing.model_copy(update={"message": {**listing.message, "result": changed}})
    _write(tmp_path, [batch])
    (line,) = _messages(_lines(tmp_path), "@list", "s->c")
    assert line["message"]["result"] == changed
    assert "elided" not in line
    assert [event.model_dump_json() for event in read_events(tmp_path).events[5:]] == [
        event.model_dump_json() for event in batch
    ]


def test_every_prefix_of_the_log_reads_back(tmp_path: Path) -> None:
    """A log cut anywhere (a killed writer) reads back: a line refers only to lines before it."""
    batches = [_run(0), _run(1)]
    _write(tmp_path, batches)
    path = tmp_path / "events.jsonl"
    data = path.read_bytes()
    made = [event.model_dump_json() for event in [_header(), *_handshake(), *batches[0], *batches[1]]]
    first_run_end = data.index(b"\n", data.index(b'"event":"run_started"')) + 1
    for cut in range(first_run_end, len(data) + 1, 7):
        path.write_bytes(data[:cut])
        log = read_events(tmp_path)
        complete = data[:cut].count(b"\n")
        partial = data[:cut].rsplit(b"\n", 1)[-1]
        whole = partial == data.split(b"\n")[complete]  # only its newline cut off: a line still
        assert [event.model_dump_json() for event in log.events] == made[: complete + whole]
        assert log.torn_line == (complete + 1 if partial and not whole else None)
