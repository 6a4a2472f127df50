"""Attribute every wire message to the run, node and item of the call that caused it."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any, Final

from mcp.shared.message import SessionMessage

from testbed.conventions import ImageSize
from testbed.events import Direction, MessageEvent
from testbed.protocol import ToolTruth
from testbed.transport._tap import Item

LISTING_NODE: Final = "@list"
"""The pseudo-node of the ``tools/list`` the orchestrator makes at the start of each run (rug pulls apply there)."""
LISTING_ITEM: Final = 0
"""The item of that listing."""


@dataclass(frozen=True)
class CallSite:
    """The call a message belongs to: what recording, replay and fault injection know of it."""

    run: int
    """The run."""
    node: str
    """The workflow node making the call (:data:`LISTING_NODE` for a run's ``tools/list``)."""
    item: int
    """The call's index within its node (the ``for_each`` element), 0 otherwise."""
    # A call is identified by (run, node, item); what else is known of it does not change which call it is.
    server: str | None = field(default=None, compare=False)
    """The server alias the call goes to (``None``: whichever connection sends it)."""
    tool: str | None = field(default=None, compare=False)
    """The tool called (``None`` for a listing, or to read it from the request)."""
    image_size: ImageSize | None = field(default=None, compare=False)
    """The size of the run's image (box units, origins and image-resolution masks need it)."""
    truth: ToolTruth | None = field(default=None, compare=False)
    """What the tool actually does, where the testbed holds its truth manifest."""


class RecordedFrameError(Exception):
    """An unparseable frame replayed from a recording; it is recorded again exactly as it was the first time."""

    def __init__(self, recorded: str) -> None:
        super().__init__(recorded)
        self.recorded = recorded


current_call: contextvars.ContextVar[CallSite | None] = contextvars.ContextVar("current_call", default=None)
"""Set by the orchestrator around each tool call; outgoing messages are sent in the caller's context."""


@dataclass
class MessageRecorder:
    """Turns tapped messages into ``MessageEvent`` objects, grouped by call.

    Requests are attributed through :data:`current_call`; responses by the
    JSON-RPC id of the request they answer. Messages outside any call (the
    handshake, listings) are kept under ``run=None``.
    """

    server: str
    _by_request_id: dict[Any, CallSite] = field(default_factory=dict)
    _outstanding: dict[Any, CallSite] = field(default_factory=dict)
    """Requests sent and not yet answered, oldest first."""
    _seq: dict[CallSite | None, int] = field(default_factory=dict)
    events: dict[CallSite | None, list[MessageEvent]] = field(default_factory=dict)

    def record(self, direction: Direction, item: Item) -> None:
        if isinstance(item, SessionMessage):
            message: dict[str, Any] = item.message.model_dump(by_alias=True, mode="json", exclude_none=True)
        elif isinstance(item, RecordedFrameError):
            message = {"transport_exception": item.recorded}
        else:
            message = {"transport_exception": f"{item.__class__.__name__}: {item}"}
        context = self._attribute(direction, message)
        seq = self._seq.get(context, 0)
        self._seq[context] = seq + 1
        event = MessageEvent(
            time=time.time(),
            run=context.run if context else None,
            node=context.node if context else None,
            item=context.item if context else None,
            seq=seq,
            server=self.server,
            direction=direction,
            message=message,
        )
        self.events.setdefault(context, []).append(event)

    def _attribute(self, direction: Direction, message: dict[str, Any]) -> CallSite | None:
        if direction is Direction.CLIENT_TO_SERVER:
            context = current_call.get()
            if context is not None and "id" in message and "method" in message:
                self._by_request_id[message["id"]] = context
                self._outstanding[message["id"]] = context
            return context
        if "transport_exception" in message:
            # An unparseable frame carries no id: it belongs to the oldest call still waiting on this server.
            return next(iter(self._outstanding.values()), None)
        request_id = message.get("id")
        if request_id is not None and ("result" in message or "error" in message):
            self._outstanding.pop(request_id, None)
            return self._by_request_id.get(request_id)
        return None

    def take(self, context: CallSite | None) -> list[MessageEvent]:
        """Remove and return the events recorded for one call (or the unattributed ones)."""
        return self.events.pop(context, [])

    def take_run(self, run: int) -> list[MessageEvent]:
        """Remove and return every event of a run, in deterministic (node, item, seq) order."""
        for request_id, context in list(self._outstanding.items()):
            if context.run == run:
                del self._outstanding[request_id]  # timed out or closed: nothing more will be matched to it
        keys = [key for key in self.events if key is not None and key.run == run]
        taken: list[MessageEvent] = []
        for key in sorted(keys, key=lambda k: (k.node, k.item)):
            taken.extend(self.events.pop(key))
        return taken
