"""The ``context`` memory scope: images, masks and crops kept in the protocol-native context store, as MCP resources.

One :class:`~testbed.memory.ContextStore` per process, shared by its parametric
servers (as tools of one backend share its storage), so a reference one server
wrote can be read by another of the same process. A server in this scope keeps
the images it is given, and also what it makes: each mask a segmenter returns
and each crop a cropper returns become entries (roles ``mask`` and ``crop``)
whose provenance names the producing call and the references it read, and the
result carries their references beside the values. A tool's image argument
reads an image or a crop entry; a mask consumer's mask argument a mask entry.
References carry the run: a call or a resource read resolves only references of
its own run, before they expire on its logical clock. Entries are keyed by their
content, so writing the same value from the same call again returns the version
already held (concurrent calls cannot reorder versions). Every write runs the GC
for its run, and publishes a ``resources/updated`` event for the entry's
unversioned URI to the clients listening on the server that wrote it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio.from_thread
import numpy as np
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus

from servers._tools import CallInfo, ToolInputError
from testbed._arrays import RGBImage
from testbed.imaging import encode_png_base64, image_digest
from testbed.memory import NO_AGENT, ContextStore, Entry, MemoryAccessError, Namespace, Provenance
from testbed.protocol import SemanticRole

__all__ = ["CONTEXT_STORE", "CROP_REF", "ENTRY_TEMPLATE", "MASK_REF", "ContextMemory"]

CONTEXT_STORE = ContextStore()
"""The process's context store."""

ENTRY_TEMPLATE = "context://{run}/{agent}/{role}/{key}/{version}"
"""The resource template of one entry version (``version`` is ``v1``, ``v2``, ...)."""

MASK_REF = "mask_ref"
"""The result field beside a mask (per instance) holding its context reference."""
CROP_REF = "crop_ref"
"""The result field beside a crop holding its context reference."""

_KEY_HEX_DIGITS = 16
_PIXEL_ROLES = (SemanticRole.IMAGE.value, SemanticRole.CROP.value)
"""Entries an image argument reads: an image, or a crop (a crop is an image too)."""


class ContextMemory:
    """How one server writes images to, and reads them from, the context store."""

    def __init__(self, server: str, *, ttl_seconds: float | None, store: ContextStore = CONTEXT_STORE) -> None:
        self.server = server
        self.ttl_seconds = ttl_seconds
        self.store = store
        self._bus: SubscriptionBus | None = None

    def put(
        self, value: np.ndarray, call: CallInfo, *, tool: str, role: SemanticRole, inputs: tuple[str, ...]
    ) -> Entry:
        """Store ``value`` (an image, crop or mask) for the calling run and agent, produced by this call of ``tool``
        from ``inputs`` (the context references it read, or ``argument:<name>``)."""
        namespace = Namespace(call.scope, call.agent or NO_AGENT, role.value)
        provenance = Provenance(tool=f"{self.server}.{tool}", call=f"t={call.clock:g}s {tool}", inputs=inputs)
        self.store.gc(call.clock, run=call.scope)
        key = image_digest(value)[:_KEY_HEX_DIGITS]
        entry = self.store.put(
            namespace, key, value, clock=call.clock, provenance=provenance, ttl_s=self.ttl_seconds, idempotent=True
        )
        self._announce(entry)
        return entry

    def put_image(self, image: RGBImage, call: CallInfo, *, tool: str, argument: str) -> Entry:
        """Store ``image`` for the calling run and agent; the entry's provenance names this call and argument."""
        return self.put(image, call, tool=tool, role=SemanticRole.IMAGE, inputs=(f"argument:{argument}",))

    def image(self, reference: str, call: CallInfo, *, argument: str) -> RGBImage:
        """The image (or crop) ``reference`` names, for the calling run at its clock.

        Raises:
            ToolInputError: malformed, of another run, unknown, expired, or not an image or crop.
        """
        entry = self._entry(reference, call, argument=argument)
        if entry.ref.namespace.role not in _PIXEL_ROLES:
            raise ToolInputError(f"{argument}: {reference!r} holds a {entry.ref.namespace.role}, not an image")
        image: RGBImage = entry.value
        return image

    def mask(self, reference: str, call: CallInfo, *, argument: str, image: RGBImage) -> np.ndarray:
        """The mask ``reference`` names, for the calling run at its clock, checked against ``image``'s grid.

        Raises:
            ToolInputError: malformed, of another run, unknown, expired, not a mask, or on another grid than the
                image (a model-resolution mask is not resized behind the caller's back).
        """
        entry = self._entry(reference, call, argument=argument)
        if entry.ref.namespace.role != SemanticRole.MASK.value:
            raise ToolInputError(f"{argument}: {reference!r} holds a {entry.ref.namespace.role}, not a mask")
        mask: np.ndarray = entry.value
        if mask.shape != image.shape[:2]:
            raise ToolInputError(
                f"{argument}: {reference!r} is a {mask.shape[1]}x{mask.shape[0]} mask, "
                f"the image is {image.shape[1]}x{image.shape[0]}"
            )
        return mask

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
            return {**entry.describe(), "png_base64": _png_base64(entry)}

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


def _png_base64(entry: Entry) -> str:
    """An entry's value as a PNG: the pixels of an image or crop, a mask as black and white."""
    value: np.ndarray = entry.value
    if entry.ref.namespace.role == SemanticRole.MASK.value:
        value = np.where(value.astype(bool), np.uint8(255), np.uint8(0))
    return encode_png_base64(value)


def _request_meta(ctx: Context) -> dict[str, Any] | None:
    meta = ctx.request_context.meta
    return dict(meta) if meta is not None else None
