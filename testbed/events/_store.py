"""The experiment directory: an append-only ``events.jsonl`` and a content-addressed blob folder.

Each run's events are buffered and appended together, then flushed and
fsynced, so a killed process leaves whole runs behind (at worst one torn
last line, which the reader reports and drops).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import TypeAdapter, ValidationError

from testbed._errors import TestbedError, first_error
from testbed.events._model import Event

EVENTS_FILE = "events.jsonl"
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

    def put(self, text: str) -> str:
        known = self._recent.get(text)
        if known is not None:
            self._recent.move_to_end(text)
            return known
        digest = self._store(text)
        self._recent[text] = digest
        while len(self._recent) > _RECENT_BLOBS:
            self._recent.popitem(last=False)
        return digest

    def _store(self, text: str) -> str:
        data, suffix = _decoded_image(text)
        if data is not None:
            return self.put_bytes(data, suffix)
        digest = hashlib.sha256(text.encode()).hexdigest()
        target = self.root / f"{digest}.txt"
        if not target.exists():
            tmp = target.with_suffix(".txt.tmp")
            tmp.write_text(text)
            tmp.replace(target)
        return digest

    def put_bytes(self, data: bytes, suffix: str = ".png") -> str:
        """Store raw bytes (e.g. a scene image) and return their hash."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.root / f"{digest}{suffix}"
        if not target.exists():
            tmp = target.with_suffix(suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        return digest

    def get(self, digest: str) -> str:
        for suffix in (".png", ".jpg"):
            path = self.root / f"{digest}{suffix}"
            if path.exists():
                return base64.b64encode(path.read_bytes()).decode("ascii")
        path = self.root / f"{digest}.txt"
        if not path.exists():
            raise TestbedError(f"{path}: blob missing from the experiment directory")
        return path.read_text()

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


def externalize(value: Any, blobs: BlobStore) -> Any:
    """Replace every long string inside ``value`` with ``{"$blob": hash}``."""
    if isinstance(value, str):
        return {"$blob": blobs.put(value)} if len(value) >= BLOB_MIN_CHARS else value
    if isinstance(value, dict):
        return {key: externalize(item, blobs) for key, item in value.items()}
    if isinstance(value, list):
        return [externalize(item, blobs) for item in value]
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
    """Appends events to ``events.jsonl``; whole runs at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(directory / BLOBS_DIR)
        self.path = directory / EVENTS_FILE
        self._handle: IO[str] = self.path.open("a", encoding="utf-8")

    def append(self, events: Iterable[Event]) -> None:
        """Append events and make them durable before returning."""
        lines = [event.model_dump_json() + "\n" for event in events]
        self._handle.write("".join(lines))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


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
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        try:
            events.append(_EVENT_ADAPTER.validate_json(line))
        except ValidationError as error:
            if is_last and not trailing_complete:
                torn = number
                break
            located = first_error(error)
            raise TestbedError(f"{path}:{number}: corrupt event ({located})") from None
    return LoadedLog(events=events, torn_line=torn)


def iter_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each complete JSON line of a file as a dict (for tools that do not need validation)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield json.loads(line)
