"""A read-only view of a blob store that reads (and base64-encodes) each blob once.

A run refers to its image many times; replay and validation read blobs, never write them.
"""

from __future__ import annotations

from pathlib import Path

from testbed.events._store import BlobStore

__all__ = ["ReadOnceBlobs"]


class ReadOnceBlobs(BlobStore):
    """Reads each blob of ``store`` once and keeps it; writing is refused."""

    def __init__(self, store: BlobStore) -> None:  # no super().__init__: nothing is created or written
        self.root = store.root
        self._source = store
        self._read: dict[str, str] = {}

    def get(self, digest: str) -> str:
        found = self._read.get(digest)
        if found is None:
            found = self._read[digest] = self._source.get(digest)
        return found

    def path(self, digest: str) -> Path | None:
        return self._source.path(digest)

    def put(self, text: str) -> str:
        raise TypeError("a read-only view of a recording's blobs does not write them")

    def put_bytes(self, data: bytes, suffix: str = ".png") -> str:
        raise TypeError("a read-only view of a recording's blobs does not write them")
