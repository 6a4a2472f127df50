"""Run one registered server until it is stopped: over stdio, or over streamable HTTP at ``/mcp``.

Built-in and plug-in servers start the same way (``testbed serve NAME``), so a
plug-in server runs as its own process exactly like a built-in."""

from __future__ import annotations

import errno
import json
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import uvicorn
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
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


async def _serve_stdio(server: MCPServer | Server) -> None:
    if isinstance(server, MCPServer):
        await server.run_stdio_async()
        return
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


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
