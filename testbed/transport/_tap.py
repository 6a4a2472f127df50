"""A transport wrapper that sees every JSON-RPC message in both directions.

It proxies the wrapped transport's streams (no pump tasks), so message order
and the sender's context variables are kept; this works the same for the
in-process, stdio and streamable HTTP transports. The hook decides what is
forwarded: ``[]`` drops, ``[m, m]`` duplicates, ``[changed]`` alters, an
``Exception`` instance stands for an unparseable frame.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
from mcp.shared.message import SessionMessage

from testbed.events import Direction

Item = SessionMessage | Exception
Hook = Callable[[Direction, Item], Awaitable[list[Item]]]


class _TapRead:
    def __init__(self, inner: Any, hook: Hook) -> None:
        self._inner = inner
        self._hook = hook
        self._queue: collections.deque[Item] = collections.deque()

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Item:
        while not self._queue:
            item = await self._inner.receive()
            self._queue.extend(await self._hook(Direction.SERVER_TO_CLIENT, item))
        return self._queue.popleft()

    def __aiter__(self) -> _TapRead:
        return self

    async def __anext__(self) -> Item:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _TapRead:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _TapWrite:
    def __init__(self, inner: Any, hook: Hook) -> None:
        self._inner = inner
        self._hook = hook

    async def send(self, item: SessionMessage) -> None:
        for out in await self._hook(Direction.CLIENT_TO_SERVER, item):
            await self._inner.send(out)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _TapWrite:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class TapTransport:
    """Wrap any MCP client transport with a message hook."""

    def __init__(self, inner: Any, hook: Hook) -> None:
        self._inner = inner
        self._hook = hook

    async def __aenter__(self) -> tuple[_TapRead, _TapWrite]:
        read, write = await self._inner.__aenter__()
        return _TapRead(read, self._hook), _TapWrite(write, self._hook)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        result: bool | None = await self._inner.__aexit__(exc_type, exc, tb)
        return result
