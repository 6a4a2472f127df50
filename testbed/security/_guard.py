"""Containment proven by a Python audit hook: what a probe did, not what its server promised.

:func:`contained` switches a process-wide audit hook (``sys.addaudithook``, installed
once: hooks cannot be removed) on for the guarded region. While on, the hook
records and *blocks* (by raising :class:`ContainmentBreachError`):

- any new process: ``subprocess.Popen``, ``os.system``, ``os.exec``, ``os.posix_spawn``, ``os.spawn``, ``os.fork``;
- code compiled from, or code objects carrying, an untrusted string (the probe's attack text);
- a socket connection, datagram or name lookup beyond loopback;
- a file opened for writing outside the sandbox (Python's own ``__pycache__`` excepted), and a file
  opened in any mode under a forbidden root (the canaries) or at a system secret (``/etc/passwd``, ``~/.ssh``...).

Reading elsewhere stays allowed: importing the standard library, site-packages and model weights reads files.

The switch is a module global, not a context variable, on purpose: tool handlers run on worker
threads the server started before the guard was switched on, which a context variable would not reach.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Breach", "Containment", "ContainmentBreachError", "contained"]

_PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn"}
)
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost", "0:0:0:0:0:0:0:1"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_SECRETS = (
    Path("/etc/passwd"),
    Path("/etc/shadow"),
    Path("/etc/group"),
    Path("/etc/sudoers"),
    Path("/etc/ssh"),
    Path.home() / ".ssh",
    Path.home() / ".aws",
    Path.home() / ".gnupg",
    Path.home() / ".netrc",
)


class ContainmentBreachError(RuntimeError):
    """Raised inside the guarded region to stop an operation that would break containment."""


@dataclass(frozen=True)
class Breach:
    """One operation the guard stopped."""

    event: str
    """The audit event (``open``, ``subprocess.Popen``, ``socket.connect``...)."""
    detail: str
    """What it targeted, in words."""

    def __str__(self) -> str:
        return f"{self.event}: {self.detail}"


@dataclass
class Containment:
    """The rules of one guarded region, and the breaches it stopped."""

    sandbox: Path
    """The only directory a probe may write in."""
    forbidden: tuple[Path, ...] = ()
    """Directories nothing may open in any mode (where the canaries lie)."""
    untrusted: tuple[str, ...] = ()
    """Attack strings that must never reach the compiler."""
    breaches: list[Breach] = field(default_factory=list)
    """What the guard stopped, in order."""

    def check(self, event: str, args: tuple[Any, ...]) -> str | None:
        """Why ``event`` breaks containment, or ``None`` when it does not."""
        if event in _PROCESS_EVENTS:
            return f"starts a process: {_preview(args)}"
        if event == "open":
            return self._check_open(args)
        if event in ("socket.connect", "socket.sendto"):
            return _check_address(args[1] if len(args) > 1 else None)
        if event == "socket.getaddrinfo":
            host = args[0] if args else None
            return None if host is None or str(host) in _LOOPBACK else f"looks up {host!r}"
        if event == "compile":
            return self._check_source(args[0] if args else None)
        if event == "exec":
            code = args[0] if args else None
            if isinstance(code, types.CodeType) and self._carries_untrusted(code):
                return f"executes code carrying an attack string ({code.co_filename})"
        return None

    def _check_open(self, args: tuple[Any, ...]) -> str | None:
        raw, mode, flags = (*args, None, None, None)[:3]
        if isinstance(raw, int) or raw is None:
            return None  # an already open descriptor
        path = Path(os.path.realpath(os.fsdecode(raw)))
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if any(path.is_relative_to(root) for root in (*self.forbidden, *_SECRETS)):
            return f"opens {path} (mode {mode or flags!r}), a forbidden location"
        if writes and not path.is_relative_to(self.sandbox) and "__pycache__" not in path.parts:
            return f"opens {path} for writing (mode {mode or flags!r}) outside the sandbox {self.sandbox}"
        return None

    def _check_source(self, source: object) -> str | None:
        if isinstance(source, bytes):
            source = source.decode("utf-8", "replace")
        if isinstance(source, str) and any(token in source for token in self.untrusted):
            return f"compiles an attack string: {source[:60]!r}"
        return None

    def _carries_untrusted(self, code: types.CodeType) -> bool:
        for constant in code.co_consts:
            if isinstance(constant, str) and any(token in constant for token in self.untrusted):
                return True
            if isinstance(constant, types.CodeType) and self._carries_untrusted(constant):
                return True
        return False


def _check_address(address: object) -> str | None:
    if isinstance(address, tuple) and address and str(address[0]) not in _LOOPBACK:
        return f"connects to {address!r}, beyond loopback"
    if isinstance(address, str | bytes):
        return f"connects to the local socket {address!r}"
    return None


def _preview(args: tuple[Any, ...]) -> str:
    return " ".join(repr(arg) for arg in args)[:120]


_active: Containment | None = None
_switch = threading.Lock()
_installed = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    guard = _active
    if guard is None:
        return
    why = guard.check(event, args)
    if why is not None:
        guard.breaches.append(Breach(event, why))
        raise ContainmentBreachError(f"containment: {event}: {why}")


@contextmanager
def contained(sandbox: Path, *, forbidden: Iterable[Path] = (), untrusted: Iterable[str] = ()) -> Iterator[Containment]:
    """Guard the region: operations that break containment are recorded and stopped (see the module).

    One region at a time per process; the hook is installed on first use and stays (it costs one
    global read per audit event while off).
    """
    global _active, _installed
    guard = Containment(
        sandbox=sandbox.resolve(),
        forbidden=tuple(path.resolve() for path in forbidden),
        untrusted=tuple(token for token in untrusted if token),
    )
    with _switch:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True
        if _active is not None:
            raise RuntimeError("a containment region is already active in this process")
        _active = guard
    try:
        yield guard
    finally:
        _active = None
