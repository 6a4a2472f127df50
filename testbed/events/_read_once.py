"""Read-only views of a blob store that read (and base64-encode) each blob once.

A run refers to its image many times; replay and validation read blobs, never write them.
"""

from __future__ import annotations

import hashlib
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
            found = self._read[digest] = self._source.get(digest)
        return found

    def path(self, digest: str) -> Path | None:
        try:
            return self._paths[digest]
        except KeyError:
            found = self._paths[digest] = self._source.path(digest)
            return found

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
        self._digests: dict[str, str] = {}

    def get(self, digest: str) -> str:
        text = super().get(digest)
        self._digests.setdefault(text, digest)
        return text

    def put(self, text: str) -> str:
        digest = self._digests.get(text)
        if digest is None:
            data, _ = _decoded_image(text)
            digest = self._digests[text] = hashlib.sha256(data if data is not None else text.encode()).hexdigest()
        return digest

    def put_bytes(self, data: bytes, suffix: str = ".png") -> str:
        return hashlib.sha256(data).hexdigest()


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
        if _SCALARS.issuperset(map(type, value.values())):  # nothing to resolve (checked at C speed)
            return value
        changed: dict[Any, Any] | None = None
        for key, item in value.items():
            if isinstance(item, dict | list):
                resolved = internalized(item, blobs)
                if resolved is not item:
                    if changed is None:
                        changed = {}
                    changed[key] = resolved
        if changed is None:
            return value
        return {key: changed.get(key, item) for key, item in value.items()}
    if isinstance(value, list):
        if _SCALARS.issuperset(map(type, value)):
            return value
        copy: list[Any] | None = None
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                resolved = internalized(item, blobs)
                if resolved is not item:
                    if copy is None:
                        copy = list(value)
                    copy[index] = resolved
        return value if copy is None else copy
    return value
