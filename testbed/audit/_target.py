"""What an audit connects to, and which protocol revisions the server accepts.

Every target is an :class:`~testbed.transport.ExternalServer`: a registered
server is audited as a black box through ``python -m testbed serve NAME``
over stdio (its truth manifest is never read), exactly as any command would
be. Connecting goes through :func:`testbed.transport.connect`, whose startup
is bounded and whose failures are one-line errors.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from testbed.profile import ConventionProfile
from testbed.registry import registry
from testbed.server_config import ServerConfig
from testbed.transport import (
    EXTERNAL_STARTUP_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
    ExternalServer,
    server_environment,
)

__all__ = [
    "REVISION_MODES",
    "AuditTarget",
    "command_target",
    "in_process_target",
    "probe_revision",
    "registered_target",
    "url_target",
]

REVISION_MODES: Final[tuple[str, ...]] = ("legacy", *MODERN_PROTOCOL_VERSIONS)
"""The revisions this SDK speaks: the ``initialize`` handshake (newest ``LATEST_HANDSHAKE_VERSION``) and each
modern (``server/discover``) version."""


@dataclass(frozen=True)
class AuditTarget:
    """A server to audit and how long it may take to start."""

    label: str
    external: ExternalServer | None
    """``None`` for a server built in this process (:func:`in_process_target`)."""
    startup_timeout_s: float
    in_process: Callable[[], Any] | None = None
    """Builds the server object to connect to in memory (no process, no model load per audit)."""

    @property
    def transport(self) -> str:
        return "inprocess" if self.external is None else self.external.transport


def registered_target(name: str, *, sandbox: Path, device: str) -> AuditTarget:
    """A registered server, started as ``python -m testbed serve NAME`` over stdio.

    Raises:
        TestbedError: no server of that name is registered.
    """
    registry().server(name)
    command = (sys.executable, "-m", "testbed", "serve", name, "--transport", "stdio", "--sandbox", str(sandbox))
    external = ExternalServer(command=(*command, "--device", device), env=server_environment(sandbox, device))
    return AuditTarget(label=name, external=external, startup_timeout_s=STARTUP_TIMEOUT_S)


def in_process_target(
    name: str, *, sandbox: Path, device: str, profile: ConventionProfile | None = None
) -> AuditTarget:
    """A registered server built in this process (a parametric one following ``profile``), reached in memory.

    Its models load once per process, so many audits cost little more than their calls. Its truth manifest
    is still never read: the audit sees only what the server says.

    Raises:
        TestbedError: no server of that name is registered.
    """
    plugin = registry().server(name)
    config = ServerConfig(device=device, sandbox=sandbox, profile=profile)
    return AuditTarget(
        label=name, external=None, startup_timeout_s=STARTUP_TIMEOUT_S, in_process=lambda: plugin.build(config)
    )


def command_target(command: tuple[str, ...], *, startup_timeout_s: float = EXTERNAL_STARTUP_TIMEOUT_S) -> AuditTarget:
    external = ExternalServer(command=command, cwd=Path.cwd())
    return AuditTarget(label=external.label, external=external, startup_timeout_s=startup_timeout_s)


def url_target(url: str, *, startup_timeout_s: float = EXTERNAL_STARTUP_TIMEOUT_S) -> AuditTarget:
    external = ExternalServer(url=url)
    return AuditTarget(label=external.label, external=external, startup_timeout_s=startup_timeout_s)


async def probe_revision(target: AuditTarget, mode: str, *, errlog: Path) -> str:
    """Connect once in ``mode`` and list tools: ``ok VERSION``, or a one-line reason, within the startup bound."""
    if target.external is None:
        return "not probed: an in-process target speaks the SDK's own revision"
    try:
        with errlog.open("a") as log, anyio.fail_after(target.startup_timeout_s):
            async with Client(_transport(target.external, log), mode=mode, cache=None) as client:
                await client.list_tools()
                return f"ok {client.protocol_version}"
    except TimeoutError:
        return f"no answer within {target.startup_timeout_s:.0f}s"
    except Exception as error:  # any way a connection fails is the answer here
        return f"refused: {_first_line(error)}"


def _transport(external: ExternalServer, errlog: TextIO) -> AbstractAsyncContextManager[Any]:
    if external.command is not None:
        params = StdioServerParameters(
            command=external.command[0], args=list(external.command[1:]), env=dict(external.env), cwd=external.cwd
        )
        return stdio_client(params, errlog=errlog)
    assert external.url is not None
    return streamable_http_client(external.url)


def _first_line(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    lines = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {lines[0][:200]}" if lines else error.__class__.__name__
