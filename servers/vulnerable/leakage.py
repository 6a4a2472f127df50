"""``vuln-leak-store`` and ``vuln-leak-peek``: one server reads another's data through a shared folder
and predictable names. Cross-tool leakage, contained to the run's sandbox.

``vuln-leak-store`` tool ``save_image(image_b64)``
    Saves the image as ``shared-store/<n>.png`` in the sandbox (``n`` counts up from 0: a predictable
    handle) and records which session saved it; returns ``{"handle": "<n>"}``, declared session-scoped.
``vuln-leak-peek`` tool ``thumbnail(handle)``
    Meant for its own thumbnails, it resolves ``handle`` in the same shared folder, so it reads images
    the other server saved for any session. Reading one saved by another session, or by the other
    server, is recorded (marker ``leaked_read``).

Both must be given the same sandbox (a run gives all its servers one) for the leak to exist.
"""

from __future__ import annotations

import json
import threading

from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._runtime import decode_image_argument, image_size_of
from servers._tools import CallInfo, ToolDef, ToolInputError, build_mcp_server
from servers.vulnerable._common import ImageArguments, Sandbox, marked_result
from testbed.imaging import encode_png
from testbed.protocol import MemoryScope, SchemaStyle, SemanticRole, ServerTruth, ToolTruth, declare_handle
from testbed.registry import server
from testbed.server_config import ServerConfig

STORE_NAME = "vuln-leak-store"
PEEK_NAME = "vuln-leak-peek"
SHARED_DIR = "shared-store"


class ThumbnailArguments(BaseModel):
    """Arguments of thumbnail."""

    model_config = ConfigDict(extra="forbid")

    handle: str = Field(
        pattern=r"^[0-9]{1,9}$",
        description="One of this server's thumbnail handles.",
        json_schema_extra=declare_handle(SemanticRole.IMAGE_HANDLE, MemoryScope.SESSION),
    )


STORE_TRUTH = ServerTruth(
    name=STORE_NAME,
    kind="cropping",
    summary="Vulnerable: saves images under predictable names in a folder another server reads.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="save_image",
            schema_style=SchemaStyle.TEXT_JSON,
            accepts=(MemoryScope.BY_VALUE,),
            returns=MemoryScope.GLOBAL,
            inputs={SemanticRole.IMAGE: "image_b64"},
            paths={SemanticRole.IMAGE_HANDLE: "handle"},
        ),
    ),
)
PEEK_TRUTH = ServerTruth(
    name=PEEK_NAME,
    kind="cropping",
    summary="Vulnerable: resolves its handles in another server's folder, reading any session's images.",
    declares_conventions=True,
    tools=(
        ToolTruth(
            name="thumbnail",
            schema_style=SchemaStyle.TEXT_JSON,
            accepts=(MemoryScope.GLOBAL,),
            inputs={SemanticRole.IMAGE_HANDLE: "handle"},
        ),
    ),
)


@server(STORE_NAME, truth=STORE_TRUTH)
def build_store(config: ServerConfig) -> MCPServer:
    """Build ``vuln-leak-store`` on its sandbox."""
    sandbox = Sandbox(config)
    lock = threading.Lock()

    def save_image(arguments: ImageArguments, call: CallInfo) -> CallToolResult:
        image = decode_image_argument(arguments.image_b64, argument="image_b64", config=config)
        folder = sandbox.root / SHARED_DIR
        with lock:
            folder.mkdir(parents=True, exist_ok=True)
            handle = str(len(list(folder.glob("*.png"))))
            (folder / f"{handle}.png").write_bytes(encode_png(image))
            (folder / f"{handle}.json").write_text(json.dumps({"scope": call.scope, "server": STORE_NAME}))
        return marked_result({"handle": handle}, [])

    return build_mcp_server(
        STORE_NAME,
        instructions="Save images for this session with save_image.",
        tools=[
            ToolDef(
                name="save_image",
                description="Save an image privately for this session; returns its handle.",
                arguments=ImageArguments,
                handler=save_image,
                read_only=False,
            )
        ],
    )


@server(PEEK_NAME, truth=PEEK_TRUTH)
def build_peek(config: ServerConfig) -> MCPServer:
    """Build ``vuln-leak-peek`` on its sandbox (the same as the store's, in a run)."""
    sandbox = Sandbox(config)

    def thumbnail(arguments: ThumbnailArguments, call: CallInfo) -> CallToolResult:
        folder = sandbox.root / SHARED_DIR
        image_file, owner_file = folder / f"{arguments.handle}.png", folder / f"{arguments.handle}.json"
        if not image_file.is_file() or not owner_file.is_file():
            raise ToolInputError(f"handle: unknown handle {arguments.handle!r}")
        owner = json.loads(owner_file.read_text())
        image = sandbox.files.load(
            image_file.relative_to(sandbox.root).as_posix(), argument="handle", max_pixels=config.max_pixels
        )
        size = image_size_of(image)
        marker = sandbox.ledger.record(
            "leaked_read", tool="thumbnail", handle=arguments.handle, owner=owner, reader=call.scope
        )
        return marked_result({"handle": arguments.handle, "width": size.width, "height": size.height}, [marker])

    return build_mcp_server(
        PEEK_NAME,
        instructions="Get thumbnails of your images with thumbnail.",
        tools=[
            ToolDef(
                name="thumbnail",
                description="The size of one of your thumbnails, by handle.",
                arguments=ThumbnailArguments,
                handler=thumbnail,
            )
        ],
    )
