"""Drive every tool of a registered server with hypothesis-generated arguments, through an in-memory MCP client."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup, TaskStatus
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CallToolResult, RequestParamsMeta, Tool

from testbed._errors import TestbedError
from testbed._seeding import derive_int_seed
from testbed.fuzz._classify import Outcome, Verdict, classify_result
from testbed.fuzz._payloads import FUZZ_MAX_PIXELS
from testbed.fuzz._strategies import arguments_strategy, meta_strategy
from testbed.registry import registry
from testbed.server_config import ServerConfig

__all__ = ["DEFAULT_TIMEOUT_S", "Failure", "ServerTally", "fuzz_built", "fuzz_server", "fuzz_servers"]

DEFAULT_TIMEOUT_S = 10.0
"""A call not answered within this many seconds counts as a hang."""

_EXAMPLES_KEPT_PER_SERVER = 40
_PREVIEW = 160


@dataclass(frozen=True)
class Failure:
    """One failed call, kept as an example: the tool, what it was sent and what came back."""

    outcome: Outcome
    tool: str
    arguments: str
    """A shortened ``repr`` of the arguments."""
    message: str
    cause: str | None = None
    """The exception the server logged for it, when it logged one (``ValueError: ...``)."""


@dataclass
class ServerTally:
    """What fuzzing one server came to."""

    server: str
    counts: Counter[Outcome] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    """One example of each distinct failure (message and logged cause), the first few of them."""
    seconds: float = 0.0
    calls_digest: str = ""
    """A sha256 over every call made, in order: equal seeds give equal digests."""

    @property
    def calls(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return sum(count for outcome, count in self.counts.items() if outcome.failed)


class _LoggedErrors(logging.Handler):
    """Keeps the last error a server logged (it logs its tracebacks rather than raising them)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            self.last = _preview(f"{type(error).__name__}: {error}")
        else:
            self.last = _preview(record.getMessage())


@contextmanager
def _captured_logs() -> Iterator[_LoggedErrors]:
    """Route the root logger to a capture while fuzzing: thousands of expected tracebacks would bury the table."""
    root = logging.getLogger()
    capture = _LoggedErrors()
    saved = root.handlers[:]
    root.handlers[:] = [capture]
    try:
        yield capture
    finally:
        root.handlers[:] = saved


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 3] + "..."


class _Session:
    """An in-memory client of one server, replaced by a fresh one after a crash or a hang.

    Each client lives in a task of its own (an MCP client must be closed by the task that
    opened it); an abandoned one closes in the background while the next call goes on.
    """

    def __init__(self, server: object, timeout_s: float, tasks: TaskGroup) -> None:
        self._server = server
        self._properties: dict[str, tuple[str, ...]] = {}
        self._timeout_s = timeout_s
        self._tasks = tasks
        self._client: tuple[Client, anyio.Event] | None = None

    async def _hold(self, *, task_status: TaskStatus[tuple[Client, anyio.Event]]) -> None:
        release = anyio.Event()
        async with Client(cast(Any, self._server), cache=None) as client:
            task_status.started((client, release))
            await release.wait()

    async def _current(self) -> Client:
        if self._client is None:
            self._client = await self._tasks.start(self._hold)
        return self._client[0]

    async def list_tools(self) -> list[Tool]:
        """The server's tools (``tools/list``); their properties are the names an error may start with."""
        with anyio.fail_after(self._timeout_s):
            tools = list((await (await self._current()).list_tools()).tools)
        self._properties = {tool.name: tuple(tool.input_schema.get("properties", {})) for tool in tools}
        return tools

    def release(self) -> None:
        """Let the current client close (in its own task); the next call opens a fresh one."""
        if self._client is not None:
            self._client[1].set()
            self._client = None

    async def call(self, tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None) -> Verdict:
        # The call runs in a task of its own that is left behind, not cancelled, when it overruns: the SDK
        # does not give up on an in-memory request while the server is still busy with it.
        client = await self._current()
        answer: list[CallToolResult | Exception] = []
        answered = anyio.Event()

        async def attempt() -> None:
            try:
                answer.append(await client.call_tool(tool, arguments, meta=cast(RequestParamsMeta | None, meta)))
            except Exception as error:  # anything reaching the client is the server's failure, never ours to raise
                answer.append(error)
            finally:
                answered.set()

        self._tasks.start_soon(attempt)
        with anyio.move_on_after(self._timeout_s):
            await answered.wait()
        if not answer:
            self.release()
            return Verdict(Outcome.HANG, f"no answer within {self._timeout_s:g} s")
        result = answer[0]
        if isinstance(result, Exception):
            self.release()
            return Verdict(Outcome.CRASH, _preview(f"{type(result).__name__}: {result}"))
        return classify_result(result, (*arguments, *self._properties.get(tool, ())))


def _split(total: int, parts: int) -> list[int]:
    if parts == 0:
        return []
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


@dataclass
class _Recorder:
    """Tallies each call's verdict, keeps examples of failures and hashes every call made."""

    tally: ServerTally
    logs: _LoggedErrors
    digest: Any
    """A running ``hashlib.sha256`` of the calls."""

    def before(self, tool: str, arguments: dict[str, Any], meta: dict[str, Any] | None) -> None:
        self.digest.update(repr((tool, arguments, meta)).encode())
        self.logs.last = None

    def after(self, tool: str, arguments: dict[str, Any], verdict: Verdict) -> None:
        tally, cause = self.tally, self.logs.last
        tally.counts[verdict.outcome] += 1
        if not verdict.outcome.failed:
            return
        seen = any(failure.message == verdict.message and failure.cause == cause for failure in tally.failures)
        if not seen and len(tally.failures) < _EXAMPLES_KEPT_PER_SERVER:
            tally.failures.append(Failure(verdict.outcome, tool, _preview(repr(arguments)), verdict.message, cause))


def _draw_calls(tool: Tool, count: int, tool_seed: int) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The ``count`` (arguments, meta) pairs hypothesis draws for ``tool`` from ``tool_seed``, in order.

    Drawn before any is sent: with the generate phase only, what hypothesis draws does not depend on what the
    calls return, and the calls then run on the event loop without a thread handoff each.
    """
    drawn_calls: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @hypothesis_seed(tool_seed)
    @given(st.tuples(arguments_strategy(tool.input_schema), meta_strategy()))
    def draw(drawn: tuple[dict[str, Any], dict[str, Any] | None]) -> None:
        if len(drawn_calls) < count:
            drawn_calls.append(drawn)

    if count > 0:
        draw()
    return drawn_calls


async def fuzz_built(
    name: str, server: object, *, calls: int, seed: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S
) -> ServerTally:
    """Fuzz an already built MCP server object (``MCPServer`` or low-level ``Server``) called ``name``.

    Its tools come from its own ``tools/list``; ``calls`` are spread evenly over them.
    """
    tally = ServerTally(name)
    digest = hashlib.sha256()
    started = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        session = _Session(server, timeout_s, tasks)
        try:
            tools = await session.list_tools()
            with _captured_logs() as logs:
                recorder = _Recorder(tally, logs, digest)
                for tool, count in zip(tools, _split(calls, len(tools)), strict=True):
                    tool_seed = derive_int_seed(seed, "fuzz", name, tool.name)
                    drawn_calls = await anyio.to_thread.run_sync(partial(_draw_calls, tool, count, tool_seed))
                    for arguments, meta in drawn_calls:
                        recorder.before(tool.name, arguments, meta)
                        recorder.after(tool.name, arguments, await session.call(tool.name, arguments, meta))
        finally:
            session.release()
    tally.seconds = time.perf_counter() - started
    tally.calls_digest = digest.hexdigest()
    return tally


def fuzz_server(
    name: str,
    *,
    calls: int,
    seed: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    sandbox: Path | None = None,
) -> ServerTally:
    """Fuzz the registered server ``name`` with ``calls`` calls, spread evenly over its tools.

    The same ``seed`` on the same code gives the same calls (hypothesis also draws
    constants it mines from the project's own modules, so a code change may change them). The server is built
    with a small ``max_pixels`` (:data:`~testbed.fuzz.FUZZ_MAX_PIXELS`) so that an
    over-the-limit image is cheap to send; its models are loaded before the first call.

    Args:
        name: a registered server's name.
        calls: how many calls in all.
        seed: the experiment seed; each tool's hypothesis seed derives from it.
        timeout_s: a call unanswered this long counts as a hang.
        sandbox: the server's sandbox directory; a fresh temporary one when ``None``.

    Raises:
        TestbedError: unknown server, or ``calls`` negative.
    """
    if calls < 0:
        raise TestbedError(f"calls: must be 0 or more, got {calls}")
    plugin = registry().server(name)
    with tempfile.TemporaryDirectory(prefix="testbed-fuzz-") as scratch:
        config = ServerConfig.from_env(sandbox=sandbox or Path(scratch), max_pixels=FUZZ_MAX_PIXELS)
        if plugin.preload is not None:
            plugin.preload(config)
        run = partial(fuzz_built, name, plugin.build(config), calls=calls, seed=seed, timeout_s=timeout_s)
        return anyio.run(run)


def fuzz_servers(
    names: Sequence[str] = (),
    *,
    calls: int,
    seed: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[ServerTally]:
    """Fuzz each named server (every registered server, plug-ins included, when none is named)."""
    chosen = list(names) or list(registry().servers)
    for name in chosen:
        registry().server(name)  # an unknown name fails before any server is fuzzed
    return [fuzz_server(name, calls=calls, seed=seed, timeout_s=timeout_s) for name in chosen]
