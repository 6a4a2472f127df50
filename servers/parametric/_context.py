"""The ``context`` memory scope: images kept in the protocol-native context store, exposed as MCP resources.

One :class:`~testbed.memory.ContextStore` per process, shared by its parametric
servers (as tools of one backend share its storage), so a reference one server
wrote can be read by another of the same process. References carry the run:
a call or a resource read resolves only references of its own run, before
they expire on its logical clock. Every write runs the GC for its run, and
publishes a ``resources/updated`` event for the entry's unversioned URI to the
clients listening on the server that wrote it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio.from_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus

from servers._tools import CallInfo, ToolInputError
from testbed._arrays import RGBImage
from testbed.imaging import encode_png_base64, image_digest
from testbed.memory import NO_AGENT, ContextStore, Entry, MemoryAccessError, Namespace, Provenance
from testbed.protocol import SemanticRole

__all__ = ["CONTEXT_STORE", "ENTRY_TEMPLATE", "ContextMemory"]

CONTEXT_STORE = ContextStore()
"""The process's context store."""

ENTRY_TEMPLATE = "context://{run}/{agent}/{role}/{key}/{version}"
"""The resource template of one entry version (``version`` is ``v1``, ``v2``, ...)."""

_KEY_HEX_DIGITS = 16


class ContextMemory:
    """How one server writes images to, and reads them from, the context store."""

    def __init__(self, server: str, *, ttl_seconds: float | None, store: ContextStore = CONTEXT_STORE) -> None:
        self.server = server
        self.ttl_seconds = ttl_seconds
        self.store = store
        self._bus: SubscriptionBus | None = None

    def put_image(self, image: RGBImage, call: CallInfo, *, tool: str, argument: str) -> Entry:
        """Store ``image`` for the calling run and agent; the entry's provenance names this call and argument."""
        namespace = Namespace(call.scope, call.agent or NO_AGENT, SemanticRole.IMAGE.value)
        provenance = Provenance(
            tool=f"{self.server}.{tool}", call=f"t={call.clock:g}s {tool}", inputs=(f"argument:{argument}",)
        )
        self.store.gc(call.clock, run=call.scope)
        key = image_digest(image)[:_KEY_HEX_DIGITS]
        entry = self.store.put(namespace, key, image, clock=call.clock, provenance=provenance, ttl_s=self.ttl_seconds)
        self._announce(entry)
        return entry

    def image(self, reference: str, call: CallInfo, *, argument: str) -> RGBImage:
        """The image ``reference`` names, for the calling run at its clock.

        Raises:
            ToolInputError: malformed, of another run, unknown, expired, or not an image.
        """
        entry = self._entry(reference, call, argument=argument)
        if entry.ref.namespace.role != SemanticRole.IMAGE.value:
            raise ToolInputError(f"{argument}: {reference!r} holds a {entry.ref.namespace.role}, not an image")
        image: RGBImage = entry.value
        return image

    def expose(self, server: MCPServer) -> None:
        """Serve every entry version as a resource, and announce new versions on ``server``'s subscription bus."""
        self._bus = server._subscriptions  # the SDK offers no public accessor to the bus it builds

        @server.resource(
            ENTRY_TEMPLATE,
            name="context-entry",
            description="One version of a context-store entry: its provenance, lifetime and value (PNG).",
            mime_type="application/json",
        )
        def read_entry(run: str, agent: str, role: str, key: str, version: str, ctx: Context) -> dict[str, Any]:
            uri = f"context://{run}/{agent}/{role}/{key}/{version}"
            call = CallInfo.from_meta(_request_meta(ctx))
            entry = self._entry(uri, call, argument="uri")
            value = entry.value
            return {**entry.describe(), "png_base64": encode_png_base64(value) if role == "image" else None}

    def _entry(self, reference: str, call: CallInfo, *, argument: str) -> Entry:
        try:
            return self.store.get(reference, run=call.scope, clock=call.clock, argument=argument)
        except MemoryAccessError as error:
            raise ToolInputError(str(error)) from None

    def _announce(self, entry: Entry) -> None:
        bus = self._bus
        if bus is None:
            return
        # Off a tool worker thread (a direct call) there is no loop to announce on.
        with contextlib.suppress(RuntimeError):
            anyio.from_thread.run(bus.publish, ResourceUpdated(uri=entry.ref.latest_uri))


def _request_meta(ctx: Context) -> dict[str, Any] | None:
    meta = ctx.request_context.meta
    return dict(meta) if meta is not None else None
