"""Connect to a reference server in-process, as a stdio subprocess, or over streamable HTTP.

Every connection goes through a :class:`TapTransport`, so all three record
the same JSON-RPC messages.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import psutil
from mcp import Client, StdioServerParameters
from mcp.client._memory import InMemoryTransport
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from testbed._errors import TestbedError
from testbed.events import Direction
from testbed.protocol import ServerTruth
from testbed.transport._kinds import TransportKind
from testbed.transport._recorder import MessageRecorder
from testbed.transport._tap import Hook, Item, TapTransport

STARTUP_TIMEOUT_S = 120.0


@dataclass
class Connection:
    """A live client connection to one server, with its recorder and what it listed."""

    alias: str
    server: str
    transport: TransportKind
    client: Client
    recorder: MessageRecorder
    tools: list[types.Tool]
    truth: ServerTruth | None
    stderr_path: Path | None
    kill: Callable[[], None] | None = None
    """Kill the server process abruptly (None for in-process servers, which have no process)."""
    closed: bool = False
    """Set when the server was killed or its transport closed; the orchestrator then restarts it."""

    @property
    def protocol_version(self) -> str | None:
        version = self.client.protocol_version
        return str(version) if version is not None else None

    def tool(self, name: str) -> types.Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)


def _server_environment(sandbox: Path, device: str) -> dict[str, str]:
    env = {
        "TESTBED_SANDBOX": str(sandbox),
        "TESTBED_DEVICE": device,
        "PYTHONUNBUFFERED": "1",
    }
    passed_on = ("TESTBED_HOME", "TESTBED_INFERENCE_CACHE", "TESTBED_IMGSZ", "TESTBED_CONF", "HOME", "PATH")
    for key in (*passed_on, "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _server_command(name: str, transport: str, sandbox: Path, device: str, port: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "testbed", "serve", name, "--transport", transport, "--sandbox", str(sandbox)]
    command += ["--device", device]
    if port is not None:
        command += ["--host", "127.0.0.1", "--port", str(port)]
    return command


_MARKER_VARIABLE = "TESTBED_SERVER_MARKER"
_markers = itertools.count()


def _kill_marked_child(marker: str) -> None:
    """Kill the stdio server process started with ``marker`` in its environment (SIGKILL, no cleanup)."""
    for child in psutil.Process().children(recursive=True):
        try:
            if child.environ().get(_MARKER_VARIABLE) == marker:
                child.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_until_listening(
    port: int,
    process: subprocess.Popen[bytes],
    *,
    name: str,
    log: Path | None = None,
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> None:
    """Poll 127.0.0.1:``port`` until a server process accepts connections.

    Raises:
        TestbedError: the process exited first, or nothing listened within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    where = f" (see {log})" if log is not None else ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TestbedError(f"server {name!r} exited during startup with code {process.returncode}{where}")
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            await anyio.sleep(0.1)
            continue
        await stream.aclose()
        return
    raise TestbedError(f"server {name!r} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@asynccontextmanager
async def connect(
    alias: str,
    server: str,
    transport: TransportKind,
    *,
    log_dir: Path,
    sandbox: Path,
    device: str = "auto",
    in_process_factory: Any = None,
    truth: ServerTruth | None = None,
    recorder: MessageRecorder | None = None,
    fault_hook: Hook | None = None,
    replay_factory: Callable[[], Any] | None = None,
) -> AsyncIterator[Connection]:
    """Start (if needed) and connect to a server; stop it on exit.

    Args:
        alias: the server's name in the scenario.
        server: its registry name.
        transport: how to reach it.
        log_dir: where its stderr goes (``<alias>.stderr.log``).
        sandbox: the directory a server may touch.
        device: compute device for its models.
        in_process_factory: a zero-argument callable returning the server object (in-process only).
        truth: its truth manifest, if the testbed owns it.
        recorder: the recorder to keep (across restarts); a new one by default.
        fault_hook: a fault injector placed between the recorder and the server, so the
            recording holds what the client actually saw.
        replay_factory: make the transport from a recording instead of starting anything.

    Raises:
        TestbedError: the server cannot be started or connected to.
    """
    recording = recorder if recorder is not None else MessageRecorder(server=alias)

    async def hook(direction: Direction, item: Item) -> list[Item]:
        recording.record(direction, item)
        return [item]

    log_dir.mkdir(parents=True, exist_ok=True)
    sandbox.mkdir(parents=True, exist_ok=True)
    stderr_path = log_dir / f"{alias}.stderr.log"
    async with AsyncExitStack() as stack:
        inner: Any
        kill: Callable[[], None] | None = None
        if replay_factory is not None:
            inner = replay_factory()
            stderr: Path | None = None
        elif transport == "inprocess":
            if in_process_factory is None:
                raise TestbedError(f"server {alias!r}: no in-process factory for {server!r}")
            inner = InMemoryTransport(in_process_factory())
            stderr = None
        elif transport == "stdio":
            errlog = stack.enter_context(stderr_path.open("a"))
            marker = f"{alias}-{os.getpid()}-{next(_markers)}"
            environment = {**_server_environment(sandbox, device), _MARKER_VARIABLE: marker}
            params = StdioServerParameters(
                command=sys.executable, args=_server_command(server, "stdio", sandbox, device)[1:], env=environment
            )
            inner = stdio_client(params, errlog=errlog)
            stderr = stderr_path
            kill = functools.partial(_kill_marked_child, marker)
        elif transport == "http":
            port = free_port()
            log_handle = stack.enter_context(stderr_path.open("ab"))
            process = subprocess.Popen(
                _server_command(server, "http", sandbox, device, port),
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=log_handle,
                env=_server_environment(sandbox, device),
            )
            stack.callback(_stop, process)
            kill = process.kill
            await wait_until_listening(port, process, name=server, log=stderr_path)
            inner = streamable_http_client(f"http://127.0.0.1:{port}/mcp")
            stderr = stderr_path
        else:
            raise TestbedError(f"server {alias!r}: unknown transport {transport!r}; use inprocess, stdio or http")
        if fault_hook is not None:
            inner = TapTransport(inner, fault_hook)
        client = Client(TapTransport(inner, hook), cache=None)
        try:
            # The client's task group must outlive this block, so only the listing gets a deadline;
            # a server that dies while starting closes its streams and fails the handshake.
            await stack.enter_async_context(client)
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                listed = await client.list_tools()
        except TimeoutError:
            raise TestbedError(
                f"server {alias!r} ({server}, {transport}) did not answer within {STARTUP_TIMEOUT_S:.0f}s"
            ) from None
        except Exception as error:  # a server that cannot start surfaces here in many shapes
            detail = _first_line(error)
            hint = f" (see {stderr})" if stderr else ""
            raise TestbedError(f"server {alias!r} ({server}, {transport}) failed to start: {detail}{hint}") from None
        yield Connection(
            alias=alias,
            server=server,
            transport=transport,
            client=client,
            recorder=recording,
            tools=list(listed.tools),
            truth=truth,
            stderr_path=stderr,
            kill=kill,
        )


def _first_line(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0]}" if text else error.__class__.__name__
