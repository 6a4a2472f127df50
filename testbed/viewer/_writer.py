"""Writes a site's files: pages, and the images and text blobs they show, each linked in once by hash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from testbed.events import BlobStore

FILES_DIR = "files"
"""Where the site keeps images and text blobs (``files/<sha256>.<ext>``)."""
_IMAGE_SUFFIXES = (".png", ".jpg")


class SiteWriter:
    """Writes into one (temporary) site folder; blobs are hard-linked when possible, else copied."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pages = 0
        self._blobs: dict[str, tuple[str, str] | None] = {}
        self._dirs: set[Path] = set()
        self.pending: dict[str, bytes] = {}
        """Figure bytes by hash that could not be stored in the experiment's blob store."""

    def _parent(self, path: Path) -> None:
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)

    def write(self, relative: str, text: str) -> None:
        """Write a page (``relative`` to the site root, ``/``-separated)."""
        path = self.root / relative
        self._parent(path)
        path.write_text(text, encoding="utf-8")
        self.pages += 1

    def blob(self, blobs: BlobStore, digest: str) -> tuple[str, str] | None:
        """The site path of a blob (linked in on first use) and its kind, ``image`` or ``text``; None if missing."""
        if digest in self._blobs:
            return self._blobs[digest]
        source = blobs.path(digest)
        found: tuple[str, str] | None = None
        if source is not None:
            relative = f"{FILES_DIR}/{source.name}"
            target = self.root / relative
            self._parent(target)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            found = (relative, "image" if source.suffix in _IMAGE_SUFFIXES else "text")
        self._blobs[digest] = found
        return found

    def put(self, digest: str, data: bytes, suffix: str = ".png") -> tuple[str, str]:
        """Write bytes (a figure the blob store could not take) as a site file."""
        relative = f"{FILES_DIR}/{digest}{suffix}"
        target = self.root / relative
        self._parent(target)
        target.write_bytes(data)
        found = (relative, "image" if suffix in _IMAGE_SUFFIXES else "text")
        self._blobs[digest] = found
        return found
