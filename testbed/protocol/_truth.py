"""Truth manifests: what a testbed-owned server *actually* does, whatever it declares.

A manifest is held by the testbed (never sent over the protocol) and is used
to score validators and to check tasks against ground truth.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from testbed.conventions import BoxConvention, MaskEncoding, MaskResolution, ShapeOrder
from testbed.protocol._vocabulary import MemoryScope, SemanticRole

SCOPE_META_KEY = "io.github.mcp-vision-testbed/scope"
"""Request ``_meta`` key naming the scope (run) a call belongs to; session-scoped stores key on it."""

CLOCK_META_KEY = "io.github.mcp-vision-testbed/clock"
"""Request ``_meta`` key carrying the run's logical clock in seconds; TTL stores read it, never wall time."""

AGENT_META_KEY = "io.github.mcp-vision-testbed/agent"
"""Request ``_meta`` key naming the agent making the call (multi-agent runs)."""


class SchemaStyle(StrEnum):
    """How a tool shapes its output."""

    FULL = "full"
    """An ``outputSchema`` with typed properties and extension keywords; ``structuredContent``."""
    LOOSE = "loose"
    """An ``outputSchema`` of ``{"type": "object"}`` with no properties; ``structuredContent``."""
    TEXT_JSON = "text_json"
    """No ``outputSchema``; JSON inside a text block."""
    CONTENT = "content"
    """No ``outputSchema``; MCP content blocks (e.g. an image) carry the result."""


class ErrorStyle(StrEnum):
    """How a tool reports a failure."""

    IS_ERROR = "is_error"
    """A result with ``isError: true`` (what the spec asks for)."""
    PAYLOAD = "payload"
    """A normal-looking result whose payload is ``{"error": "..."}``."""


class ToolTruth(BaseModel):
    """What one tool actually does."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str
    """The tool's name in ``tools/list``."""
    schema_style: SchemaStyle
    """How its output is shaped."""
    error_style: ErrorStyle = ErrorStyle.IS_ERROR
    """How it reports failures."""
    box_convention: BoxConvention | None = None
    """The convention of every box it reads or returns, if any."""
    shape_order: ShapeOrder | None = None
    """How it reports an image size pair, if it does."""
    mask_encoding: MaskEncoding | None = None
    """How it encodes the masks it returns, or reads (a mask argument, role ``mask`` in ``inputs``), if any."""
    mask_resolution: MaskResolution | None = None
    """At which resolution the masks it returns or reads are."""
    normalized_polygons: bool = False
    """For polygon masks: whether coordinates are normalized 0-1."""
    accepts: tuple[MemoryScope, ...] = ()
    """How it can receive an image: by value, or which kinds of handle it resolves."""
    returns: MemoryScope | None = None
    """How it returns an image or result that later calls consume (by value, or a handle's scope)."""
    ttl_seconds: float | None = None
    """Lifetime of the handles it returns, on the run's logical clock (``returns == ttl``)."""
    inputs: dict[SemanticRole, str] = {}
    """Which argument carries each role it reads (e.g. ``{image: "image_b64", bounding_box: "box"}``)."""
    paths: dict[SemanticRole, str] = {}
    """Where each role lies in its output payload, as a path like ``detections[*].bbox``.

    The payload is ``structuredContent`` when present, else the JSON of the first text block.
    """


class ServerTruth(BaseModel):
    """What one reference server actually does."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str
    """Registry name (``testbed serve NAME``)."""
    kind: Literal["detection", "segmentation", "cropping", "measuring"]
    """What it is for (``measuring``: physical sizes of objects, from boxes and a pixel spacing)."""
    summary: str
    """One line describing how it diverges."""
    declares_conventions: bool
    """Whether its tool schemas carry the extension keywords."""
    tools: tuple[ToolTruth, ...]
    """Its tools."""

    def tool(self, name: str) -> ToolTruth:
        for tool in self.tools:
            if tool.name == name:
                return tool
        raise KeyError(f"server {self.name!r} has no tool {name!r}")
