"""Where servers keep images between calls: session, global, TTL and file stores.

Handles are deterministic strings derived from the image's content hash and,
where the store needs them, the scope and the creation clock (never ``uuid4``
or wall time), so a replayed run gets the same handles. Every store is safe to
use from the worker threads tool handlers run on. Resolving an unknown,
out-of-scope or expired handle raises :class:`~servers._tools.ToolInputError`
naming the argument and the handle.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from servers._runtime import decode_image_data
from servers._tools import ToolInputError
from testbed._arrays import RGBImage
from testbed.imaging import encode_png, image_digest

__all__ = ["FileStore", "GlobalStore", "SessionStore", "TtlStore", "make_handle"]

_HANDLE_HEX_DIGITS = 16


def make_handle(prefix: str, *parts: str) -> str:
    """A handle ``"<prefix>-<16 hex digits>"`` derived from the prefix and ``parts`` (deterministic)."""
    digest = hashlib.sha256("\x1f".join((prefix, *parts)).encode()).hexdigest()
    return f"{prefix}-{digest[:_HANDLE_HEX_DIGITS]}"


def _frozen(image: RGBImage) -> RGBImage:
    stored = image.copy()
    stored.setflags(write=False)
    return stored


class SessionStore:
    """Images visible only within the scope (session) that stored them.

    Handles are ``sess-…`` from (scope, content). To bound memory, the store keeps
    the ``max_scopes`` most recently used scopes; an evicted scope's handles read as unknown.
    """

    def __init__(self, *, max_scopes: int = 256) -> None:
        self._scopes: OrderedDict[str, dict[str, RGBImage]] = OrderedDict()
        self._max_scopes = max_scopes
        self._lock = threading.Lock()

    def put(self, scope: str, image: RGBImage) -> str:
        """Store ``image`` for ``scope``; return its handle."""
        handle = make_handle("sess", scope, image_digest(image))
        with self._lock:
            images = self._scopes.setdefault(scope, {})
            self._scopes.move_to_end(scope)
            images.setdefault(handle, _frozen(image))
            while len(self._scopes) > self._max_scopes:
                self._scopes.popitem(last=False)
        return handle

    def get(self, scope: str, handle: str, *, argument: str) -> RGBImage:
        """The image ``handle`` names, if ``scope`` stored it.

        Raises:
            ToolInputError: no such handle in this scope (unknown, or created in another scope).
        """
        with self._lock:
            image = self._scopes.get(scope, {}).get(handle)
            if image is not None:
                self._scopes.move_to_end(scope)
        if image is None:
            raise ToolInputError(f"{argument}: handle {handle!r} is unknown in this session (scope {scope!r})")
        return image


class GlobalStore:
    """Images any client can resolve, forever: never evicted (unbounded retention is the point).

    Handles are ``img-…`` from the content alone, so every client storing the same image gets the same handle.
    """

    def __init__(self) -> None:
        self._images: dict[str, RGBImage] = {}
        self._lock = threading.Lock()

    def put(self, image: RGBImage) -> str:
        """Store ``image``; return its handle."""
        handle = make_handle("img", image_digest(image))
        with self._lock:
            self._images.setdefault(handle, _frozen(image))
        return handle

    def get(self, handle: str, *, argument: str) -> RGBImage:
        """The image ``handle`` names.

        Raises:
            ToolInputError: no image has this handle.
        """
        with self._lock:
            image = self._images.get(handle)
        if image is None:
            raise ToolInputError(f"{argument}: unknown handle {handle!r}")
        return image

    def __len__(self) -> int:
        with self._lock:
            return len(self._images)


@dataclass(frozen=True)
class _TtlEntry:
    image: RGBImage
    scope: str
    expires_at: float


class TtlStore:
    """Images that expire ``ttl_seconds`` after creation, on the calling run's logical clock.

    Handles are ``ttl-…`` from (scope, creation clock, content). A handle is valid
    while ``clock < created + ttl_seconds``; any scope may resolve it while valid.
    A call from a scope drops that scope's expired entries; their handles are
    remembered (up to ``max_tombstones``) so a late read says "expired", not "unknown".
    """

    def __init__(self, ttl_seconds: float, *, max_tombstones: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self._entries: dict[str, _TtlEntry] = {}
        self._tombstones: OrderedDict[str, float] = OrderedDict()
        self._max_tombstones = max_tombstones
        self._lock = threading.Lock()

    def put(self, scope: str, clock: float, image: RGBImage) -> tuple[str, float]:
        """Store ``image`` at ``clock``; return its handle and its expiry time."""
        handle = make_handle("ttl", scope, repr(float(clock)), image_digest(image))
        expires_at = clock + self.ttl_seconds
        with self._lock:
            self._purge(scope, clock)
            self._tombstones.pop(handle, None)
            self._entries[handle] = _TtlEntry(_frozen(image), scope, expires_at)
        return handle, expires_at

    def get(self, scope: str, clock: float, handle: str, *, argument: str) -> RGBImage:
        """The image ``handle`` names, if it has not expired at ``clock``.

        Raises:
            ToolInputError: the handle is unknown or has expired.
        """
        with self._lock:
            self._purge(scope, clock)
            entry = self._entries.get(handle)
            if entry is not None and clock < entry.expires_at:
                return entry.image
            expired_at = entry.expires_at if entry is not None else self._tombstones.get(handle)
        if expired_at is not None:
            raise ToolInputError(f"{argument}: handle {handle!r} expired at t={expired_at:g}s (now t={clock:g}s)")
        raise ToolInputError(f"{argument}: unknown handle {handle!r}")

    def _purge(self, scope: str, clock: float) -> None:
        expired = [h for h, e in self._entries.items() if e.scope == scope and clock >= e.expires_at]
        for handle in expired:
            self._tombstones[handle] = self._entries.pop(handle).expires_at
        while len(self._tombstones) > self._max_tombstones:
            self._tombstones.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class FileStore:
    """Image files inside one sandbox directory; paths that resolve outside it are refused.

    Stored files are ``images/<content hash>.png``; paths are returned relative to the sandbox.
    A path argument may be relative (to the sandbox) or absolute, as long as it resolves inside.
    """

    MAX_FILE_BYTES = 256 * 1024 * 1024
    """Larger files are refused without being read."""

    def __init__(self, root: Path | None) -> None:
        self._configured = root
        self._root: Path | None = None
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The sandbox directory (created on first use; a fresh temporary one when none was configured)."""
        with self._lock:
            if self._root is None:
                if self._configured is None:
                    self._root = Path(tempfile.mkdtemp(prefix="testbed-sandbox-")).resolve()
                else:
                    self._configured.mkdir(parents=True, exist_ok=True)
                    self._root = self._configured.resolve()
            return self._root

    def save(self, image: RGBImage) -> str:
        """Write ``image`` as a PNG in the sandbox; return its path relative to the sandbox."""
        relative = Path("images") / f"{make_handle('file', image_digest(image)).removeprefix('file-')}.png"
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            partial = target.with_suffix(".tmp")
            partial.write_bytes(encode_png(image))
            partial.replace(target)
        return relative.as_posix()

    def resolve(self, path: str, *, argument: str) -> Path:
        """The file ``path`` names inside the sandbox.

        Raises:
            ToolInputError: the path is empty, resolves outside the sandbox, or names no file.
        """
        if not path or "\x00" in path:
            raise ToolInputError(f"{argument}: must be a non-empty path without NUL characters")
        root = self.root
        candidate = (root / path).resolve()  # an absolute path replaces root; '..' and symlinks are resolved
        if not candidate.is_relative_to(root):
            raise ToolInputError(f"{argument}: {path!r} is outside the sandbox")
        try:
            is_file = candidate.is_file()
        except OSError as error:  # a name too long for the file system, for one
            raise ToolInputError(f"{argument}: {path!r} is not a usable path ({error.strerror or error})") from None
        if not is_file:
            raise ToolInputError(f"{argument}: {path!r} is not a file in the sandbox")
        return candidate

    def load(self, path: str, *, argument: str, max_pixels: int) -> RGBImage:
        """Read and decode the image file ``path`` names inside the sandbox.

        Raises:
            ToolInputError: as :meth:`resolve`, or the file is too large or unreadable.
            InvalidImageError: the file is not an image or is over ``max_pixels``; names ``argument``.
        """
        file = self.resolve(path, argument=argument)
        try:
            if file.stat().st_size > self.MAX_FILE_BYTES:
                raise ToolInputError(f"{argument}: {path!r} is larger than {self.MAX_FILE_BYTES} bytes")
            data = file.read_bytes()
        except OSError as error:
            raise ToolInputError(f"{argument}: cannot read {path!r} ({error.strerror or error})") from None
        return decode_image_data(data, argument=argument, max_pixels=max_pixels)
