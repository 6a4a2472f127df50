"""Which argument of a tool takes the probe image, and how: never guessed beyond what the schema shows.

An argument takes the image by value (base64) or by path when its schema
says so (``semantic_role`` ``image`` or ``image_path``, ``contentEncoding:
base64``, ``contentMediaType: image/...``), or when its name is one of the
common spellings in :data:`BASE64_NAMES` and :data:`PATH_NAMES`. A tool with
any other required argument cannot be called with a probe image alone: its
image probes are "not applicable".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from testbed.audit._static import ListedTool
from testbed.protocol import SemanticRole, schema_at

__all__ = ["BASE64_NAMES", "PATH_NAMES", "ImageArgument", "image_argument", "other_required"]

BASE64_NAMES: Final = frozenset(
    {"image", "image_b64", "image_base64", "b64_image", "base64_image", "img", "img_b64", "image_data", "b64"}
)
PATH_NAMES: Final = frozenset({"path", "image_path", "file_path", "filepath", "image_file", "file", "filename"})


@dataclass(frozen=True)
class ImageArgument:
    name: str
    kind: Literal["base64", "path"]
    why: str
    """What in the schema identified it (a keyword, or its name)."""


def image_argument(tool: ListedTool) -> ImageArgument | None:
    """The argument the probe image goes in, or ``None`` when the schema shows none."""
    properties = tool.input_schema.get("properties")
    if not isinstance(properties, Mapping):
        return None
    by_name: ImageArgument | None = None
    for name in properties:
        node = schema_at(tool.input_schema, str(name)) or {}
        if not _may_be_string(node):
            continue
        declared = _declared_kind(node)
        if declared is not None:
            return ImageArgument(str(name), declared[0], declared[1])
        lowered = str(name).lower()
        if by_name is None and lowered in BASE64_NAMES:
            by_name = ImageArgument(str(name), "base64", f"named {name!r}")
        elif by_name is None and lowered in PATH_NAMES:
            by_name = ImageArgument(str(name), "path", f"named {name!r}")
    return by_name


def other_required(tool: ListedTool, image: ImageArgument | None) -> list[str]:
    """Required arguments other than the image one (the audit has no value for them)."""
    required = tool.input_schema.get("required")
    if not isinstance(required, list):
        return []
    return [str(name) for name in required if image is None or name != image.name]


def _declared_kind(node: Mapping[str, Any]) -> tuple[Literal["base64", "path"], str] | None:
    role = node.get("semantic_role")
    if role == SemanticRole.IMAGE.value:
        return ("path" if node.get("scope") == "file" else "base64"), "semantic_role image"
    if role == SemanticRole.IMAGE_PATH.value:
        return "path", "semantic_role image_path"
    if node.get("contentEncoding") == "base64":
        return "base64", "contentEncoding base64"
    media = node.get("contentMediaType")
    if isinstance(media, str) and media.startswith("image/"):
        return "base64", f"contentMediaType {media}"
    return None


def _may_be_string(node: Mapping[str, Any]) -> bool:
    kind = node.get("type")
    if kind is None:
        return True
    return kind == "string" or (isinstance(kind, list) and "string" in kind)
