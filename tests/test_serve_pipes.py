"""The stdio serving loop: JSON-RPC lines read and written by the event loop, stray output kept off the wire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import anyio
import mcp_types
import pytest
from mcp.shared.message import SessionMessage

from testbed.serve import _pipe_streams

pytestmark = pytest.mark.anyio

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
BIG = {"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"_meta": {"blob": "x" * 3_000_000}}}
"""Longer than any pipe's capacity: read and written in many pieces."""


async def test_lines_in_become_messages_or_errors_and_messages_out_become_lines() -> None:
    to_server_read, to_server_write = os.pipe()
    from_server_read, from_server_write = os.pipe()
    lines = (json.dumps(PING) + "\n" + "not json\n" + json.dumps(BIG) + "\n" + json.dumps(PING)).encode()

    def feed() -> None:
        with os.fdopen(to_server_write, "wb") as stream:  # the last line unterminated, then the end
            stream.write(lines)

    received: list[SessionMessage | Exception] = []
    written = bytearray()

    def drain() -> None:
        with os.fdopen(from_server_read, "rb") as stream:
            written.extend(stream.read())

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, feed)
            group.start_soon(anyio.to_thread.run_sync, drain)
            async with _pipe_streams(to_server_read, from_server_write) as (incoming, outgoing):
                async for item in incoming:
                    received.append(item)
                answer = mcp_types.jsonrpc_message_adapter.validate_python(BIG | {"id": 3})
                await outgoing.send(SessionMessage(answer))
            os.close(from_server_write)  # the loop left it open: the end of the output
    finally:
        os.close(to_server_read)
    kinds = ["message" if isinstance(item, SessionMessage) else type(item).__name__ for item in received]
    assert kinds == ["message", "ValidationError", "message", "message"]
    big = received[2]
    assert isinstance(big, SessionMessage)
    assert big.message.model_dump(by_alias=True, exclude_none=True) == BIG
    assert written.count(b"\n") == 1
    assert written.endswith(b"\n")
    assert json.loads(written) == BIG | {"id": 3}


def test_what_a_handler_prints_goes_to_stderr_and_never_onto_the_wire() -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from testbed.serve import _claim_pipes, _release_pipes
        wire = _claim_pipes()
        assert wire is not None
        print("printed", flush=True)
        os.write(1, b"written to fd 1\\n")
        os.write(wire[1], b"on the wire\\n")
        _release_pipes(*wire)
        print("after release", flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], input=b"", capture_output=True, timeout=60, check=True)
    assert done.stdout == b"on the wire\nafter release\n"
    assert done.stderr == b"printed\nwritten to fd 1\n"
