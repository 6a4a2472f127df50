"""One-line errors for prevalence and population files."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from testbed._errors import LocatedError, TestbedError


class PopulationError(TestbedError):
    """A prevalence or population file that cannot be used: ``FILE: field.path: message``."""


def _dotted(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def first_error(path: Path | str, error: ValidationError, *, prefix: tuple[str | int, ...] = ()) -> PopulationError:
    """The first problem pydantic found, as ``FILE: field.path: message``."""
    detail = error.errors(include_url=False)[0]
    loc = (*prefix, *detail["loc"])
    cause = detail.get("ctx", {}).get("error")
    if isinstance(cause, LocatedError):  # a cross-field check knows where inside the field it failed
        loc = (*loc, *cause.loc)
    message = detail["msg"].removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        message = "unknown key"
    where = _dotted(loc)
    return PopulationError(f"{path}: {where}: {message}" if where else f"{path}: {message}")
