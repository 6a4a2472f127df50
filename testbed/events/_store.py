"""The experiment directory: an append-only ``events.jsonl`` and a content-addressed blob folder.

The log is created atomically with its header (a temporary file, fsynced, renamed
into place, then the directory fsynced), so it never exists without a complete
header. Each run's events are buffered and appended together, then flushed and
fsynced, so a killed process leaves whole runs behind (at worst one torn
last line, which the reader reports and drops). The blobs a run wrote are
fsynced before its events are, so a run on disk never refers to a blob that a
crash of the machine could lose. A line leaves out what earlier
lines hold already, and the reader puts it back (see :mod:`testbed.events._pack`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import TypeAdapter, ValidationError

from testbed._errors import TestbedError, first_error
from testbed.events._model import Event
from testbed.events._pack import Packer, Unpacker

EVENTS_FILE = "events.jsonl"
EVENTS_TMP_FILE = EVENTS_FILE + ".tmp"
"""Where the header is written before it is renamed to :data:`EVENTS_FILE`."""
BLOBS_DIR = "blobs"
SERVER_LOGS_DIR = "servers"
BLOB_MIN_CHARS = 512
"""Strings at least this long are stored once in ``blobs/`` and referenced by hash."""

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
_RECENT_BLOBS = 64
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


class BlobStore:
    """Content-addressed storage for large strings (typically base64 images).

    A canonical base64 image is stored decoded (``<sha256>.png``/``.jpg``, the
    hash of the image bytes) so image tools open it and the same image is
    stored once however it arrived; anything else is stored as text
    (``<sha256>.txt``, the hash of the text).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # The same image string appears in many messages of a run: remember recent ones by their text.
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._unsynced: list[Path] = []

    def put(self, text: str) -> str:
        known = self._recent.get(text)
        if known is not None:
            self._recent.move_to_end(text)
            return known
        digest = self._store(text)
        self.remember(text, digest)
        return digest

    def remember(self, text: str, digest: str) -> None:
        """Note that ``text`` is stored under ``digest`` already (the caller stored its bytes with :meth:`put_bytes`
        and holds their base64), so :meth:`put` of it neither decodes nor hashes it again."""
        self._recent[text] = digest
        while len(self._recent) > _RECENT_BLOBS:
            self._recent.popitem(last=False)

    def _store(self, text: str) -> str:
        data, suffix = _decoded_image(text)
        if data is not None:
            return self.put_bytes(data, suffix)
        data = text.encode()
        digest = hashlib.sha256(data).hexdigest()
        self._write(self.root / f"{digest}.txt", data)
        return digest

    def put_bytes(self, data: bytes, suffix: str = ".png") -> str:
        """Store raw bytes (e.g. a scene image) and return their hash."""
        digest = hashlib.sha256(data).hexdigest()
        self._write(self.root / f"{digest}{suffix}", data)
        return digest

    def _write(self, target: Path, data: bytes) -> None:
        """Write a blob once, atomically; concurrent writers (worker processes) each use their own temporary.

        A blob already there is kept unless its size is wrong: a machine crash
        before :meth:`sync` can leave a renamed blob empty or short, and the
        run that wrote it was then not recorded, so it is written again when
        that run is.
        """
        try:
            if target.stat().st_size == len(data):
                return
        except FileNotFoundError:
            pass
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        self._unsynced.append(target)

    def sync(self) -> None:
        """Make every blob written since the last call durable: their contents, then their names."""
        pending, self._unsynced = self._unsynced, []
        if not pending:
            return
        for path in pending:
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_directory(self.root)

    def link(self, digest: str, destination: Path) -> Path:
        """Make ``destination`` a hard link to a stored blob (a copy where linking is impossible).

        The blob's bytes are then stored once; whatever was at ``destination`` is replaced.
        """
        source = self.path(digest)
        if source is None:
            raise TestbedError(f"{self.root}: blob {digest} missing from the experiment directory")
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = destination.with_name(f"{destination.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or one without hard links
            shutil.copyfile(source, tmp)
        tmp.replace(destination)
        return destination

    def get(self, digest: str) -> str:
        for suffix in (".png", ".jpg"):
            path = self.root / f"{digest}{suffix}"
            if path.exists():
                return base64.b64encode(path.read_bytes()).decode("ascii")
        path = self.root / f"{digest}.txt"
        if not path.exists():
            raise TestbedError(f"{path}: blob missing from the experiment directory")
        return path.read_text(encoding="utf-8")

    def path(self, digest: str) -> Path | None:
        for suffix in (".png", ".jpg", ".txt"):
            candidate = self.root / f"{digest}{suffix}"
            if candidate.exists():
                return candidate
        return None


def _decoded_image(text: str) -> tuple[bytes | None, str]:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None, ".txt"
    if base64.b64encode(data).decode("ascii") != text:
        return None, ".txt"  # not canonical base64: keep the exact text
    if data.startswith(_PNG_MAGIC):
        return data, ".png"
    if data.startswith(_JPEG_MAGIC):
        return data, ".jpg"
    return None, ".txt"


_NUMBERS = frozenset({int, float, bool, type(None)})
"""Types :func:`externalize` returns as they are (checked before a call, which most leaves would cost)."""


def externalize(value: Any, blobs: BlobStore) -> Any:
    """Replace every long string inside ``value`` with ``{"$blob": hash}``."""
    if isinstance(value, str):
        return {"$blob": blobs.put(value)} if len(value) >= BLOB_MIN_CHARS else value
    if isinstance(value, dict):
        return {key: item if type(item) in _NUMBERS else externalize(item, blobs) for key, item in value.items()}
    if isinstance(value, list):
        return [item if type(item) in _NUMBERS else externalize(item, blobs) for item in value]
    return value


def externalized(value: Any, blobs: BlobStore) -> Any:
    """:func:`externalize`, sharing (not copying) every part that holds no long string.

    Equal to what ``externalize`` returns; only the parts above a replaced string are new objects. For a value
    no one changes afterwards (a message as its recorder parsed it), which the result then shares.
    """
    if isinstance(value, str):
        return {"$blob": blobs.put(value)} if len(value) >= BLOB_MIN_CHARS else value
    if isinstance(value, dict):
        changed: dict[Any, Any] | None = None
        for key, item in value.items():
            if type(item) in _NUMBERS:
                continue
            replaced = externalized(item, blobs)
            if replaced is not item:
                if changed is None:
                    changed = {}
                changed[key] = replaced
        return value if changed is None else {key: changed.get(key, item) for key, item in value.items()}
    if isinstance(value, list):
        copy: list[Any] | None = None
        for index, item in enumerate(value):
            if type(item) in _NUMBERS:
                continue
            replaced = externalized(item, blobs)
            if replaced is not item:
                if copy is None:
                    copy = list(value)
                copy[index] = replaced
        return value if copy is None else copy
    return value


def internalize(value: Any, blobs: BlobStore) -> Any:
    """Inverse of :func:`externalize`."""
    if isinstance(value, dict):
        if set(value) == {"$blob"}:
            return blobs.get(value["$blob"])
        return {key: internalize(item, blobs) for key, item in value.items()}
    if isinstance(value, list):
        return [internalize(item, blobs) for item in value]
    return value


class EventLog:
    """Appends events to ``events.jsonl``; whole runs at a time.

    A log that does not exist yet is made by :meth:`create` with its first events
    (the header), atomically; :meth:`append` then adds to it.
    """

    def __init__(self, directory: Path, *, blobs_dir: Path | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(blobs_dir if blobs_dir is not None else directory / BLOBS_DIR)
        self.path = directory / EVENTS_FILE
        self._packer = Packer()
        self._handle: IO[str] | None = self.path.open("a", encoding="utf-8") if self.path.exists() else None

    @property
    def created(self) -> bool:
        """Whether the log file exists (it was there already, or :meth:`create` made it)."""
        return self._handle is not None

    def create(self, events: Iterable[Event], *, before_rename: Callable[[], None] | None = None) -> None:
        """Create the log holding exactly ``events``, all or nothing.

        The events go to a temporary file that is fsynced and renamed into place;
        the directory is fsynced so the rename itself survives a crash.
        ``before_rename`` is called between the two (tests kill the process there).

        Raises:
            TestbedError: the log exists already.
        """
        if self._handle is not None or self.path.exists():
            raise TestbedError(f"{self.path}: exists already; refusing to create it again")
        self.blobs.sync()
        tmp = self.directory / EVENTS_TMP_FILE
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(self._packer.lines(events))
            handle.flush()
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename()
        tmp.replace(self.path)
        fsync_directory(self.directory)
        self._handle = self.path.open("a", encoding="utf-8")

    def append(self, events: Iterable[Event]) -> None:
        """Append events and make them durable, after the blobs they refer to, before returning."""
        if self._handle is None:
            raise TestbedError(f"{self.path}: not created yet; create it with its header first")
        self.blobs.sync()
        self._handle.write(self._packer.lines(events))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename into it) durable, where the platform allows it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class LoadedLog:
    """Events read back from a directory, and whether a torn last line was dropped."""

    events: list[Event]
    torn_line: int | None
    """1-based line number of an incomplete last line that was dropped, if any."""


def read_events(directory: Path) -> LoadedLog:
    """Read and validate every event of an experiment directory.

    Raises:
        TestbedError: the directory or its log is missing, or a line other than the last is corrupt.
    """
    path = directory / EVENTS_FILE
    if not path.exists():
        raise TestbedError(f"{directory}: not an experiment directory (no {EVENTS_FILE})")
    lines = path.read_text(encoding="utf-8").split("\n")
    trailing_complete = lines[-1] == ""
    if trailing_complete:
        lines = lines[:-1]
    events: list[Event] = []
    torn: int | None = None
    unpacker = Unpacker()
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        try:
            event = _EVENT_ADAPTER.validate_json(line)
        except ValidationError as error:
            if is_last and not trailing_complete:
                torn = number
                break
            located = first_error(error)
            raise TestbedError(f"{path}:{number}: corrupt event ({located})") from None
        try:
            events.append(unpacker.event(event))
        except ValueError as error:
            raise TestbedError(f"{path}:{number}: corrupt event ({error})") from None
    return LoadedLog(events=events, torn_line=torn)


def iter_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each complete JSON line of a file as a dict (for tools that do not need validation)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield json.loads(line)
