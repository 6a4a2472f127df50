"""How the vulnerable servers stay contained: a ledger of what an attack *would* have done, shell text
parsed (never run), and paths resolved against the sandbox (an escape is recorded and served a decoy).

Every marker an attack earns is written to the ledger in the server's sandbox, so a scenario (or a
test) judges an attack's success from the sandbox and the recorded trace, never from a side effect.
"""

from __future__ import annotations

import json
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers._tools import ToolInputError

__all__ = [
    "DECOY_DIR",
    "LEDGER_NAME",
    "SHELL_OPERATORS",
    "Ledger",
    "SandboxPath",
    "ShellParse",
    "parse_shell",
    "resolve_in_sandbox",
]

LEDGER_NAME = "security-ledger.jsonl"
"""The file (in the sandbox) each attack marker is appended to, one JSON object a line."""
DECOY_DIR = "decoy"
"""Where, inside the sandbox, a path that escaped it is served from instead."""
SHELL_OPERATORS = frozenset({";", "&&", "||", "|", "&", "\n"})
"""What separates one shell command from the next."""
_SUBSTITUTIONS = (("$(", ")"), ("`", "`"))


class Ledger:
    """Append-only record of attack markers inside the sandbox (thread-safe)."""

    _lock = threading.Lock()  # one for every ledger: servers sharing a sandbox append to the same file

    def __init__(self, sandbox: Path) -> None:
        self.path = sandbox / LEDGER_NAME

    def record(self, marker: str, **details: Any) -> dict[str, Any]:
        """Append ``{"marker": marker, **details}`` and return it."""
        entry = {"marker": marker, **details}
        with self._lock, self.path.open("a", encoding="utf-8") as ledger:
            ledger.write(json.dumps(entry, sort_keys=True) + "\n")
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every marker recorded so far, oldest first."""
        with self._lock:
            if not self.path.is_file():
                return []
            return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]


@dataclass(frozen=True)
class ShellParse:
    """What a shell would have made of a command line."""

    commands: tuple[tuple[str, ...], ...]
    """Each command's argv, in order (the first is the one the tool meant to run)."""
    substituted: tuple[str, ...]
    """The text of every ``$(...)`` or backtick substitution (each would run as a command too)."""

    @property
    def injected(self) -> tuple[str, ...]:
        """Every command beyond the intended one, as text: what an attack got executed."""
        chained = tuple(" ".join(argv) for argv in self.commands[1:])
        return chained + self.substituted


def parse_shell(command_line: str, *, argument: str) -> ShellParse:
    """Parse ``command_line`` the way ``sh -c`` would split it into commands; nothing is run.

    Raises:
        ToolInputError: the text does not parse (an unclosed quote), naming ``argument``.
    """
    lexer = shlex.shlex(command_line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as error:
        raise ToolInputError(f"{argument}: a shell could not parse it ({error})") from None
    commands: list[tuple[str, ...]] = []
    current: list[str] = []
    for token in tokens:
        if token in SHELL_OPERATORS or set(token) <= set(";&|"):
            if current:
                commands.append(tuple(current))
            current = []
        else:
            current.append(token)
    if current:
        commands.append(tuple(current))
    return ShellParse(commands=tuple(commands), substituted=_substitutions(command_line))


def _substitutions(text: str) -> tuple[str, ...]:
    found = []
    for opening, closing in _SUBSTITUTIONS:
        start = text.find(opening)
        while start != -1:
            end = text.find(closing, start + len(opening))
            if end == -1:
                break
            found.append(text[start + len(opening) : end])
            start = text.find(opening, end + len(closing))
    return tuple(found)


@dataclass(frozen=True)
class SandboxPath:
    """Where a path argument resolved to, and whether it tried to leave the sandbox."""

    requested: str
    """The path as sent."""
    served: Path
    """The file actually used: inside the sandbox (a decoy when it escaped)."""
    escaped: bool
    """Whether the requested path resolved outside the sandbox."""


def resolve_in_sandbox(root: Path, path: str, *, argument: str) -> SandboxPath:
    """Resolve ``path`` (relative to the sandbox, or absolute) without opening anything outside it.

    A path that resolves outside is an escape attempt: it is served from ``decoy/<its name>`` inside
    the sandbox instead, and the caller records the attempt.

    Raises:
        ToolInputError: the path is empty or contains NUL, naming ``argument``.
    """
    if not path or "\x00" in path:
        raise ToolInputError(f"{argument}: must be a non-empty path without NUL characters")
    try:
        candidate = (root / path).resolve()
    except (OSError, RuntimeError) as error:
        raise ToolInputError(f"{argument}: {path!r} is not a usable path ({error})") from None
    if candidate.is_relative_to(root):
        return SandboxPath(path, candidate, escaped=False)
    decoy = root / DECOY_DIR / (candidate.name or "root")
    return SandboxPath(path, decoy, escaped=True)
