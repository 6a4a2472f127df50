"""Handle probes: does a handle resolve in another scope, past its declared lifetime, after many more calls?

A handle is a string a tool returns under a top-level key that another tool
takes as an argument, with no other required one (``load_image`` returns ``image_id``,
``segment_image(image_id)`` reads it); that second tool *resolves* it when it
answers without an error. Without such a pair the probes are "not applicable".

Scope: the same call under another ``SCOPE_META_KEY`` value (the testbed's
vocabulary for "another session"), and over HTTP also from a second MCP
session. Lifetime: the declared ``ttl_seconds`` is passed on the logical
clock (``CLOCK_META_KEY``) and, for a TTL of at most
:data:`MAX_WALL_WAIT_S`, waited out on the wall clock too; with none declared, the
handle is tried once at :data:`UNDECLARED_PROBE_CLOCK_S` on the logical clock (an
undeclared TTL). The card's ``memory_scope`` of the producing tool sums these up
(:func:`inferred_scope`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Final

import anyio

from testbed.audit._calls import Called, Caller
from testbed.audit._probes import UNKNOWN_HANDLE, Feed, ToolFindings
from testbed.audit._static import ListedTool, declared_keyword
from testbed.orchestrator import result_payload
from testbed.scenes import Scene

__all__ = ["MAX_WALL_WAIT_S", "HandlePair", "find_pair", "handle_feed", "probe_handles"]

MAX_WALL_WAIT_S: Final = 3.0
"""Longest the lifetime probe waits on the wall clock."""
GROWTH_CALLS: Final = 5
OTHER_SCOPE: Final = "audit-other-scope"
UNDECLARED_PROBE_CLOCK_S: Final = 30 * 24 * 3600.0
"""Logical clock at which a handle with no declared lifetime is tried again (a month on)."""


@dataclass(frozen=True)
class HandlePair:
    producer: ListedTool
    consumer: ListedTool
    key: str
    handle: str
    produced: Called
    arguments: dict[str, Any]
    """The producer's probe arguments (to produce more handles)."""


def find_pair(tools: list[ListedTool], produced: dict[str, tuple[Called, dict[str, Any]]]) -> HandlePair | None:
    """The first producer/consumer pair among ``tools``, given each producer's successful probe call."""
    for name, (called, arguments) in produced.items():
        payload = result_payload(called.result) if called.result is not None else None
        if not isinstance(payload, dict):
            continue
        producer = next(tool for tool in tools if tool.name == name)
        for key, value in payload.items():
            if not isinstance(value, str):
                continue
            for consumer in tools:
                if consumer.name != name and _takes_only(consumer, key):
                    return HandlePair(producer, consumer, key, value, called, arguments)
    return None


def _takes_only(tool: ListedTool, key: str) -> bool:
    """Whether ``tool`` has an argument ``key`` and requires no other."""
    properties = tool.input_schema.get("properties")
    required = tool.input_schema.get("required") or []
    return isinstance(properties, dict) and key in properties and isinstance(required, list) and set(required) <= {key}


def handle_feed(caller: Caller, pair: HandlePair, producer_feed: Feed) -> Feed:
    """Probe scenes for the consumer: each scene goes through the producer, the consumer gets its handle."""

    async def make(scene: Scene) -> Any:
        called = await caller.call(pair.producer.name, {producer_feed.argument: await producer_feed.make(scene)})
        payload = result_payload(called.result) if called.ok and called.result is not None else None
        value = payload.get(pair.key) if isinstance(payload, dict) else None
        return value if isinstance(value, str) else None

    required = pair.key in (pair.consumer.input_schema.get("required") or [])
    return Feed(pair.key, make, ("unknown handle", UNKNOWN_HANDLE), required)


async def probe_handles(caller: Caller, pair: HandlePair, *, other_session: Caller | None) -> ToolFindings:
    found = ToolFindings()
    name = pair.producer.name
    own = await caller.call(pair.consumer.name, {pair.key: pair.handle})
    where = f"{pair.producer.name}.{pair.key} -> {pair.consumer.name}"
    if not own.ok:
        found.outcome("handle_scope", name, "error", f"{where}: the handle does not resolve even in its own scope")
        return found
    shared = await _scope(found, caller, pair, other_session, where)
    await _growth(found, caller, pair, where)
    expired = await _lifetime(found, caller, pair, where)
    found.fields["memory_scope"] = inferred_scope(pair.handle, shared=shared, expired=expired)
    return found


def inferred_scope(handle: str, *, shared: bool, expired: bool) -> str:
    """The memory scope the handle probes saw, in ``MemoryScope`` terms.

    ``ttl`` when it stopped resolving past its declared lifetime; else ``session`` when it resolves only in its
    own scope, ``file`` when it reads as a file path, else ``global``. A TTL the server does not declare is never
    waited out, so such a handle reads as ``global`` (or ``session``).
    """
    if expired:
        return "ttl"
    if not shared:
        return "session"
    return "file" if _looks_like_path(handle) else "global"


def _looks_like_path(handle: str) -> bool:
    return "/" in handle or "\\" in handle or PurePath(handle).suffix.lower() in _IMAGE_SUFFIXES


_IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


async def _scope(found: ToolFindings, caller: Caller, pair: HandlePair, other: Caller | None, where: str) -> bool:
    """Probe the handle's scope; whether it resolved outside its own."""
    declared = declared_keyword(pair.producer, "scope")
    tries: list[tuple[str, Called]] = [
        ("another scope", await caller.call(pair.consumer.name, {pair.key: pair.handle}, scope=OTHER_SCOPE))
    ]
    if other is not None:
        tries.append(("another MCP session", await other.call(pair.consumer.name, {pair.key: pair.handle})))
    resolved = [label for label, called in tries if called.ok]
    seen = f"{where}: resolved from {', '.join(resolved)}" if resolved else f"{where}: resolves only in its own scope"
    detail = f"{seen} (declared scope: {declared or 'none'})"
    if resolved and declared == "session":
        evidence = next(called for label, called in tries if called.ok).evidence
        found.find("memory.handle_out_of_scope", pair.producer.name, detail, 0.9, evidence)
        found.outcome("handle_scope", pair.producer.name, "finding", detail)
        return True
    found.outcome("handle_scope", pair.producer.name, "ok", detail)
    return bool(resolved)


async def _growth(found: ToolFindings, caller: Caller, pair: HandlePair, where: str) -> None:
    handles = [pair.handle]
    for _ in range(GROWTH_CALLS):
        called = await caller.call(pair.producer.name, pair.arguments)
        payload = result_payload(called.result) if called.ok and called.result is not None else None
        if isinstance(payload, dict) and isinstance(payload.get(pair.key), str):
            handles.append(payload[pair.key])
    first = await caller.call(pair.consumer.name, {pair.key: pair.handle})
    distinct = len(set(handles))
    kept = "the first still resolves" if first.ok else "the first no longer resolves"
    detail = f"{where}: {len(handles)} calls gave {distinct} distinct handle(s); {kept}"
    found.outcome("handle_growth", pair.producer.name, "ok", detail)


async def _lifetime(found: ToolFindings, caller: Caller, pair: HandlePair, where: str) -> bool:
    """Probe the handle's declared lifetime; whether it stopped resolving past it."""
    ttl_text = declared_keyword(pair.producer, "ttl_seconds")
    try:
        ttl = float(ttl_text) if ttl_text is not None else None
    except ValueError:
        ttl = None
    if ttl is None or ttl <= 0:
        return await _undeclared_lifetime(found, caller, pair, where)
    waited = 0.0
    if ttl + 0.25 <= MAX_WALL_WAIT_S:
        waited = ttl + 0.25
        await anyio.sleep(waited)
    late = await caller.call(pair.consumer.name, {pair.key: pair.handle}, clock=ttl + 1.0)
    detail = f"{where}: declared ttl {ttl:g}s; at logical clock {ttl + 1:g}s (wall wait {waited:g}s) "
    if late.ok:
        found.find("memory.retention_exceeded", pair.producer.name, detail + "it still resolves", 0.9, late.evidence)
        found.outcome("handle_lifetime", pair.producer.name, "finding", detail + "it still resolves")
        return False
    found.outcome("handle_lifetime", pair.producer.name, "ok", detail + "it no longer resolves")
    return True


async def _undeclared_lifetime(found: ToolFindings, caller: Caller, pair: HandlePair, where: str) -> bool:
    """With no declared lifetime, whether the handle still resolves once the logical clock is far ahead."""
    late = await caller.call(pair.consumer.name, {pair.key: pair.handle}, clock=UNDECLARED_PROBE_CLOCK_S)
    detail = f"{where}: no ttl_seconds declared; at logical clock {UNDECLARED_PROBE_CLOCK_S:g}s "
    if late.ok:
        found.outcome("handle_lifetime", pair.producer.name, "ok", detail + "it still resolves")
        return False
    found.outcome("handle_lifetime", pair.producer.name, "ok", detail + "it no longer resolves (an undeclared TTL)")
    return True
