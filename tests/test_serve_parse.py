"""A stdio server parses each line exactly as the SDK's stdio transport does (invalid UTF-8 replaced)."""

from __future__ import annotations

import json

import mcp_types
import pytest
from mcp.shared.message import SessionMessage

from testbed.serve import _parse

CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "crop", "arguments": {"box": [1, 2]}}}


def _as_the_sdk_parses(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(
            mcp_types.jsonrpc_message_adapter.validate_json(line.decode("utf-8", errors="replace"), by_name=False)
        )
    except Exception as error:
        return error


@pytest.mark.parametrize(
    "line",
    [
        json.dumps(CALL).encode(),
        json.dumps(CALL).replace("crop", "cr\u00f6p").encode(),  # valid UTF-8 beyond ASCII
        json.dumps(CALL).encode().replace(b"crop", b"cr\xffop"),  # invalid UTF-8 inside a string: replaced
        b"\xef\xbb\xbf" + json.dumps(CALL).encode(),  # a byte order mark
        b"not json",
        json.dumps({"jsonrpc": "2.0", "id": 1}).encode(),  # JSON, but no JSON-RPC message
    ],
    ids=["ascii", "utf-8", "invalid-utf-8", "bom", "not-json", "not-json-rpc"],
)
def test_a_line_becomes_the_message_or_error_the_sdks_stdio_transport_makes(line: bytes) -> None:
    ours, theirs = _parse(line + b"\n"), _as_the_sdk_parses(line + b"\n")
    if isinstance(theirs, Exception):
        assert type(ours) is type(theirs)
        assert str(ours) == str(theirs)
    else:
        assert isinstance(ours, SessionMessage)
        assert ours.message == theirs.message


def test_invalid_utf_8_in_a_tool_name_reaches_the_server_as_replacement_characters() -> None:
    parsed = _parse(json.dumps(CALL).encode().replace(b"crop", b"cr\xffop"))
    assert isinstance(parsed, SessionMessage)
    assert parsed.message.model_dump(by_alias=True)["params"]["name"] == "cr\ufffdop"
