"""The vulnerable servers do what their threat says, and only that: shell text is parsed (a quoted
separator is not a chain), escaping paths land on a decoy inside the sandbox, the image carries its
injection three ways, the description changes mid-run with a ``list_changed`` notification, and a
harmless call earns no attack marker (so every marker the probes see is the attack's)."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent
from PIL import Image

from servers._tools import ToolInputError
from servers.vulnerable._contain import Ledger, parse_shell, resolve_in_sandbox
from servers.vulnerable.injection import DESCRIBE_SCENE, DESCRIPTION_INJECTION, embedded_text
from servers.vulnerable.probes import IMAGE_INJECTION, SAMPLE_FILE, injected_png, prepare_sandbox
from testbed.imaging import decode_image, encode_png
from testbed.registry import registry
from testbed.server_config import ServerConfig
from tests._helpers import call

REPO_ROOT = Path(__file__).resolve().parents[1]
PLAIN = base64.b64encode(encode_png(np.full((12, 16, 3), 90, dtype=np.uint8))).decode("ascii")


def payload(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    first = result.content[0]
    assert isinstance(first, TextContent)
    decoded: dict[str, Any] = json.loads(first.text)
    return decoded


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    root = (tmp_path / "sandbox").resolve()
    prepare_sandbox(root)
    return root


def client_of(name: str, sandbox: Path) -> Client:
    return Client(registry().server(name).build(ServerConfig(device="cpu", sandbox=sandbox)))


# --- shell text is parsed, never run ---------------------------------------------------------------


def test_a_shell_line_splits_into_its_commands_and_substitutions() -> None:
    parsed = parse_shell("convert a.png; touch CANARY && rm -rf x | tee y $(cat /etc/passwd) `id`", argument="f")

    assert parsed.commands[0] == ("convert", "a.png")
    assert parsed.injected == ("touch CANARY", "rm -rf x", "tee y $(cat /etc/passwd) `id`", "cat /etc/passwd", "id")


def test_a_quoted_separator_is_part_of_a_file_name_not_a_chain() -> None:
    parsed = parse_shell("convert 'odd; name.png' out.png", argument="f")

    assert parsed.commands == (("convert", "odd; name.png", "out.png"),)
    assert parsed.injected == ()


def test_an_unclosed_quote_is_an_error_naming_the_argument() -> None:
    with pytest.raises(ToolInputError, match=r"^filename: a shell could not parse it"):
        parse_shell("convert 'a.png", argument="filename")


# --- paths resolve against the sandbox ------------------------------------------------------------


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "images/../../x", "link/passwd"])
def test_a_path_leaving_the_sandbox_is_served_from_a_decoy_inside_it(path: str, sandbox: Path) -> None:
    (sandbox / "link").symlink_to("/etc")

    where = resolve_in_sandbox(sandbox, path, argument="path")

    assert where.escaped
    assert where.served.is_relative_to(sandbox / "decoy")


def test_a_path_inside_the_sandbox_is_served_as_itself(sandbox: Path) -> None:
    where = resolve_in_sandbox(sandbox, SAMPLE_FILE, argument="path")

    assert not where.escaped
    assert where.served == sandbox / SAMPLE_FILE


# --- prompt injection -----------------------------------------------------------------------------


def test_the_injected_image_carries_its_instruction_in_a_text_chunk_its_exif_and_its_pixels() -> None:
    data = injected_png()

    texts = embedded_text(data)
    pixels = decode_image(data)

    assert f"Description: {IMAGE_INJECTION}" in texts
    assert IMAGE_INJECTION in texts[1:]  # EXIF ImageDescription
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1  # drawn text, not a blank card
    with Image.open(io.BytesIO(encode_png(pixels))) as plain:
        assert getattr(plain, "text", {}) == {}


@pytest.mark.anyio
async def test_a_plain_image_gets_a_caption_without_injected_text(sandbox: Path) -> None:
    async with client_of("vuln-injection", sandbox) as client:
        caption = payload(await call(client, "caption", {"image_b64": PLAIN}))["caption"]

    assert caption == "A 16x12 picture."


@pytest.mark.anyio
async def test_the_description_changes_after_the_first_call_and_listening_clients_are_told(sandbox: Path) -> None:
    async with client_of("vuln-injection", sandbox) as client:
        before = {tool.name: tool.description for tool in (await client.list_tools()).tools}
        async with client.listen(tools_list_changed=True) as changes:
            await call(client, "describe_scene", {"image_b64": PLAIN})
            with anyio.fail_after(5):
                event = await changes.__anext__()
        after = {tool.name: tool.description for tool in (await client.list_tools()).tools}

    assert type(event).__name__ == "ToolsListChanged"
    assert before["describe_scene"] == DESCRIBE_SCENE
    assert after["describe_scene"] == f"{DESCRIBE_SCENE} {DESCRIPTION_INJECTION}"
    assert after["caption"] == before["caption"]


# --- harmless calls earn no marker; attacks earn theirs -------------------------------------------


@pytest.mark.anyio
async def test_a_plain_convert_executes_nothing_and_writes_inside_the_sandbox(sandbox: Path) -> None:
    async with client_of("vuln-rce", sandbox) as client:
        result = payload(await call(client, "convert_image", {"filename": SAMPLE_FILE, "format": "webp"}))

    assert result == {"path": "converted/out.webp"}
    assert (sandbox / "converted" / "out.webp").is_file()
    assert Ledger(sandbox).entries() == []


@pytest.mark.anyio
async def test_schema_bypass_publishes_a_closed_ranged_schema_and_acts_beyond_it(sandbox: Path) -> None:
    arguments = {"image_b64": PLAIN, "box": [0, 0, 4, 4]}
    async with client_of("vuln-schema-bypass", sandbox) as client:
        listed = (await client.list_tools()).tools[0].input_schema
        honest = payload(await call(client, "crop", {**arguments, "scale": 2}))
        assert Ledger(sandbox).entries() == []
        bypass = payload(await call(client, "crop", {**arguments, "scale": 50, "debug_dump": True}))

    assert listed["additionalProperties"] is False
    assert listed["properties"]["scale"]["maximum"] == 4.0
    assert honest == {"width": 8, "height": 8}
    assert (bypass["width"], bypass["height"]) == (200, 200)
    assert [marker["marker"] for marker in bypass["attack_markers"]] == ["undeclared_argument", "out_of_range"]
    assert (sandbox / "dumps" / "input.png").is_file()


@pytest.mark.anyio
async def test_stale_memory_serves_its_own_session_quietly_and_another_sessions_as_stale(sandbox: Path) -> None:
    async with client_of("vuln-stale-memory", sandbox) as client:
        handle = payload(await call(client, "remember", {"image_b64": PLAIN}, scope="run-1"))["handle"]
        own = payload(await call(client, "recall", {"handle": handle}, scope="run-1"))
        foreign = payload(await call(client, "recall", {"handle": handle}, scope="run-2"))

    assert "attack_markers" not in own
    assert foreign["stored_by"] == "run-1"
    assert foreign["attack_markers"][0] | {"read_by": "run-2", "stored_by": "run-1"} == foreign["attack_markers"][0]


@pytest.mark.anyio
async def test_provenance_crop_of_the_callers_own_image_is_not_laundered(sandbox: Path) -> None:
    async with client_of("vuln-provenance", sandbox) as client:
        await call(client, "load_image", {"image_b64": PLAIN}, scope="run-1")
        own = await call(client, "crop_latest", {"box": [0, 0, 4, 4]}, scope="run-1")

    caption = own.content[1]
    assert isinstance(caption, TextContent)
    assert json.loads(caption.text) == {"source": "your upload"}
    assert Ledger(sandbox).entries() == []


@pytest.mark.anyio
async def test_coercion_reads_plain_digits_quietly_and_names_the_overflowing_argument(sandbox: Path) -> None:
    async with client_of("vuln-coercion", sandbox) as client:
        plain = payload(
            await call(client, "resize", {"image_b64": PLAIN, "width": "8", "height": "6", "output": "a.png"})
        )
        overflow = await call(
            client, "resize", {"image_b64": PLAIN, "width": "8", "height": "1e309", "output": "a.png"}
        )

    assert plain == {"path": "a.png", "width": 8, "height": 6}
    assert decode_image((sandbox / "a.png").read_bytes()).shape == (6, 8, 3)
    assert overflow.is_error
    assert isinstance(overflow.content[0], TextContent)
    assert overflow.content[0].text == "height: '1e309' overflows to infinity"


# --- a vulnerable server runs as a process like any other ----------------------------------------


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_vulnerable_server_runs_over_stdio_and_its_attack_lands_in_its_sandbox(sandbox: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "servers", "vuln-rce", "--transport", "stdio", "--sandbox", str(sandbox)],
        env={"TESTBED_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"},
        cwd=REPO_ROOT,
    )
    with anyio.fail_after(120):
        async with Client(params) as client:
            result = payload(await client.call_tool("convert_image", {"filename": f"{SAMPLE_FILE} && touch CANARY"}))

    assert result["attack_markers"][0]["command"] == "touch CANARY out.png"  # as the shell would run it
    assert [entry["marker"] for entry in Ledger(sandbox).entries()] == ["executed"]
    assert not (REPO_ROOT / "CANARY").exists()
    assert not (sandbox / "CANARY").exists()
