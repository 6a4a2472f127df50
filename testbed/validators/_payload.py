"""``conn.binary_unparseable``: an image argument that is not an encoded image.

A tool that reads an image by value (the role ``image`` in its truth, or declared on its input schema)
takes base64 of an encoded image file. Binary data of another kind, such as a renderer's raw RGBA
texture nested in its JSON result and bound to the argument as it is, cannot be parsed there. The check
reads only the first bytes: a known image signature (PNG, JPEG, GIF, WebP, BMP, TIFF) or not.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Final

from testbed.events import CallOutcomeKind
from testbed.protocol import SemanticRole
from testbed.validators._coords import tool_truth
from testbed.validators._model import RunRecord, ValidatorSpec, Violation

__all__ = ["VALIDATORS", "check_binary_unparseable", "why_not_an_image"]

_SIGNATURES: Final = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF", b"BM", b"II*\x00", b"MM\x00*",
)  # fmt: skip


def why_not_an_image(value: str) -> str | None:
    """Why ``value`` is not base64 of an encoded image (``None``: it begins as one)."""
    text = value.partition(",")[2] if value.startswith("data:") else value
    try:
        head = base64.b64decode(text[:64], validate=True)
    except (binascii.Error, ValueError):
        return "not base64"
    if not head.startswith(_SIGNATURES):
        return f"base64 of {len(text) * 3 // 4} bytes that begin like no image format ({head[:8].hex()})"
    return None


_HEAD_BYTES: Final = 48
"""Bytes whose base64 is the first 64 characters of a stored image's text, all :func:`why_not_an_image` decodes."""


def _stored_image_head(record: RunRecord, arguments: dict[str, Any], argument: str) -> str | None:
    """The first 64 characters ``argument`` resolves to when it is the arguments' only blob reference and that
    blob is stored as an image file (base64 of its bytes), read from the file's first bytes; else ``None``.

    With no other reference, resolving the arguments reads that blob alone, so only the blob's own absence
    (left to the full read, which names it) could make it raise.
    """
    raw = arguments.get(argument)
    if not (isinstance(raw, dict) and len(raw) == 1 and isinstance(digest := raw.get("$blob"), str)):
        return None
    if any(_holds_reference(value) for name, value in arguments.items() if name != argument):
        return None
    key = ("payload.image_head", digest)
    head = record._memo.get(key, _UNREAD)
    if head is _UNREAD:
        head = record.memo(key, lambda: _image_head(record, digest))
    return head  # type: ignore[no-any-return]


_UNREAD: Any = object()


def _image_head(record: RunRecord, digest: str) -> str | None:
    path: str | Path | None = record.blob_file(digest)  # found in the store's listing: no path object to make
    if path is None:
        path = record.blob_path(digest)
    if path is None or _suffix(path) not in (".png", ".jpg"):
        return None
    try:  # no buffered file object for 48 bytes
        descriptor = os.open(path, os.O_RDONLY)
        try:
            head = os.read(descriptor, _HEAD_BYTES)
            while head and len(head) < _HEAD_BYTES and (more := os.read(descriptor, _HEAD_BYTES - len(head))):
                head += more  # a short read need not be the end
        finally:
            os.close(descriptor)
    except OSError:  # read it as before, to raise as it raises
        with Path(path).open("rb") as file:
            head = file.read(_HEAD_BYTES)
    return base64.b64encode(head).decode("ascii")


def _suffix(path: str | Path) -> str:
    """``Path(path).suffix``, without making a path object of a string."""
    if not isinstance(path, str):
        return path.suffix
    name = path.rpartition("/")[2]
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def _holds_reference(value: Any) -> bool:
    kind = type(value)
    if kind is list and _SCALARS.issuperset(map(type, value)):
        return False  # a box, a list of names: no reference (told at C speed)
    if kind is list and _LISTS.issuperset(map(type, value)) and _SCALARS.issuperset(map(type, chain(*value))):
        return False  # a list of boxes
    if kind is dict and "$blob" not in value and _SCALARS.issuperset(map(type, value.values())):
        return False
    if isinstance(value, dict):
        return "$blob" in value or any(_holds_reference(item) for item in value.values())
    if isinstance(value, list):
        return any(isinstance(item, dict | list) and _holds_reference(item) for item in value)
    return False


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
"""Types that hold no blob reference."""
_LISTS: Final = frozenset({list})


@functools.lru_cache(maxsize=256)
def _begins_as_image(head: str) -> bool:
    """``why_not_an_image(head) is None``, once per head (images of one kind and size mostly begin alike)."""
    return why_not_an_image(head) is None


def check_binary_unparseable(record: RunRecord) -> Iterator[Violation]:
    """``conn.binary_unparseable``: a by-value image argument whose data is no image file."""
    for at, call in record.call_events():
        truth = tool_truth(record, call)
        if truth is None or call.outcome is CallOutcomeKind.SKIPPED or SemanticRole.IMAGE not in truth.inputs:
            continue
        argument = truth.inputs[SemanticRole.IMAGE]
        head = _stored_image_head(record, call.arguments, argument)
        if head is not None and _begins_as_image(head):
            continue  # the text begins as an image: reading all of it would say no more
        value = record.internalize(call.arguments).get(argument)
        why = why_not_an_image(value) if isinstance(value, str) else None
        if why is not None:
            detail = f"{call.tool}: argument {argument!r} is {why}"
            yield Violation.at_call("conn.binary_unparseable", record.started.run, at, call, detail)


VALIDATORS: Final = (ValidatorSpec("conn.binary_unparseable", ("conn.binary_unparseable",), check_binary_unparseable),)
