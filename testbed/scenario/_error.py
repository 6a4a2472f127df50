"""The scenario loader's one error type, and how it writes field paths."""

from __future__ import annotations

import json
import re

from testbed._errors import TestbedError

__all__ = ["ScenarioError", "format_path", "one_line"]

_PLAIN_KEY = re.compile(r"[A-Za-z_@][A-Za-z0-9_-]*")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


class ScenarioError(TestbedError):
    """An invalid scenario file, reported as one line: ``FILE:LINE: field.path: message``.

    Attributes:
        source: the file name (or ``<string>``).
        line: the 1-based line of the offending YAML node, or ``None``.
        path: the dotted field path (``""`` for the whole document).
        message: what is wrong.
    """

    def __init__(self, message: str, *, source: str, line: int | None = None, path: str = "") -> None:
        self.source = source
        self.line = line
        self.path = path
        self.message = one_line(message)
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {path}: {self.message}" if path else f"{where}: {self.message}")


def one_line(text: str) -> str:
    """``text`` with every run of line breaks (as :meth:`str.splitlines` sees them) replaced by ``"; "``.

    Messages quote user input and third-party error text; either may hold line breaks.
    """
    return _LINE_BREAKS.sub("; ", text.strip())


def format_path(path: list[str | int] | tuple[str | int, ...]) -> str:
    """``a.b[0].c``; a key that is not an identifier is quoted in brackets (``servers["de.t"]``)."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        elif _PLAIN_KEY.fullmatch(segment):
            text += f".{segment}"
        else:
            text += f"[{json.dumps(segment)}]"
    return text.removeprefix(".")
