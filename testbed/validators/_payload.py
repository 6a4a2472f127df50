"""``conn.binary_unparseable``: an image argument that is not an encoded image.

A tool that reads an image by value (the role ``image`` in its truth, or declared on its input schema)
takes base64 of an encoded image file. Binary data of another kind, such as a renderer's raw RGBA
texture nested in its JSON result and bound to the argument as it is, cannot be parsed there. The check
reads only the first bytes: a known image signature (PNG, JPEG, GIF, WebP, BMP, TIFF) or not.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Final

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


def check_binary_unparseable(record: RunRecord) -> Iterator[Violation]:
    """``conn.binary_unparseable``: a by-value image argument whose data is no image file."""
    for at, call in record.calls():
        truth = tool_truth(record, call)
        if truth is None or call.outcome is CallOutcomeKind.SKIPPED or SemanticRole.IMAGE not in truth.inputs:
            continue
        argument = truth.inputs[SemanticRole.IMAGE]
        value = record.internalize(call.arguments).get(argument)
        why = why_not_an_image(value) if isinstance(value, str) else None
        if why is not None:
            detail = f"{call.tool}: argument {argument!r} is {why}"
            yield Violation.at_call("conn.binary_unparseable", record.started.run, at, call, detail)


VALIDATORS: Final = (ValidatorSpec("conn.binary_unparseable", ("conn.binary_unparseable",), check_binary_unparseable),)
