"""Read-only views of a blob store that read (and base64-encode) each blob once.

A run refers to its image many times; replay and validation read blobs, never write them.
"""

from __future__ import annotations

import binascii
import hashlib
import os
from pathlib import Path
from typing import Any

from testbed.events._store import BlobStore, _decoded_image

__all__ = ["ReadOnceBlobs", "ReplayBlobs", "internalized"]


class ReadOnceBlobs(BlobStore):
    """Reads each blob of ``store`` once and keeps it, and looks each one's file up once; writing is refused."""

    def __init__(self, store: BlobStore) -> None:  # no super().__init__: nothing is created or written
        self.root = store.root
        self._source = store
        self._read: dict[str, str] = {}
        self._paths: dict[str, Path | None] = {}

    def get(self, digest: str) -> str:
        found = self._read.get(digest)
        if found is None:
            found = self._read[digest] = self._fetch(digest)
        return found

    def _fetch(self, digest: str) -> str:
        return self._source.get(digest)

    def path(self, digest: str) -> Path | None:
        try:
            return self._paths[digest]
        except KeyError:
            found = self._paths[digest] = self._locate(digest)
            return found

    def _locate(self, digest: str) -> Path | None:
        return self._source.path(digest)

    def put(self, text: str) -> str:
        raise TypeError("a read-only view of a recording's blobs does not write them")

    def put_bytes(self, data: bytes, suffix: str = ".png") -> str:
        raise TypeError("a read-only view of a recording's blobs does not write them")


class ReplayBlobs(ReadOnceBlobs):
    """A recording's blobs as a replay uses them: each read once, and nothing written.

    ``put`` answers the hash a :class:`BlobStore` would store a string under, without storing it: a replay
    externalizes what it would have sent only to compare it with what was recorded, and a string read from
    the recording is known by its hash already.
    """

    def __init__(self, store: BlobStore) -> None:
        super().__init__(store)
        self._read_as: dict[int, tuple[str, str]] = {}
        """By ``id`` of each string read, the string and its digest: a string the replay passes on from the
        recording is found without hashing its text (a scene's base64 is hundreds of kilobytes)."""
        self._digests: dict[str, str] | None = None
        """By text, each string read and each string put; made only when a string not read is put."""
        self._files: dict[str, str] | None = None

    def get(self, digest: str) -> str:
        text = super().get(digest)
        self._read_as.setdefault(id(text), (text, digest))  # kept alive in the entry, so its id is not reused
        if self._digests is not None:
            self._digests.setdefault(text, digest)
        return text

    def _listed(self, digest: str) -> str | None:
        """The blob's file name as the folder listed it when first asked (one listing, not a lookup per suffix)."""
        if self._files is None:
            self._files = blob_files(self.root)
        return self._files.get(digest)

    def _fetch(self, digest: str) -> str:
        name = self._listed(digest)
        if name is None:  # not there when listed: the store finds it, or says it is missing
            return self._source.get(digest)
        try:
            data = _read_file(os.path.join(self.root, name))
        except FileNotFoundError:  # gone since it was listed: the store says so
            return self._source.get(digest)
        if name.endswith(".txt"):  # as BlobStore.get reads it (Path.read_text: UTF-8, universal newlines)
            text = data.decode("utf-8")
            return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
        return binascii.b2a_base64(data, newline=False).decode("ascii")

    def _locate(self, digest: str) -> Path | None:
        name = self._listed(digest)
        return self.root / name if name is not None else self._source.path(digest)

    def put(self, text: str) -> str:
        known = self._read_as.get(id(text))
        if known is not None and known[0] is text:
            return known[1]
        digests = self._by_text()
        digest = digests.get(text)
        if digest is None:
            data, _ = _decoded_image(text)
            digest = digests[text] = hashlib.sha256(data if data is not None else text.encode()).hexdigest()
        return digest

    def _by_text(self) -> dict[str, str]:
        """Each string read (the digest it was first read under) and each put, by text: an equal string that is
        not the one read is known by the digest it was read under, as if it were."""
        if self._digests is None:
            self._digests = {}
            for text, digest in self._read_as.values():
                self._digests.setdefault(text, digest)
        return self._digests

    def put_bytes(self, data: bytes, suffix: str = ".png") -> str:
        return hashlib.sha256(data).hexdigest()


def _read_file(path: str) -> bytes:
    """A file's bytes, read without a buffered file object (most blobs are a few kilobytes: the object would
    cost more than the read)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        data = os.read(descriptor, _READ_CHUNK)
        more = os.read(descriptor, _READ_CHUNK) if data else b""  # a short read need not be the end
        if not more:
            return data
        chunks = [data, more]
        while chunk := os.read(descriptor, _READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


_READ_CHUNK = 1 << 22
"""Bytes asked of one read: a scene image is a few hundred kilobytes, so one read takes all of it."""

_SUFFIXES = {".png": 0, ".jpg": 1, ".txt": 2}
"""A blob's possible suffixes, ranked in the order :class:`BlobStore` looks for them."""


def blob_files(root: Path) -> dict[str, str]:
    """Each blob's file name in ``root``, by digest (the first in :data:`_SUFFIXES` where several exist)."""
    files: dict[str, str] = {}
    try:
        names = os.listdir(root)
    except OSError:
        return files
    for name in names:
        rank = _SUFFIXES.get(name[-4:])
        if rank is not None:
            known = files.setdefault(name[:-4], name)
            if rank < _SUFFIXES[known[-4:]]:
                files[name[:-4]] = name
    return files


_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Types that hold no blob reference."""


def internalized(value: Any, blobs: BlobStore) -> Any:
    """:func:`~testbed.events.internalize`, sharing (not copying) every part that holds no blob reference.

    Equal to what ``internalize`` returns; only the parts above a reference are new objects, so a large
    recorded value is not copied to be read. The result is shared with ``value``: treat it as read-only.
    """
    if isinstance(value, dict):
        if len(value) == 1 and "$blob" in value:  # internalize's ``set(value) == {"$blob"}``
            return blobs.get(value["$blob"])
        return _internalized_dict(value, blobs)
    if isinstance(value, list):
        return _internalized_list(value, blobs)
    return value


# The two walks below tell most items apart by their exact type, inline: a recorded value is mostly scalars and
# lists of scalars (boxes, sizes), and a call per item would cost more than the item. An instance of a subclass
# of dict or list goes through internalized() as a whole.


def _internalized_dict(value: dict[Any, Any], blobs: BlobStore) -> dict[Any, Any]:
    """internalized() of a dict that is not a reference itself."""
    changed: dict[Any, Any] | None = None
    resolved: Any
    for key, item in value.items():
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is dict:
            if len(item) == 1 and "$blob" in item:
                resolved = blobs.get(item["$blob"])
            else:
                resolved = _internalized_dict(item, blobs)
                if resolved is item:
                    continue
        elif kind is list:
            if _SCALARS.issuperset(map(type, item)):  # nothing to resolve (checked at C speed)
                continue
            resolved = _internalized_list(item, blobs)
            if resolved is item:
                continue
        elif isinstance(item, dict | list):
            resolved = internalized(item, blobs)
            if resolved is item:
                continue
        else:
            continue
        if changed is None:
            changed = {}
        changed[key] = resolved
    if changed is None:
        return value
    return {key: changed.get(key, item) for key, item in value.items()}


def _internalized_list(value: list[Any], blobs: BlobStore) -> list[Any]:
    """internalized() of a list."""
    if _SCALARS.issuperset(map(type, value)):
        return value
    copy: list[Any] | None = None
    resolved: Any
    for index, item in enumerate(value):
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is dict:
            if len(item) == 1 and "$blob" in item:
                resolved = blobs.get(item["$blob"])
            else:
                resolved = _internalized_dict(item, blobs)
                if resolved is item:
                    continue
        elif kind is list:
            if _SCALARS.issuperset(map(type, item)):
                continue
            resolved = _internalized_list(item, blobs)
            if resolved is item:
                continue
        elif isinstance(item, dict | list):
            resolved = internalized(item, blobs)
            if resolved is item:
                continue
        else:
            continue
        if copy is None:
            copy = list(value)
        copy[index] = resolved
    return value if copy is None else copy
