"""Memory-scope validators: handles a server never issued, expired handles, handles from another run, stores
that only grow, handles a server still serves after their declared lifetime.

A handle is a value a call returned at a truth path with role ``image_handle``
or ``crop_handle``; a use is a call argument at the truth input of those
roles. Clocks are the logical ``_meta`` clock of the ``tools/call`` request
(what the server saw), falling back to the call's recorded clock.

Client side and server side: ``memory.handle_expired`` is a *use* after the
handle's actual lifetime (its truth ``ttl_seconds``, or the server says so);
``memory.retention_exceeded`` is a *server* that answers a use after the
lifetime its own listing declares (``scope: ttl`` with ``ttl_seconds`` on the
handle's outputSchema property), read from the recorded listing (the truth
manifest only says where the handles are).

``memory.handle_out_of_scope`` and ``memory.unbounded_store`` need several
runs: they are functions of a list of runs (:func:`check_out_of_scope`,
:func:`check_unbounded_store`), not per-run validators.
``memory.cross_agent`` (a handle read by another agent) lives in ``_cross_agent.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from testbed.events import CallEvent, CallOutcomeKind
from testbed.protocol import CLOCK_META_KEY, MemoryScope, SemanticRole, ToolTruth
from testbed.validators._coords import listed_output_property, tool_truth
from testbed.validators._model import RunRecord, ValidatorSpec, Violation
from testbed.validators._schema import listed_tool
from testbed.validators._workflow import read_at
from testbed.workflow import BindingError

HANDLE_ROLES = (SemanticRole.IMAGE_HANDLE, SemanticRole.CROP_HANDLE)
_EVICTING_WORDS = ("delete", "evict", "release", "remove", "free", "clear")
_READ_ERRORS = (BindingError, ValueError, TypeError, KeyError, IndexError)


@dataclass(frozen=True)
class Issued:
    """A handle a call returned."""

    handle: str
    at: int
    call: CallEvent
    truth: ToolTruth
    clock: float
    role: SemanticRole
    """The truth role it was returned under (its path is ``truth.paths[role]``)."""


@dataclass(frozen=True)
class Use:
    """A handle a call sent."""

    handle: str
    at: int
    call: CallEvent
    clock: float


def request_clocks(record: RunRecord) -> dict[tuple[str, str, int], float]:
    """The ``_meta`` clock of each ``tools/call`` request by ``(server, node, item)`` (the last request).

    Once per run; shared: read-only.
    """
    return record.memo("memory.request_clocks", lambda: _request_clocks(record))


def _request_clocks(record: RunRecord) -> dict[tuple[str, str, int], float]:
    clocks: dict[tuple[str, str, int], float] = {}
    for _, message in record.messages_to_server():
        if message.node is None or message.item is None:
            continue
        if message.message.get("method") != "tools/call":
            continue
        meta = (message.message.get("params") or {}).get("_meta") or {}
        clock = meta.get(CLOCK_META_KEY)
        if isinstance(clock, int | float):
            clocks[(message.server, message.node, message.item)] = float(clock)
    return clocks


def issued_handles(record: RunRecord) -> list[Issued]:
    """Every handle returned in the run, in event order."""
    found: tuple[Issued, ...] | None = record._memo.get("memory.issued_handles")
    if found is None:
        found = record.memo("memory.issued_handles", lambda: tuple(_issued_handles(record)))
    return list(found)


def _issued_handles(record: RunRecord) -> list[Issued]:
    clocks = request_clocks(record)
    issued = []
    for at, call in record.call_events():
        truth = tool_truth(record, call)
        if truth is None or call.outcome is not CallOutcomeKind.OK:
            continue
        for role in _handle_roles(truth)[0]:
            try:
                value = read_at(record.internalize(call.payload), truth.paths[role])
            except _READ_ERRORS:
                continue
            for handle in value if isinstance(value, list) else [value]:
                if isinstance(handle, str):
                    clock = clocks.get((call.server, call.node, call.item), call.clock)
                    issued.append(Issued(handle, at, call, truth, clock, role))
    return issued


def _handle_roles(truth: ToolTruth) -> tuple[tuple[SemanticRole, ...], tuple[SemanticRole, ...]]:
    """The handle roles (in :data:`HANDLE_ROLES` order) a tool returns values at, and those it reads arguments at;
    once per truth object (frozen, shared by the runs of an experiment)."""
    found = _ROLES_OF.get(id(truth))
    if found is not None and found[0] is truth:
        return found[1]
    roles = (
        tuple(role for role in HANDLE_ROLES if role in truth.paths),
        tuple(role for role in HANDLE_ROLES if role in truth.inputs),
    )
    if len(_ROLES_OF) >= 1024:
        _ROLES_OF.clear()
    _ROLES_OF[id(truth)] = (truth, roles)
    return roles


_ROLES_OF: dict[int, tuple[ToolTruth, tuple[tuple[SemanticRole, ...], tuple[SemanticRole, ...]]]] = {}


def handle_uses(record: RunRecord) -> list[Use]:
    """Every handle argument sent in the run, in event order."""
    found: tuple[Use, ...] | None = record._memo.get("memory.handle_uses")
    if found is None:
        found = record.memo("memory.handle_uses", lambda: tuple(_handle_uses(record)))
    return list(found)


def _handle_uses(record: RunRecord) -> list[Use]:
    clocks = request_clocks(record)
    uses = []
    for at, call in record.call_events():
        truth = tool_truth(record, call)
        if truth is None:
            continue
        for role in _handle_roles(truth)[1]:
            value = call.arguments.get(truth.inputs[role])
            if isinstance(value, str):
                uses.append(Use(value, at, call, clocks.get((call.server, call.node, call.item), call.clock)))
    return uses


def _violation(record: RunRecord, vid: str, use: Use, detail: str, *evidence: int) -> Violation:
    return Violation(
        vid,
        record.started.run,
        use.call.server,
        use.call.node,
        use.call.item,
        detail,
        tuple(sorted({*evidence, use.at})),
    )


def _blamed(use: Use) -> bool:
    """Whether the call failed with a tool error naming the handle (the server rejected it)."""
    error = use.call.error or ""
    return use.call.outcome is CallOutcomeKind.TOOL_ERROR and use.handle in error


def _reports_expiry(use: Use) -> bool:
    return "expire" in (use.call.error or "").lower()


def _expired_on_clock(use: Use, origin: Issued | None) -> bool:
    if origin is None or origin.truth.ttl_seconds is None:
        return False
    return use.clock > origin.clock + origin.truth.ttl_seconds


def _origins(record: RunRecord) -> dict[tuple[str, str], Issued]:
    origins: dict[tuple[str, str], Issued] = {}
    for issued in issued_handles(record):
        origins.setdefault((issued.call.server, issued.handle), issued)
    return origins


def check_handle_unknown(record: RunRecord) -> Iterator[Violation]:
    """``memory.handle_unknown``: a server rejects a handle it never issued, or one still live (evicted).

    Rule: a call fails with a tool error whose message names the handle it sent, and either the server never
    returned that handle earlier in the run, or it did and the handle had not expired (by the request clock
    against the TTL, and the server does not report expiry). Expiry is ``memory.handle_expired``'s.
    """
    origins = _origins(record)
    for use in handle_uses(record):
        if not _blamed(use):
            continue
        origin = origins.get((use.call.server, use.handle))
        if origin is not None and origin.at > use.at:
            origin = None
        if origin is None:
            reason = f"never issued by {use.call.server} in this run"
        elif _expired_on_clock(use, origin) or _reports_expiry(use):
            continue
        else:
            reason = f"issued by {origin.call.tool} (event {origin.at}) and still live: evicted"
        yield _violation(
            record,
            "memory.handle_unknown",
            use,
            f"{use.call.tool} rejected handle {use.handle!r}, {reason}",
            *((origin.at,) if origin is not None else ()),
        )


def check_handle_expired(record: RunRecord) -> Iterator[Violation]:
    """``memory.handle_expired``: a TTL handle used after its lifetime.

    Rule: the request's ``_meta`` clock exceeds the creating call's clock plus the creating tool's true
    ``ttl_seconds``; or the server rejects the TTL handle with an error reporting expiry (a server clock
    ahead of the recorded client clock is visible only that way).
    """
    origins = _origins(record)
    for use in handle_uses(record):
        origin = origins.get((use.call.server, use.handle))
        if origin is None or origin.truth.ttl_seconds is None:
            continue
        deadline = origin.clock + origin.truth.ttl_seconds
        if _expired_on_clock(use, origin):
            how = f"at t={use.clock:g}s"
        elif _blamed(use) and _reports_expiry(use):
            how = f"at request clock t={use.clock:g}s, server reports: {use.call.error}"
        else:
            continue
        yield _violation(
            record,
            "memory.handle_expired",
            use,
            f"{use.call.tool} sent handle {use.handle!r} {how}; lifetime ended t={deadline:g}s"
            f" (created t={origin.clock:g}s by {origin.call.tool}, ttl {origin.truth.ttl_seconds:g}s)",
            origin.at,
        )


def declared_ttl(record: RunRecord, issued: Issued) -> float | None:
    """The lifetime the issuing tool's recorded listing declares for a handle, or ``None`` when it declares none.

    Read from the outputSchema property at the handle's truth path: ``scope: ttl`` with a positive ``ttl_seconds``.
    """
    listed = listed_tool(record, issued.call.server, issued.call.tool)
    prop = listed_output_property(listed, issued.truth.paths[issued.role]) if listed is not None else None
    if prop is None or prop.get("scope") != MemoryScope.TTL.value:
        return None
    ttl = prop.get("ttl_seconds")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        return None
    return float(ttl)


def check_retention_exceeded(record: RunRecord) -> Iterator[Violation]:
    """``memory.retention_exceeded``: a server resolves a handle after the lifetime it declared for it ended.

    Rule: a call that sent a handle succeeded although its request clock is at or past the issuing call's clock
    plus the ``ttl_seconds`` the issuing tool declares on the handle (a TTL handle is valid while
    ``clock < created + ttl``). Only declared lifetimes count: an undeclared handle has no scope to exceed.
    """
    origins = _origins(record)
    for use in handle_uses(record):
        origin = origins.get((use.call.server, use.handle))
        if use.call.outcome is not CallOutcomeKind.OK or origin is None or origin.at > use.at:
            continue
        ttl = declared_ttl(record, origin)
        if ttl is None or use.clock < origin.clock + ttl:
            continue
        yield _violation(
            record,
            "memory.retention_exceeded",
            use,
            f"{use.call.tool} resolved handle {use.handle!r} at t={use.clock:g}s; {origin.call.tool} declared it"
            f" for {ttl:g}s from t={origin.clock:g}s, so it ended at t={origin.clock + ttl:g}s",
            origin.at,
        )


def check_out_of_scope(records: Sequence[RunRecord]) -> list[Violation]:
    """``memory.handle_out_of_scope``: a run sends a handle created in another run, by a session or TTL tool.

    Global and file handles are shared by design and never flagged; context references are per run.
    Cross-run: pass every run of an experiment.
    """
    origins: dict[tuple[str, str], tuple[int, Issued]] = {}
    for record in records:
        for issued in issued_handles(record):
            origins.setdefault((issued.call.server, issued.handle), (record.started.run, issued))
    violations = []
    for record in records:
        for use in handle_uses(record):
            found = origins.get((use.call.server, use.handle))
            if found is None or found[0] == record.started.run:
                continue
            run, issued = found
            if issued.truth.returns in (MemoryScope.SESSION, MemoryScope.TTL, MemoryScope.CONTEXT):
                violations.append(
                    _violation(
                        record,
                        "memory.handle_out_of_scope",
                        use,
                        f"{use.call.tool} sent {issued.truth.returns.value} handle {use.handle!r} created in run {run}",
                    )
                )
    return violations


def check_unbounded_store(records: Sequence[RunRecord]) -> list[Violation]:
    """``memory.unbounded_store``: a server's global store grows across runs and nothing can evict from it.

    Rule: count the distinct global handles each server returned in runs up to and including each run; flag
    the run (once per server) when that count grew in it, earlier runs had already stored some, and the server
    lists no tool whose name suggests eviction (delete, evict, release, ...) and declares no ``ttl_seconds``.
    """
    stored: dict[str, set[str]] = {}
    violations = []
    for record in records:
        grown: dict[str, tuple[int, CallEvent]] = {}
        before = {alias: len(handles) for alias, handles in stored.items()}
        for issued in issued_handles(record):
            if issued.truth.returns is not MemoryScope.GLOBAL:
                continue
            handles = stored.setdefault(issued.call.server, set())
            if issued.handle not in handles:
                handles.add(issued.handle)
                grown.setdefault(issued.call.server, (issued.at, issued.call))
        for alias, (at, call) in grown.items():
            if before.get(alias, 0) == 0 or _can_evict(record, alias):
                continue
            violations.append(
                Violation(
                    "memory.unbounded_store",
                    record.started.run,
                    alias,
                    call.node,
                    call.item,
                    f"{alias} holds {len(stored[alias])} global handles after run {record.started.run}"
                    f" ({before[alias]} before it) and lists no way to evict them",
                    (at,),
                )
            )
    return violations


def _can_evict(record: RunRecord, alias: str) -> bool:
    for tool in record.tools(alias):
        name = str(tool.get("name", "")).lower()
        if any(word in name for word in _EVICTING_WORDS) or "ttl_seconds" in str(tool.get("outputSchema", "")):
            return True
    return False


VALIDATORS = (
    ValidatorSpec("memory.handle_unknown", ("memory.handle_unknown",), check_handle_unknown),
    ValidatorSpec("memory.handle_expired", ("memory.handle_expired",), check_handle_expired),
    ValidatorSpec("memory.retention_exceeded", ("memory.retention_exceeded",), check_retention_exceeded),
)
