"""Payload paths (``detections[*].bbox``): parse, read and rewrite them in a JSON payload.

A payload path is a workflow reference without its root: the same grammar
(:func:`testbed.workflow.parse_reference`), read with the same resolver
(:func:`testbed.workflow.resolve`). This module adds the writers a fault needs:
every writer returns a new payload and leaves the input untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from testbed.workflow._reference import (
    BindingContext,
    BindingError,
    ContentSegment,
    EachSegment,
    FieldSegment,
    IndexSegment,
    InvalidReferenceError,
    Reference,
    Segment,
    parse_reference,
    resolve,
)

__all__ = [
    "PayloadPath",
    "PayloadPathError",
    "format_payload_path",
    "parse_payload_path",
    "read_path",
    "remove_at",
    "rename_at",
    "write_path",
]

PayloadPath = tuple[Segment, ...]
"""A parsed payload path: the segments after the (implicit) payload root."""

_ROOT: Final = "payload"
_POSITION: Final = re.compile(r"position (\d+)")


class PayloadPathError(ValueError):
    """A payload path that is malformed, or does not fit the payload it is applied to."""


def parse_payload_path(text: str) -> PayloadPath:
    """Parse a payload path such as ``detections[*].bbox`` or ``[0].mask``.

    Raises:
        PayloadPathError: the text is empty, is not a well-formed path, or uses ``@content``.
    """
    if not text:
        raise PayloadPathError("a payload path must not be empty (e.g. 'detections[*].bbox')")
    prefix = f"${_ROOT}" + ("" if text.startswith("[") else ".")
    try:
        reference = parse_reference(prefix + text)
    except InvalidReferenceError as error:
        detail = str(error).split(": ", 1)[-1]
        # Positions count from the start of the path as the user wrote it, not of the reference.
        detail = _POSITION.sub(lambda match: f"position {max(0, int(match[1]) - len(prefix))}", detail)
        raise PayloadPathError(f"invalid payload path {text!r}: {detail}") from None
    if any(isinstance(segment, ContentSegment) for segment in reference.path):
        raise PayloadPathError(f"invalid payload path {text!r}: '@content' addresses content blocks, not the payload")
    return reference.path


def format_payload_path(path: PayloadPath) -> str:
    """Write a parsed path back as text (the inverse of :func:`parse_payload_path`)."""
    return "".join(str(segment) for segment in path).removeprefix(".")


def read_path(payload: Any, path: PayloadPath | str) -> Any:
    """Return the value at ``path`` (parsed, or as text such as ``detections[*].bbox``); a ``[*]`` segment
    yields a list with one value per element.

    Raises:
        PayloadPathError: the path is malformed, or a segment does not fit the value it is applied to.
    """
    if isinstance(path, str):
        path = parse_payload_path(path)
    context = BindingContext(scene={}, payloads={_ROOT: payload})
    try:
        return resolve(Reference(root=_ROOT, path=path), context)
    except BindingError as error:
        problem = str(error).split(": ", 1)[-1]
        raise PayloadPathError(f"path {format_payload_path(path)!r}: {problem}") from None


def write_path(payload: Any, path: PayloadPath, value: Any) -> Any:
    """Return a copy of ``payload`` with ``value`` at ``path`` (the inverse of :func:`read_path`).

    ``value`` has the shape :func:`read_path` returns: below a ``[*]`` segment it is a
    list with one value per element, distributed over them in order.

    Raises:
        PayloadPathError: a segment does not fit, or ``value`` does not have the path's shape.
    """
    return _assign(payload, path, value, format_payload_path(path))


def rename_at(payload: Any, path: PayloadPath, new_name: str) -> Any:
    """Return a copy of ``payload`` in which the field ``path`` ends with is renamed to ``new_name``.

    Raises:
        PayloadPathError: the path does not end with a field, or the field is not there.
    """
    text = format_payload_path(path)
    last = path[-1] if path else None
    if not isinstance(last, FieldSegment):
        raise PayloadPathError(f"path {text!r} must end with a field name to rename it")
    old_name = last.name

    def rename(parent: Any) -> Any:
        if not isinstance(parent, Mapping) or old_name not in parent:
            raise PayloadPathError(f"path {text!r}: no field {old_name!r} to rename")
        return {(new_name if key == old_name else key): inner for key, inner in parent.items()}

    return _apply(payload, path[:-1], rename, text)


def remove_at(payload: Any, path: PayloadPath) -> Any:
    """Return a copy of ``payload`` without the field (or list element) ``path`` ends with.

    Raises:
        PayloadPathError: the path ends with ``[*]`` or is empty, or the field or element is not there.
    """
    text = format_payload_path(path)
    last = path[-1] if path else None

    def remove(parent: Any) -> Any:
        if isinstance(last, FieldSegment):
            if not isinstance(parent, Mapping) or last.name not in parent:
                raise PayloadPathError(f"path {text!r}: no field {last.name!r} to remove")
            return {key: inner for key, inner in parent.items() if key != last.name}
        if isinstance(last, IndexSegment):
            if not isinstance(parent, list) or not -len(parent) <= last.index < len(parent):
                raise PayloadPathError(f"path {text!r}: no element {last.index} to remove")
            position = last.index % len(parent)
            return parent[:position] + parent[position + 1 :]
        raise PayloadPathError(f"path {text!r} must end with a field name or an index to remove it")

    return _apply(payload, path[:-1], remove, text)


def _apply(value: Any, path: Sequence[Segment], change: Callable[[Any], Any], text: str) -> Any:
    """Return a copy of ``value`` with ``change`` applied to every value ``path`` reaches."""
    if not path:
        return change(value)
    segment, rest = path[0], path[1:]
    if isinstance(segment, EachSegment):
        if not isinstance(value, list):
            raise PayloadPathError(f"path {text!r}: at '[*]': expected a list, got {type(value).__name__}")
        return [_apply(element, rest, change, text) for element in value]
    if isinstance(segment, FieldSegment):
        if not isinstance(value, Mapping) or segment.name not in value:
            raise PayloadPathError(f"path {text!r}: no field {segment.name!r}")
        return {**value, segment.name: _apply(value[segment.name], rest, change, text)}
    if isinstance(segment, IndexSegment):
        if not isinstance(value, list) or not -len(value) <= segment.index < len(value):
            raise PayloadPathError(f"path {text!r}: no element {segment.index}")
        copy = list(value)
        copy[segment.index] = _apply(value[segment.index], rest, change, text)
        return copy
    raise PayloadPathError(f"path {text!r}: '@content' is not part of a payload")


def _assign(value: Any, path: Sequence[Segment], new: Any, text: str) -> Any:
    if not path:
        return new
    segment, rest = path[0], path[1:]
    if isinstance(segment, EachSegment):
        if not isinstance(value, list) or not isinstance(new, list) or len(new) != len(value):
            raise PayloadPathError(f"path {text!r}: at '[*]': the new values do not match the list they replace")
        return [_assign(element, rest, replacement, text) for element, replacement in zip(value, new, strict=True)]
    return _apply(value, [segment], lambda inner: _assign(inner, rest, new, text), text)
