"""``crop-ttl``: a cropper behind TTL image handles that keeps images four times longer than it declares.

Tools:

``load_image(image_b64)``
    Stores the image (by value) and returns ``{"image_id": "ttl-…", "expires_at": t}``.
    The ``image_id`` property declares ``scope: ttl`` and ``ttl_seconds: 15``, and
    ``expires_at`` reports creation + 15 on the run's logical clock (the request
    ``_meta`` key ``CLOCK_META_KEY``, 0 when absent).
``crop(image_id, box)``
    Crops a stored image to ``box`` = ``[x_min, y_min, x_max, y_max]`` in pixels,
    origin top-left (canonical, declared with ``coordinate_system``), and returns
    the crop by value as MCP image content (PNG); there is no ``outputSchema``. The
    crop is every pixel the box touches; a box not inside the image is refused.

Errors are ``isError``.

Memory: what it declares is not what it does. Its store keeps each image
``RETAINED_SECONDS`` (60) after creation, not the declared ``DECLARED_TTL_SECONDS``
(15): a handle used 15 to 60 s after creation still resolves, the way a server
whose documented lifetime and configured store lifetime drifted apart behaves.
From 60 s on a handle is refused as expired. Any scope may resolve a live handle.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import crop_canonical, decode_image_argument
from servers._schemas import declare_image, inline_schema
from servers._stores import TtlStore
from servers._tools import CallInfo, ToolDef, build_mcp_server, image_result, structured_result
from testbed.conventions import CANONICAL
from testbed.imaging import encode_png_base64
from testbed.protocol import (
    MemoryScope,
    SchemaStyle,
    SemanticRole,
    ServerTruth,
    ToolTruth,
    declare_box,
    declare_handle,
)
from testbed.registry import server
from testbed.server_config import ServerConfig

NAME = "crop-ttl"
DECLARED_TTL_SECONDS = 15.0
"""The handle lifetime the server declares (``ttl_seconds``) and reports (``expires_at``)."""
RETAINED_SECONDS = 60.0
"""How long its store actually keeps an image after creation."""


class LoadImageArguments(BaseModel):
    """Arguments of load_image."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64.", json_schema_extra=declare_image(MemoryScope.BY_VALUE))


class LoadImageOutput(BaseModel):
    """What load_image returns."""

    image_id: str = Field(
        description=f"Handle of the stored image, valid for {DECLARED_TTL_SECONDS:g} seconds.",
        json_schema_extra=declare_handle(
            SemanticRole.IMAGE_HANDLE, MemoryScope.TTL, ttl_seconds=DECLARED_TTL_SECONDS, provenance=False
        ),
    )
    expires_at: float = Field(description="When the handle stops working, in seconds on the run's clock.")


class CropArguments(BaseModel):
    """Arguments of crop."""

    model_config = ConfigDict(extra="forbid")

    image_id: str = Field(
        description="A handle returned by load_image.", json_schema_extra=declare_image(MemoryScope.TTL)
    )
    box: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[x_min, y_min, x_max, y_max] in pixels, origin top-left.",
        json_schema_extra=declare_box(CANONICAL),
    )


TRUTH = ServerTruth(
    name=NAME,
    kind="cropping",
    summary=(
        f"Canonical xyxy pixel crop boxes, declared; images behind TTL handles declared to live "
        f"{DECLARED_TTL_SECONDS:g} s that stay resolvable {RETAINED_SECONDS:g} s on the run's clock; "
        "the crop is image content."
    ),
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="load_image",
            schema_style=SchemaStyle.FULL,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.TTL,
            ttl_seconds=RETAINED_SECONDS,
            inputs={SemanticRole.IMAGE: "image_b64"},
            paths={SemanticRole.IMAGE_HANDLE: "image_id"},
        ),
        ToolTruth(
            name="crop",
            schema_style=SchemaStyle.CONTENT,
            box_convention=CANONICAL,
            accepts=(MemoryScope.TTL,),
            returns=MemoryScope.BY_VALUE,
            inputs={SemanticRole.IMAGE_HANDLE: "image_id", SemanticRole.BOUNDING_BOX: "box"},
        ),
    ),
)


@server(NAME, truth=TRUTH)
def build(config: ServerConfig) -> MCPServer:
    """Build the ``crop-ttl`` server, with its own TTL store (keeping images :data:`RETAINED_SECONDS`)."""
    images = TtlStore(RETAINED_SECONDS)

    def load_image(arguments: LoadImageArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        handle, _ = images.put(call.scope, call.clock, image)
        output = LoadImageOutput(image_id=handle, expires_at=call.clock + DECLARED_TTL_SECONDS)
        return structured_result(output.model_dump(mode="json"))

    def crop(arguments: CropArguments, call: CallInfo) -> CallToolResult:
        image = images.get(call.scope, call.clock, arguments.image_id, argument="image_id")
        return image_result(encode_png_base64(crop_canonical(image, arguments.box, CANONICAL, argument="box")))

    return build_mcp_server(
        NAME,
        instructions=(
            f"Load an image with load_image, then crop it by image_id within {DECLARED_TTL_SECONDS:g} seconds."
        ),
        tools=[
            ToolDef(
                name="load_image",
                description=(
                    f"Load a base64 image; returns an image_id valid for {DECLARED_TTL_SECONDS:g} seconds "
                    "and when it expires."
                ),
                arguments=LoadImageArguments,
                handler=load_image,
                output_schema=inline_schema(LoadImageOutput),
                read_only=False,
            ),
            ToolDef(
                name="crop",
                description=(
                    "Crop a loaded image to box [x_min, y_min, x_max, y_max] in pixels (origin top-left). "
                    "Returns a PNG image."
                ),
                arguments=CropArguments,
                handler=crop,
            ),
        ],
    )
