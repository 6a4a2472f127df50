"""Connect to a server in-process, as a stdio subprocess, or over streamable HTTP.

A registered server runs in this process or as ``python -m testbed serve NAME``;
an external one (:class:`ExternalServer`) is any MCP server: a command started
over stdio, or a URL already listening. Every connection goes through a
:class:`TapTransport`, so all of them record the same JSON-RPC messages, and
the fault injector sits at the same seam for ours and for anyone's.

Starting is bounded: a server that cannot start, exits at once, writes
something other than JSON-RPC on stdout, or never finishes ``initialize`` and
``tools/list``, is a one-line :class:`TestbedError` naming its alias within
:data:`STARTUP_TIMEOUT_S` (ours, which load models first) or
:data:`EXTERNAL_STARTUP_TIMEOUT_S` (external ones).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import mcp.types as types
import psutil
from mcp import Client, StdioServerParameters
from mcp.client._memory import InMemoryTransport
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from testbed._errors import TestbedError
from testbed.events import Direction, LoadedWeights, TruthMode
from testbed.imaging import SENT_PIXELS_VARIABLE, share_sent_pixels
from testbed.protocol import ServerTruth, declared_truth
from testbed.transport._kinds import TransportKind
from testbed.transport._recorder import MessageRecorder
from testbed.transport._tap import Hook, Item, TapTransport

__all__ = [
    "EXTERNAL_STARTUP_TIMEOUT_S",
    "STARTUP_TIMEOUT_S",
    "WEIGHTS_VARIABLES",
    "Connection",
    "ExternalServer",
    "TruthMode",
    "connect",
    "free_port",
    "served_environment",
    "server_environment",
    "wait_until_listening",
]

STARTUP_TIMEOUT_S: Final = 120.0
"""Bound on starting one of our servers until its tools are listed (it loads and warms its models first)."""
EXTERNAL_STARTUP_TIMEOUT_S: Final = 30.0
"""Bound on starting an external server (spawning its command or reaching its URL) until its tools are listed."""
WEIGHTS_VARIABLES: Final = ("TESTBED_DETECT_WEIGHTS", "TESTBED_SEGMENT_WEIGHTS")
"""Custom weights (``testbed.server_config``): a server process gets them as the testbed process has them."""
_STDERR_TAIL_BYTES: Final = 4096
_SHOWN_CHARS: Final = 120


@dataclass(frozen=True)
class ExternalServer:
    """An MCP server the testbed does not own: a command it starts over stdio, or a URL it reaches."""

    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables over the MCP SDK's minimal inherited environment (``HOME``, ``PATH``, ...)."""
    cwd: Path | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.command is None) == (self.url is None):
            raise ValueError("an external server has exactly one of command or url")

    @property
    def transport(self) -> TransportKind:
        return "stdio" if self.command is not None else "http"

    @property
    def label(self) -> str:
        """``command 'python x.py'`` or ``url http://...``."""
        return f"command {shlex.join(self.command)!r}" if self.command is not None else f"url {self.url}"


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
    """Its truth manifest; for an external server without one, what its tools declare (see ``truth_mode``)."""
    stderr_path: Path | None
    kill: Callable[[], None] | None = None
    """Kill the server process abruptly (None where there is no process of ours: in-process, or a URL)."""
    closed: bool = False
    """Set when the server was killed or its transport closed; the orchestrator then restarts it."""
    truth_mode: TruthMode = "truth"
    external: ExternalServer | None = None
    weights: dict[str, LoadedWeights] = field(default_factory=dict)
    """The weights the server was configured with, by task (set by whoever knows its configuration)."""

    @property
    def protocol_version(self) -> str | None:
        version = self.client.protocol_version
        return str(version) if version is not None else None

    def tool(self, name: str) -> types.Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)


def server_environment(sandbox: Path, device: str) -> dict[str, str]:
    """The environment a registered server's process starts with (its ``ServerConfig`` is read from it)."""
    env = {
        "TESTBED_SANDBOX": str(sandbox),
        "TESTBED_DEVICE": device,
        "PYTHONUNBUFFERED": "1",
    }
    passed_on = ("TESTBED_HOME", "TESTBED_INFERENCE_CACHE", "TESTBED_IMGSZ", "TESTBED_CONF", "HOME", "PATH")
    # PYTHONPATH: a server process must see the plug-ins its testbed process sees.
    for key in (*passed_on, *WEIGHTS_VARIABLES, "PYTHONPATH", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if key in os.environ:
            env[key] = os.environ[key]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    for key in WEIGHTS_VARIABLES:
        if env.get(key, "").strip():
            # The process may resolve a relative path against another folder one day: hand it over absolute.
            env[key] = str(Path(env[key].strip()).absolute())
    return env


_server_environment = server_environment


def served_environment(sandbox: Path, device: str) -> dict[str, str]:
    """A registered server process's environment, told where the scenes this process sends are left as pixels."""
    return {**server_environment(sandbox, device), SENT_PIXELS_VARIABLE: str(share_sent_pixels())}


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


def _resolve_program(alias: str, external: ExternalServer) -> str:
    """The command's executable as a path, checked before anything starts.

    Raises:
        TestbedError: it is not found (on ``PATH``, or at the path given) or not executable.
    """
    assert external.command is not None
    program = external.command[0]
    if os.sep in program or (os.altsep and os.altsep in program):
        path = Path(program)
        if not path.is_absolute():
            path = (external.cwd or Path.cwd()) / path
        if not path.is_file() or not os.access(path, os.X_OK):
            problem = "not an executable file" if path.exists() else "not found"
            raise TestbedError(f"server {alias!r} ({external.label}, stdio) cannot start: {path} is {problem}")
        return str(path)
    search = external.env.get("PATH", os.environ.get("PATH", os.defpath))
    found = shutil.which(program, path=search)
    if found is None:
        raise TestbedError(f"server {alias!r} ({external.label}, stdio) cannot start: command {program!r} not found")
    return found


@dataclass(frozen=True)
class _Source:
    """Where one connection's transport comes from."""

    alias: str
    server: str
    transport: TransportKind
    in_process_factory: Any
    replay_factory: Callable[[], Any] | None
    external: ExternalServer | None


@dataclass(frozen=True)
class _Opened:
    """A transport not yet wrapped by the taps, how to kill its process, and where its stderr goes."""

    inner: Any
    kill: Callable[[], None] | None = None
    stderr: Path | None = None


async def _open(
    stack: AsyncExitStack,
    source: _Source,
    *,
    stderr_path: Path,
    sandbox: Path,
    device: str,
    bound: float,
    started: Callable[[], bool],
) -> _Opened:
    """Open the transport to one server: a recording, an external command or URL, or a registered server
    in process, as a stdio subprocess, or as an HTTP subprocess (``stack`` owns what must be closed)."""
    alias, server, external = source.alias, source.server, source.external
    if source.replay_factory is not None:
        return _Opened(source.replay_factory())
    if external is not None and external.command is not None:
        program = _resolve_program(alias, external)
        errlog = stack.enter_context(stderr_path.open("a"))
        marker = f"{alias}-{os.getpid()}-{next(_markers)}"
        params = StdioServerParameters(
            command=program,
            args=list(external.command[1:]),
            env={**external.env, _MARKER_VARIABLE: marker},
            cwd=external.cwd,
        )
        kill = functools.partial(_kill_marked_child, marker)
        return _Opened(_killed_unless_started(stdio_client(params, errlog=errlog), kill, started), kill, stderr_path)
    if external is not None:
        assert external.url is not None
        return _Opened(streamable_http_client(external.url))
    if source.transport == "inprocess":
        if source.in_process_factory is None:
            raise TestbedError(f"server {alias!r}: no in-process factory for {server!r}")
        return _Opened(InMemoryTransport(source.in_process_factory()))
    if source.transport == "stdio":
        errlog = stack.enter_context(stderr_path.open("a"))
        marker = f"{alias}-{os.getpid()}-{next(_markers)}"
        environment = {**served_environment(sandbox, device), _MARKER_VARIABLE: marker}
        params = StdioServerParameters(
            command=sys.executable, args=_server_command(server, "stdio", sandbox, device)[1:], env=environment
        )
        kill = functools.partial(_kill_marked_child, marker)
        return _Opened(_killed_unless_started(stdio_client(params, errlog=errlog), kill, started), kill, stderr_path)
    if source.transport == "http":
        port = free_port()
        log_handle = stack.enter_context(stderr_path.open("ab"))
        process = subprocess.Popen(
            _server_command(server, "http", sandbox, device, port),
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=log_handle,
            env=served_environment(sandbox, device),
        )
        stack.callback(_stop, process)
        await wait_until_listening(port, process, name=server, log=stderr_path, timeout_s=bound)
        return _Opened(streamable_http_client(f"http://127.0.0.1:{port}/mcp"), process.kill, stderr_path)
    raise TestbedError(f"server {alias!r}: unknown transport {source.transport!r}; use inprocess, stdio or http")


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
    external: ExternalServer | None = None,
    startup_timeout_s: float | None = None,
) -> AsyncIterator[Connection]:
    """Start (if needed) and connect to a server; stop it on exit.

    Args:
        alias: the server's name in the scenario.
        server: its registry name, or for an external server how records name it.
        transport: how to reach it (an external server's own transport wins).
        log_dir: where its stderr goes (``<alias>.stderr.log``).
        sandbox: the directory a server may touch.
        device: compute device for its models.
        in_process_factory: a zero-argument callable returning the server object (in-process only).
        truth: its truth manifest, if the testbed holds one; without one, what its tools declare is used.
        recorder: the recorder to keep (across restarts); a new one by default.
        fault_hook: a fault injector placed between the recorder and the server, so the
            recording holds what the client actually saw.
        replay_factory: make the transport from a recording instead of starting anything.
        external: a server the testbed does not own (a command, or a URL).
        startup_timeout_s: bound on starting it until its tools are listed; by default
            :data:`STARTUP_TIMEOUT_S`, or :data:`EXTERNAL_STARTUP_TIMEOUT_S` for an external server.

    Raises:
        TestbedError: the server cannot be started or connected to, in one line naming the alias.
    """
    recording = recorder if recorder is not None else MessageRecorder(server=alias)
    if external is not None and replay_factory is None:
        transport = external.transport
    label = external.label if external is not None else server
    bound = startup_timeout_s
    if bound is None:
        bound = EXTERNAL_STARTUP_TIMEOUT_S if external is not None else STARTUP_TIMEOUT_S
    starting = True
    not_mcp: list[str] = []
    startup = anyio.CancelScope(deadline=anyio.current_time() + bound)

    async def hook(direction: Direction, item: Item) -> list[Item]:
        recording.record(direction, item)
        if starting and external is not None and isinstance(item, Exception) and replay_factory is None:
            # A frame that is not JSON-RPC: not an MCP server (or one that logs on stdout).
            not_mcp.append(_frame_text(item))
            startup.cancel()
        return [item]

    log_dir.mkdir(parents=True, exist_ok=True)
    sandbox.mkdir(parents=True, exist_ok=True)
    stderr_path = log_dir / f"{alias}.stderr.log"
    where = f"server {alias!r} ({label}, {transport})"
    failure: str | None = None
    with startup:
        async with AsyncExitStack() as stack:
            log_start = stderr_path.stat().st_size if stderr_path.exists() else 0
            opened = await _open(
                stack,
                _Source(alias, server, transport, in_process_factory, replay_factory, external),
                stderr_path=stderr_path,
                sandbox=sandbox,
                device=device,
                bound=bound,
                started=lambda: not starting,
            )
            inner, kill, stderr = opened.inner, opened.kill, opened.stderr
            if fault_hook is not None:
                inner = TapTransport(inner, fault_hook)
            client = Client(TapTransport(inner, hook), cache=None)
            try:
                # The client's task group must outlive this block: the deadline is the enclosing scope's,
                # lifted once the tools are listed. A server that dies while starting closes its streams.
                await stack.enter_async_context(client)
                listed = list((await client.list_tools()).tools)
            except Exception as error:  # a server that cannot start surfaces here in many shapes
                said = _stderr_tail(stderr, log_start)
                hint = f"; its stderr: {said}" if said else (f" (see {stderr})" if stderr else "")
                failure = f"{where} failed to start: {_first_line(error)}{hint}"
            else:
                failure = _truth_problem(where, truth, listed) if replay_factory is None else None
            if failure is None:
                starting = False
                startup.deadline = math.inf
                mode: TruthMode = "truth"
                if truth is None:
                    dumped = [tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in listed]
                    truth = declared_truth(server, dumped)
                    mode = "declared" if truth is not None else "none"
                yield Connection(
                    alias=alias,
                    server=server,
                    transport=transport,
                    client=client,
                    recorder=recording,
                    tools=listed,
                    truth=truth,
                    stderr_path=stderr,
                    kill=kill,
                    truth_mode=mode,
                    external=external,
                )
                return
    # Raised once the transport is closed (from inside, the client's task group would wrap it in a group).
    if not_mcp:
        raise TestbedError(_not_mcp(where, not_mcp[0], transport))
    if failure is not None:
        raise TestbedError(failure)
    raise TestbedError(f"{where} did not start within {bound:.0f}s (initialize and tools/list unanswered)")


@asynccontextmanager
async def _killed_unless_started(
    transport: AbstractAsyncContextManager[Any], kill: Callable[[], None], started: Callable[[], bool]
) -> AsyncIterator[Any]:
    """A stdio transport whose process is killed at once when startup fails (a hung server would otherwise get
    the SDK's grace period after its stdin closes, past the startup bound); a started one stops gracefully."""
    async with transport as streams:
        try:
            yield streams
        finally:
            if not started():
                kill()


def _not_mcp(where: str, detail: str, transport: TransportKind) -> str:
    channel = "on stdout" if transport == "stdio" else "in its responses"
    return f"{where} failed to start: it wrote something other than JSON-RPC {channel}: {detail}"


def _frame_text(error: Exception) -> str:
    """What a server wrote that is not JSON-RPC (the line itself where the parser kept it), shortened."""
    if isinstance(error, ValidationError):
        details = error.errors(include_url=False)
        written = details[0].get("input") if details else None
        if isinstance(written, str):
            return repr(written if len(written) <= _SHOWN_CHARS else written[: _SHOWN_CHARS - 3] + "...")
    return _first_line(error)


class _DropParseTracebacks(logging.Filter):
    """The MCP SDK logs a traceback for every stdout line that is not JSON-RPC; the tap records the frame
    (and a server that does it while starting is one error line), so the traceback only adds noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to parse JSONRPC message")


logging.getLogger("mcp.client.stdio").addFilter(_DropParseTracebacks())


def _truth_problem(where: str, truth: ServerTruth | None, listed: list[types.Tool]) -> str | None:
    """Why a truth manifest does not fit the server (it may only describe tools the server declares), or None."""
    if truth is None:
        return None
    declared = {tool.name for tool in listed}
    unknown = sorted(tool.name for tool in truth.tools if tool.name not in declared)
    if not unknown:
        return None
    return (
        f"{where}: its truth manifest describes {', '.join(map(repr, unknown))}, which the server does not "
        f"declare (it declares: {', '.join(sorted(declared)) or 'no tools'}); fix the truth file"
    )


def _stderr_tail(path: Path | None, start: int) -> str:
    """The last line a server wrote on stderr since ``start`` (what a crashing server says last), or ``""``."""
    if path is None:
        return ""
    try:
        with path.open("rb") as handle:
            handle.seek(max(start, path.stat().st_size - _STDERR_TAIL_BYTES))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _first_line(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0]}" if text else error.__class__.__name__
