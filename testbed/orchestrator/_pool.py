"""The experiment's servers: started once, reused across runs, restarted when one dies.

The pool starts whatever a resolver (:mod:`testbed.orchestrator._resolvers`) made of each alias:
a server built in process, a process it starts, a URL it reaches, or a recording it replays. It
never looks a server up itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from testbed.defenses import DefenseGuard
from testbed.events import SERVER_LOGS_DIR, LoadedWeights
from testbed.protocol import MemoryScope, SemanticRole, ServerTruth
from testbed.transport import Connection, ExternalServer, Hook, MessageRecorder, TransportKind, connect

__all__ = ["ServerPool", "ServerSpec"]


@dataclass(frozen=True)
class ServerSpec:
    """How to (re)start one server alias: exactly one of ``factory`` (in process, or the registered name
    started as its own process), ``external`` or ``replay_factory`` says where it comes from."""

    alias: str
    server: str
    """How records name it: the registered name, or the external command or URL."""
    transport: TransportKind
    truth: ServerTruth | None
    factory: Callable[[], Any] | None = None
    """Builds the server object in process (registered servers)."""
    external: ExternalServer | None = None
    replay_factory: Callable[[], Any] | None = None
    """Makes a transport that answers from a recording."""
    weights: dict[str, LoadedWeights] = field(default_factory=dict)
    """The weights the server is configured with (computed from the configuration it gets)."""


class ServerPool:
    """Owns one connection per alias; ``restart`` replaces a dead one with a fresh process.

    Each connection lives in its own task, so any one can be closed and restarted
    without disturbing the others (anyio scopes must close in the task, and the
    order, they were opened). Use as ``async with ServerPool(...) as pool``.
    """

    def __init__(self, *, out_dir: Path, sandbox: Path, device: str) -> None:
        self.out_dir = out_dir
        self.sandbox = sandbox
        self.device = device
        self.connections: dict[str, Connection] = {}
        self.recorders: dict[str, MessageRecorder] = {}
        self.restart_requested: set[str] = set()
        self.close_errors: dict[str, str] = {}
        self.defenses = DefenseGuard()
        """The scenario's defenses, enforced on every run the pool serves (none unless the runner sets them)."""
        self._specs: dict[str, ServerSpec] = {}
        self._hooks: dict[str, Callable[[], Hook] | None] = {}
        self._stops: dict[str, anyio.Event] = {}
        self._done: dict[str, anyio.Event] = {}
        self._group: TaskGroup | None = None

    async def __aenter__(self) -> ServerPool:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.aclose()
        finally:
            assert self._group is not None
            await self._group.__aexit__(None, None, None)
            self._group = None

    def add(self, spec: ServerSpec, *, fault_hook: Callable[[], Hook] | None = None) -> None:
        """Add a resolved server alias; ``fault_hook`` makes the fault injector of each (re)started connection
        (a killed connection's injector stays closed)."""
        self._specs[spec.alias] = spec
        self._hooks[spec.alias] = fault_hook
        self.recorders[spec.alias] = MessageRecorder(server=spec.alias)

    def may_read_files(self) -> bool:
        """Whether a server may open a run's scene from the sandbox: one whose truth manifest has a tool taking
        a file path, or one the testbed holds no manifest for (what it declares proves nothing)."""
        return any(_may_read_files(connection) for connection in self.connections.values())

    async def start(self, alias: str) -> Connection:
        if self._group is None:
            raise RuntimeError("use the server pool as an async context manager")
        connection: Connection = await self._group.start(self._hold, alias)
        self.connections[alias] = connection
        return connection

    async def _hold(self, alias: str, *, task_status: TaskStatus[Connection]) -> None:
        spec = self._specs[alias]
        stop, done = anyio.Event(), anyio.Event()
        self._stops[alias], self._done[alias] = stop, done
        started = False
        try:
            async with connect(
                alias,
                spec.server,
                spec.transport,
                log_dir=self.out_dir / SERVER_LOGS_DIR,
                sandbox=self.sandbox,
                device=self.device,
                in_process_factory=spec.factory,
                truth=spec.truth,
                recorder=self.recorders[alias],
                fault_hook=hook() if (hook := self._hooks[alias]) is not None else None,
                replay_factory=spec.replay_factory,
                external=spec.external,
            ) as connection:
                connection.weights = dict(spec.weights)
                started = True
                task_status.started(connection)
                await stop.wait()
        except Exception as error:
            if not started:
                raise  # a server that cannot start: the caller of start() gets the error
            # A killed server's transport rarely closes cleanly; keep why, the pool goes on.
            self.close_errors[alias] = f"{error.__class__.__name__}: {error}"
        finally:
            done.set()

    async def start_all(self) -> None:
        for alias in self._specs:
            await self.start(alias)

    async def kill(self, alias: str) -> bool:
        """Kill a server's process mid-flight (a process fault). False where there is no process to kill."""
        connection = self.connections.get(alias)
        if connection is None or connection.kill is None:
            return False
        connection.kill()
        connection.closed = True
        return True

    async def request_restart(self, alias: str) -> None:
        """Restart a server once the current step is over (a scheduled, tolerable restart)."""
        self.restart_requested.add(alias)

    async def restart(self, alias: str) -> Connection:
        """Stop (whatever is left of) a server and start it again."""
        await self._close(alias)
        return await self.start(alias)

    async def _close(self, alias: str) -> None:
        self.connections.pop(alias, None)
        stop, done = self._stops.pop(alias, None), self._done.pop(alias, None)
        if stop is not None and done is not None:
            stop.set()
            await done.wait()

    async def aclose(self) -> None:
        for alias in list(self._stops):
            await self._close(alias)


def _may_read_files(connection: Connection) -> bool:
    truth = connection.truth
    if connection.truth_mode != "truth" or truth is None:
        return True
    return any(MemoryScope.FILE in tool.accepts or SemanticRole.IMAGE_PATH in tool.inputs for tool in truth.tools)
