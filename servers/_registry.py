"""The registry of reference servers: name → truth manifest and a factory that builds the server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mcp.server import Server
from mcp.server.mcpserver import MCPServer

from servers import (
    crop_handle,
    crop_masked,
    crop_ttl,
    crop_xywh,
    detect_cxcywh,
    detect_xywh_bl,
    detect_xyxy,
    detect_yxyx,
    segment_png,
    segment_polygon,
    segment_rle,
)
from servers._config import ServerConfig
from testbed._errors import TestbedError
from testbed.protocol import ServerTruth

__all__ = ["SERVERS", "ServerEntry", "get_server"]


@dataclass(frozen=True)
class ServerEntry:
    """One reference server: what it actually does, and how to build it."""

    name: str
    """Registry name (``python -m servers NAME``, ``testbed serve NAME``)."""
    truth: ServerTruth
    """What it actually does, whatever it declares; held by the testbed, never sent."""
    build: Callable[[ServerConfig], MCPServer | Server]
    """Builds a fresh server object (its own stores); models load on the first call, or before serving
    through :func:`servers.preload_models` (``testbed serve``, the stdio/HTTP runner and the orchestrator do)."""

    def __post_init__(self) -> None:
        if self.truth.name != self.name:
            raise ValueError(f"server {self.name!r}: its truth manifest is named {self.truth.name!r}")


def _entries() -> dict[str, ServerEntry]:
    modules = (
        detect_xyxy,
        detect_cxcywh,
        detect_yxyx,
        detect_xywh_bl,
        segment_rle,
        segment_polygon,
        segment_png,
        crop_xywh,
        crop_handle,
        crop_masked,
        crop_ttl,
    )
    return {module.NAME: ServerEntry(module.NAME, module.TRUTH, module.build) for module in modules}


SERVERS: dict[str, ServerEntry] = _entries()
"""Every reference server, by registry name."""


def get_server(name: str) -> ServerEntry:
    """The registered server called ``name``.

    Raises:
        TestbedError: no server has that name; the message lists the known ones.
    """
    try:
        return SERVERS[name]
    except KeyError:
        raise TestbedError(f"unknown server {name!r}; known: {', '.join(SERVERS)}") from None
