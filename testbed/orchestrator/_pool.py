"""The experiment's servers: started once, reused across runs, restarted when one dies."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from testbed.events import SERVER_LOGS_DIR
from testbed.protocol import ServerTruth
from testbed.registry import ServerPlugin, registry
from testbed.server_config import ServerConfig
from testbed.transport import Connection, Hook, MessageRecorder, TransportKind, connect


@dataclass(frozen=True)
class ServerSpec:
    """How to (re)start one server alias."""

    alias: str
    server: str
    transport: TransportKind
    truth: ServerTruth | None
    factory: Callable[[], Any] | None
    fault_hook: Callable[[], Hook] | None
    """Makes the fault injector of each (re)started connection (a killed connection's injector stays closed)."""
    replay_factory: Callable[[], Any] | None


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
        self._specs: dict[str, ServerSpec] = {}
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

    def add(
        self,
        alias: str,
        server: str,
        transport: TransportKind,
        *,
        fault_hook: Callable[[], Hook] | None = None,
        replay_factory: Callable[[], Any] | None = None,
        truth: ServerTruth | None = None,
    ) -> None:
        """Add a server alias; a replayed one (``replay_factory``) needs no registered server, only its
        recorded ``truth``."""
        factory: Callable[[], Any] | None = None
        if replay_factory is None:
            plugin = registry().server(server)
            config = ServerConfig.from_env(device=self.device, sandbox=self.sandbox)
            truth = plugin.truth
            factory = functools.partial(_built_and_loaded, plugin, config)
        self._specs[alias] = ServerSpec(
            alias=alias,
            server=server,
            transport=transport,
            truth=truth,
            factory=factory,
            fault_hook=fault_hook,
            replay_factory=replay_factory,
        )
        self.recorders[alias] = MessageRecorder(server=alias)

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
                fault_hook=spec.fault_hook() if spec.fault_hook is not None else None,
                replay_factory=spec.replay_factory,
            ) as connection:
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


def _built_and_loaded(plugin: ServerPlugin, config: ServerConfig) -> Any:
    """An in-process server whose model is loaded and warm, like a stdio server's before it serves."""
    server = plugin.build(config)
    if plugin.preload is not None:
        plugin.preload(config)
    return server
