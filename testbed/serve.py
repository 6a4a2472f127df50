"""Run one registered server until it is stopped: over stdio, or over streamable HTTP at ``/mcp``.

Built-in and plug-in servers start the same way (``testbed serve NAME``), so a
plug-in server runs as its own process exactly like a built-in."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import anyio
import mcp_types
import uvicorn
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.message import SessionMessage
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from testbed._errors import TestbedError
from testbed.registry import registry
from testbed.server_config import ServerConfig
from testbed.transport import SERVED_TRANSPORTS, ServedTransport

__all__ = ["DEFAULT_MAX_BODY", "HTTP_PATH", "body_too_large_message", "serve"]

HTTP_PATH = "/mcp"
"""Where the streamable HTTP endpoint is mounted."""
DEFAULT_MAX_BODY: int = DEFAULT_MAX_REQUEST_BODY_SIZE
"""Largest HTTP request body a served server accepts by default (the MCP SDK's default, 4 MiB)."""
STDIO_PIPE_BYTES = 1 << 20
"""Capacity asked for the stdin and stdout pipes of a server served over stdio (Linux's default cap for
unprivileged processes, ``/proc/sys/fs/pipe-max-size``)."""


def serve(
    name: str,
    *,
    transport: ServedTransport,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServerConfig,
    max_body: int = DEFAULT_MAX_BODY,
) -> None:
    """Build the server called ``name`` and serve it until it is stopped (blocking).

    Over stdio it stops when its stdin closes. Over HTTP it listens on
    ``http://HOST:PORT/mcp`` (``port=0`` picks a free port; the URL is printed on
    stderr). It stops cleanly, returning, on SIGINT or SIGTERM.

    Args:
        name: a registered server's name (``testbed plugins`` lists them).
        transport: ``"stdio"`` or ``"http"`` (streamable HTTP).
        host: interface to listen on (HTTP only).
        port: TCP port to listen on (HTTP only).
        config: models, inference and sandbox settings.
        max_body: the largest request body accepted over HTTP, in bytes; a larger one is refused
            (413) with a JSON-RPC error saying the limit and the way around it.

    Raises:
        TestbedError: unknown server or transport, ``max_body`` not positive, or the port cannot be
            listened on (``"port P on HOST is in use"``).
    """
    plugin = registry().server(name)
    if transport not in SERVED_TRANSPORTS:
        raise TestbedError(f"unknown transport {transport!r}; expected 'stdio' or 'http'")
    if max_body <= 0:
        raise TestbedError(f"max_body: must be a positive number of bytes, got {max_body}")
    server = plugin.build(config)
    if plugin.preload is not None:
        plugin.preload(config)
    listener = _listen(host, port) if transport == "http" else None
    try:
        with _sigterm_as_interrupt():
            if listener is None:
                anyio.run(_serve_stdio, server)
            else:
                anyio.run(_serve_http, server, listener, host, name, max_body)
    except KeyboardInterrupt:
        return
    finally:
        if listener is not None:
            listener.close()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like SIGINT while serving, so both end in a clean return (exit status 0).

    uvicorn handles both signals itself while it serves, then re-raises the one it got;
    this makes the re-raised SIGTERM a ``KeyboardInterrupt`` instead of an abrupt kill.
    Signal handlers can only be set from the main thread; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _widen_pipes(descriptors: tuple[int, ...] = (0, 1), size: int = STDIO_PIPE_BYTES) -> None:
    """Grow the pipes a stdio server talks through, where they are pipes and the platform allows it.

    A by-value image is a line of hundreds of kilobytes: through the default 64 KiB pipe, writer and
    reader take turns several times per message, and on a busy machine each turn waits for a time slice.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if set_size is None:
        return
    for descriptor in descriptors:
        try:
            fcntl.fcntl(descriptor, set_size, size)
        except OSError:
            continue  # not a pipe, or over the system's cap: the default pipe still works


async def _serve_stdio(server: MCPServer | Server) -> None:
    _widen_pipes()
    # MCPServer keeps its low-level server private; the SDK's own in-memory transport reads it the same way.
    lowlevel: Server | None = server if isinstance(server, Server) else getattr(server, "_lowlevel_server", None)
    wire = _claim_pipes() if lowlevel is not None else None
    if wire is not None:
        assert lowlevel is not None
        try:
            async with _pipe_streams(*wire) as (read_stream, write_stream):
                await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
        finally:
            _release_pipes(*wire)
        return
    if isinstance(server, MCPServer):
        await server.run_stdio_async()
        return
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _claim_pipes() -> tuple[int, int] | None:
    """Take stdin and stdout for the wire when both are pipes or sockets (``None`` otherwise: the SDK's
    threaded transport serves them); as the SDK does, fd 0 then reads the null device and fd 1 writes
    to stderr, so what a handler prints never reaches the wire."""
    if os.name != "posix" or not all(_is_pipe(descriptor) for descriptor in (0, 1)):
        return None
    sys.stdout.flush()
    wire_in, wire_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return wire_in, wire_out


def _release_pipes(wire_in: int, wire_out: int) -> None:
    """Give fds 0 and 1 back their pipes (blocking again, as they came)."""
    for wire, descriptor in ((wire_in, 0), (wire_out, 1)):
        try:
            os.set_blocking(wire, True)
            os.dup2(wire, descriptor)
        except OSError:
            continue  # already closed: the process is ending
        finally:
            with suppress(OSError):
                os.close(wire)


def _is_pipe(descriptor: int) -> bool:
    try:
        mode = os.fstat(descriptor).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _WriteProtocol(asyncio.Protocol):
    """Flow control for the stdout pipe: a write waits while the pipe is full."""

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = False

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._writable.set()

    async def drain(self) -> None:
        await self._writable.wait()


_LINE_LIMIT = 1 << 31
"""No bound on a message's size beyond the SDK's own (it has none over stdio)."""
_FLUSH_TIMEOUT_S = 2.0
"""How long the last answers may take to leave through the pipe when serving ends."""

_WireStreams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]


@asynccontextmanager
async def _pipe_streams(wire_in: int, wire_out: int) -> AsyncIterator[_WireStreams]:
    """Newline-delimited JSON-RPC over the stdio pipes, read and written by the event loop itself.

    The SDK's stdio transport reads each line and writes each message on a worker thread: three thread
    hand-offs per request, each a wait for a time slice on a busy machine. The messages, their framing
    and their parsing are the SDK's. The descriptors stay open when it ends.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_LINE_LIMIT)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0, closefd=False)
    )
    write_transport, protocol = await loop.connect_write_pipe(
        _WriteProtocol, os.fdopen(wire_out, "wb", buffering=0, closefd=False)
    )
    incoming_send, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_receive = anyio.create_memory_object_stream[SessionMessage](0)
    reading = anyio.CancelScope()
    written = anyio.Event()

    async def read_lines() -> None:
        with reading:
            async with incoming_send:
                while True:
                    try:
                        line = await reader.readuntil(b"\n")
                    except asyncio.IncompleteReadError as end:
                        line = end.partial  # the last line, unterminated; empty at a clean end
                    if not line:
                        return
                    await incoming_send.send(_parse(line))

    async def write_messages() -> None:
        try:
            async with outgoing_receive:
                async for message in outgoing_receive:
                    if protocol.closed:
                        return  # the client is gone
                    text = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    write_transport.write((text + "\n").encode("utf-8"))
                    await protocol.drain()
                while write_transport.get_write_buffer_size() and not protocol.closed:
                    await anyio.sleep(0.005)  # the last answers leave before the pipe is given back
        finally:
            written.set()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(read_lines)
            group.start_soon(write_messages)
            try:
                yield incoming, outgoing
            finally:
                reading.cancel()
                outgoing.close()  # the writer sends what it was handed, then ends
                incoming.close()
                with anyio.move_on_after(_FLUSH_TIMEOUT_S, shield=True):
                    await written.wait()
                group.cancel_scope.cancel()  # a client that stopped reading gets no more
    finally:
        read_transport.close()
        write_transport.abort()
        await anyio.lowlevel.cancel_shielded_checkpoint()  # the transports let go of the descriptors first


def _parse(line: bytes) -> SessionMessage | Exception:
    """One line as the SDK's stdio transport parses it (invalid UTF-8 replaced), or the error it gives."""
    adapter = mcp_types.jsonrpc_message_adapter
    try:
        # Parsed as bytes first: for valid UTF-8 that is the same message, without decoding a by-value image's
        # hundreds of kilobytes into a string the parser then reads again.
        message: Any = adapter.validate_json(line, by_name=False)
    except Exception:
        try:
            message = adapter.validate_json(line.decode("utf-8", errors="replace"), by_name=False)
        except Exception as error:  # the session reports an unparseable line; it does not end the connection
            return error
    return SessionMessage(message)


def _listen(host: str, port: int) -> socket.socket:
    """Bind a listening socket now, so a busy port is reported before anything starts."""
    if not 0 <= port <= 65535:
        raise TestbedError(f"port {port} is not between 0 and 65535")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise TestbedError(f"cannot listen on {host}: {error.strerror}") from None
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise TestbedError(f"port {port} on {host} is in use") from None
        raise TestbedError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    return listener


async def _serve_http(server: MCPServer | Server, listener: socket.socket, host: str, name: str, max_body: int) -> None:
    app = server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host, max_request_body_size=max_body)
    bound_host, bound_port = listener.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"serving {name} on http://{shown_host}:{bound_port}{HTTP_PATH}", file=sys.stderr, flush=True)
    config = uvicorn.Config(_ExplainedBodyLimit(app, max_body), log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[listener])


def body_too_large_message(max_body: int, declared: int | None = None) -> str:
    """What a client is told when its request body is over ``max_body`` bytes (``declared``: its size, if known)."""
    size = f"request body of {declared} bytes" if declared is not None else "request body"
    return (
        f"{size} is over this server's limit of {max_body} bytes; serve it with a larger limit "
        "(testbed serve --max-body BYTES), or pass the image as a file path or a handle instead of by value"
    )


class _ExplainedBodyLimit:
    """Turns the SDK's bare ``413 Request body too large`` into a JSON-RPC error that a client shows: the
    limit and the way around it. The SDK enforces the limit (``max_request_body_size``); this only words it."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self._app = app
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        refused = False

        async def explained(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 413:
                refused = True
                size = int(declared) if declared is not None and declared.isdigit() else None
                error = {"code": -32600, "message": body_too_large_message(self._max_body, size)}
                body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            elif not refused:  # the SDK's own plain-text body is dropped
                await send(message)

        await self._app(scope, receive, explained)
