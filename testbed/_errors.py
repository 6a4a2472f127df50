"""User-facing errors: each carries one line that names what was wrong."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

Location = tuple[str | int, ...]
"""A field path, as pydantic gives it: ``("faults", 2, "target", "server")``."""

_MAX_INPUT_PREVIEW = 60


class TestbedError(Exception):
    """An error caused by user input or environment, reported as one clear line.

    The CLI prints ``str(error)`` without a traceback and exits non-zero.
    """

    __test__ = False  # not a pytest test class, despite the name


class InvalidImageError(TestbedError):
    """An image file or payload that cannot be decoded."""


class UnsupportedEncodingError(TestbedError):
    """A mask encoding or convention value that the testbed does not know."""


class WeightsError(TestbedError):
    """Missing, unreadable or corrupt model weights."""


class DeviceError(TestbedError):
    """An unknown or unavailable compute device."""


class LocatedError(TestbedError, ValueError):
    """An invalid value found by a cross-field check: what is wrong, and where.

    Raised inside a pydantic validator, the renderer below puts ``loc`` (relative to the
    model whose validator raised it) after the location pydantic reports.

    Attributes:
        message: what is wrong, in words.
        loc: the field path of the offending value, relative to what was validated.
    """

    def __init__(self, message: str, *, loc: Location = (), root: str | None = None) -> None:
        """``root``: write the text as ``ROOT[i].field: message`` (standalone use); ``None``: the message alone."""
        located = root is not None and bool(loc)
        super().__init__(f"{format_location(loc, root=root or '')}: {message}" if located else message)
        self.message = message
        self.loc = loc


def format_location(loc: Location, *, root: str = "") -> str:
    """Write a location as ``faults[2].target.server`` (an int first segment indexes ``root``)."""
    text = root if loc and isinstance(loc[0], int) else ""
    for segment in loc:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{segment}" if text else str(segment)
    return text


def explain_error(
    details: ErrorDetails, *, unknown_field: Callable[[Location], str] | None = None
) -> tuple[Location, str]:
    """One pydantic error as (full location, a readable message): the one renderer every boundary uses.

    Args:
        details: one entry of ``ValidationError.errors()``.
        unknown_field: given the location of an unknown field, a hint to append (e.g. "; did you mean 'to'?").
    """
    loc: Location = tuple(details["loc"])
    kind = details["type"]
    context: Mapping[str, Any] = details.get("ctx") or {}
    cause = context.get("error")
    if isinstance(cause, LocatedError):
        return (*loc, *cause.loc), cause.message
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(context.get("discriminator", "kind")).strip("'")
        if kind == "union_tag_not_found":
            return (*loc, discriminator), f"missing required field {discriminator!r}"
        tag, expected = str(context.get("tag")), str(context.get("expected_tags"))
        close = difflib.get_close_matches(tag, [name.strip(" '") for name in expected.split(",")], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (*loc, discriminator), f"unknown {discriminator} {tag!r}{hint}; expected one of: {expected}"
    if kind == "missing":
        return loc, "missing required field"
    if kind == "extra_forbidden":
        return loc, "unknown field" + (unknown_field(loc) if unknown_field is not None else "")
    message = details["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind != "value_error":
        message = message[:1].lower() + message[1:]
        value = details.get("input")
        if isinstance(value, str | int | float | bool) or value is None:
            preview = repr(value)
            if len(preview) <= _MAX_INPUT_PREVIEW:
                message += f" (got {preview})"
    return loc, message


def more_errors(count: int) -> str:
    """`` (and N more errors)`` for the errors a one-line report leaves out."""
    return f" (and {count} more error{'s' if count > 1 else ''})" if count > 0 else ""


def first_error(error: ValidationError, *, root: str = "") -> LocatedError:
    """The first of pydantic's errors as one located line, counting the rest."""
    loc, message = explain_error(error.errors()[0])
    return LocatedError(message + more_errors(len(error.errors()) - 1), loc=loc, root=root)
