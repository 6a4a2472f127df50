"""Containment is proven, not assumed: every probe of every ``vuln-*`` server runs under the audit hook
of :mod:`testbed.security` and starts no process, compiles no attack text, opens no socket beyond
loopback, writes nothing outside its sandbox, opens nothing where the canaries lie, and leaves the
canaries' hashes unchanged, while its attack still lands (the marker is in the sandbox's ledger).
And the hook is shown to catch real escape attempts, on the test thread and on a server's worker thread."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict

from servers._tools import CallInfo, ToolDef, build_mcp_server, text_json_result
from servers.vulnerable._contain import Ledger
from servers.vulnerable.probes import ATTACK_STRINGS, PROBES, Probe, prepare_sandbox
from testbed.registry import registry
from testbed.security import CanarySet, ContainmentBreachError, Vector, contained, place_canaries
from testbed.server_config import ServerConfig
from tests._helpers import call

VULNERABLE_SERVERS = sorted(name for name in registry().servers if name.startswith("vuln-"))


@dataclass(frozen=True)
class Arena:
    """A sandbox with the probes' files in it, and canaries beside it."""

    sandbox: Path
    canaries: CanarySet


@pytest.fixture
def arena(tmp_path: Path) -> Arena:
    sandbox = tmp_path / "sandbox"
    prepare_sandbox(sandbox)
    return Arena(sandbox=sandbox.resolve(), canaries=place_canaries(tmp_path, sandbox))


@dataclass(frozen=True)
class ProbeRun:
    result: CallToolResult
    descriptions: list[str]
    """Every tool description listed after the attack (a description may change mid-run)."""

    @property
    def text(self) -> str:
        return " ".join(block.text for block in self.result.content if isinstance(block, TextContent))


async def run_probe(probe: Probe, sandbox: Path) -> ProbeRun:
    """Build each server the probe calls (all on one sandbox, as a run does) and make its calls in order."""
    config = ServerConfig(device="cpu", sandbox=sandbox)
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        result: CallToolResult | None = None
        for step in probe.steps:
            if step.server not in clients:
                built = registry().server(step.server).build(config)
                clients[step.server] = await stack.enter_async_context(Client(built))
            result = await call(clients[step.server], step.tool, step.arguments, scope=step.scope)
        listing = await clients[probe.attack.server].list_tools()
    assert result is not None
    return ProbeRun(result, [tool.description or "" for tool in listing.tools])


# --- every probe, contained -----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("probe", PROBES, ids=[probe.id for probe in PROBES])
async def test_every_probe_lands_its_attack_and_stays_contained(probe: Probe, arena: Arena) -> None:
    with contained(arena.sandbox, forbidden=arena.canaries.roots, untrusted=ATTACK_STRINGS) as guard:
        run = await run_probe(probe, arena.sandbox)

    assert [str(breach) for breach in guard.breaches] == []
    assert arena.canaries.changed() == []
    assert "internal error" not in run.text
    assert bool(run.result.is_error) is probe.expect_error, run.text
    if probe.expect_marker is not None:
        markers = [entry["marker"] for entry in Ledger(arena.sandbox).entries()]
        assert probe.expect_marker in markers
        if not probe.expect_error:
            assert probe.expect_marker in run.text  # the result tells the agent, too
    if probe.expect_text is not None:
        assert probe.expect_text in run.text or any(probe.expect_text in text for text in run.descriptions)


def test_the_probes_call_every_tool_of_every_vulnerable_server_and_cover_every_vector() -> None:
    tools = {(name, tool.name) for name in VULNERABLE_SERVERS for tool in registry().server(name).tools}
    probed = {(step.server, step.tool) for probe in PROBES for step in probe.steps}

    assert len(VULNERABLE_SERVERS) == 11
    assert probed == tools
    assert {probe.vector for probe in PROBES} == set(Vector)


def test_nothing_a_probe_wrote_lies_outside_the_sandbox(arena: Arena, tmp_path: Path) -> None:
    import anyio

    before = {path for path in tmp_path.rglob("*") if not path.is_relative_to(arena.sandbox)}
    with contained(arena.sandbox, forbidden=arena.canaries.roots, untrusted=ATTACK_STRINGS) as guard:
        for probe in PROBES:
            anyio.run(run_probe, probe, arena.sandbox)
    after = {path for path in tmp_path.rglob("*") if not path.is_relative_to(arena.sandbox)}

    assert guard.breaches == []
    assert after == before
    escapes = [e for e in Ledger(arena.sandbox).entries() if e["marker"] == "escape_attempt"]
    assert len(escapes) == 2  # read_image_file and resize each tried, and were served a decoy inside
    assert (arena.sandbox / "decoy" / "passwd").is_file()
    assert (arena.sandbox / "decoy" / "x").is_file()


# --- the hook catches real escape attempts --------------------------------------------------------


def _write_outside(arena: Arena) -> None:
    with open(arena.canaries.roots[0].parent / "escaped.txt", "w") as escaped:
        escaped.write("out")


def _read_canary(arena: Arena) -> None:
    (arena.canaries.roots[1] / "etc" / "passwd").read_text()


def _start_process(arena: Arena) -> None:
    subprocess.run(["true"], check=False)


def _shell(arena: Arena) -> None:
    os.system("true")


def _connect_beyond_loopback(arena: Arena) -> None:
    with socket.socket() as sock:
        sock.settimeout(0.01)
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed


def _compile_attack_text(arena: Arena) -> None:
    exec(compile("x = 'touch CANARY'", "<attack>", "exec"))


ESCAPES: dict[str, tuple[Callable[[Arena], None], str]] = {
    "write-outside": (_write_outside, "open"),
    "read-canary": (_read_canary, "open"),
    "subprocess": (_start_process, "subprocess.Popen"),
    "os-system": (_shell, "os.system"),
    "socket": (_connect_beyond_loopback, "socket.connect"),
    "compile": (_compile_attack_text, "compile"),
}


@pytest.mark.parametrize("attempt", list(ESCAPES))
def test_the_hook_catches_and_stops_a_deliberate_escape_attempt(attempt: str, arena: Arena) -> None:
    escape, event = ESCAPES[attempt]

    with (
        contained(arena.sandbox, forbidden=arena.canaries.roots, untrusted=ATTACK_STRINGS) as guard,
        pytest.raises(ContainmentBreachError),
    ):
        escape(arena)

    assert [breach.event for breach in guard.breaches] == [event]
    assert not (arena.canaries.roots[0].parent / "escaped.txt").exists()
    assert arena.canaries.changed() == []


class _Nothing(BaseModel):
    model_config = ConfigDict(extra="forbid")


@pytest.mark.anyio
async def test_the_hook_catches_an_escape_made_by_a_tool_on_the_servers_worker_thread(arena: Arena) -> None:
    target = arena.canaries.roots[0] / "CANARY"

    def overwrite_canary(arguments: _Nothing, call_info: CallInfo) -> CallToolResult:
        target.write_text("pwned")
        return text_json_result({"done": True})

    escaping = build_mcp_server(
        "escaping",
        instructions="",
        tools=[ToolDef(name="escape", description="", arguments=_Nothing, handler=overwrite_canary)],
    )
    with contained(arena.sandbox, forbidden=arena.canaries.roots, untrusted=ATTACK_STRINGS) as guard:
        async with Client(escaping) as client:
            result = await call(client, "escape", {})

    assert result.is_error  # the tool boundary reported the stopped write as its crash
    assert [breach.event for breach in guard.breaches] == ["open"]
    assert str(target) in guard.breaches[0].detail
    assert arena.canaries.changed() == []


def test_outside_the_guarded_region_the_hook_stops_nothing(arena: Arena) -> None:
    with contained(arena.sandbox, forbidden=arena.canaries.roots) as guard:
        pass
    outside = arena.canaries.roots[0].parent / "after.txt"

    outside.write_text("allowed once the region is over")

    assert guard.breaches == []
    assert json.loads(json.dumps(outside.read_text())) == "allowed once the region is over"
