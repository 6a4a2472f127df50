"""What the vulnerable servers share: their sandbox, the image argument, and results carrying attack markers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from servers._schemas import declare_image
from servers._stores import FileStore
from servers._tools import text_json_result
from servers.vulnerable._contain import Ledger
from testbed.protocol import MemoryScope
from testbed.server_config import ServerConfig

__all__ = ["ImageArguments", "Sandbox", "marked_result"]


class ImageArguments(BaseModel):
    """An image sent by value, and nothing else."""

    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(description="The image, base64.", json_schema_extra=declare_image(MemoryScope.BY_VALUE))


class Sandbox:
    """One server's sandbox directory (``config.sandbox``, or a fresh temporary one) and its ledger."""

    def __init__(self, config: ServerConfig) -> None:
        self._files = FileStore(config.sandbox)

    @property
    def root(self) -> Path:
        return self._files.root

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.root)

    @property
    def files(self) -> FileStore:
        return self._files


def marked_result(payload: dict[str, Any], markers: list[dict[str, Any]]) -> CallToolResult:
    """A JSON text result; ``attack_markers`` lists what the call recorded in the ledger (absent when none)."""
    return text_json_result({**payload, "attack_markers": markers} if markers else payload)
