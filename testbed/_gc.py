"""Cyclic garbage collection that does not scan, again and again, what a long job keeps.

A full collection scans every object the collector tracks. In a process that has imported torch and read a
recording that is hundreds of thousands of objects: 76-78 ms each time on this project's 2-core machine, about
once per 100 replayed runs, a quarter of the replay's own time. What a job starts with (modules, loaded models)
and what it reads once and keeps (a recording's events) is not garbage while the job runs, so the job moves it
out of the collector's sight (:func:`gc.freeze`) and puts it back when it ends (:func:`gc.unfreeze`). Objects
made during the job are collected as before.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["kept_objects_unscanned", "leave_kept_objects_unscanned"]

_lock = threading.Lock()
_depth = 0
"""How many :func:`kept_objects_unscanned` blocks are open (threads share the collector)."""
_frozen_before = False
"""Whether the process had frozen objects itself when the outermost block opened: then nothing is unfrozen
(:func:`gc.unfreeze` cannot tell its objects from the block's, and a process freezes for its own reasons,
such as sharing pages with forked children)."""


@contextmanager
def kept_objects_unscanned() -> Iterator[None]:
    """Within the block, leave every object that exists on entering it out of cyclic collections.

    Blocks may nest or overlap (threads); the objects come back into sight when the last one closes, unless
    the process had frozen objects of its own before the first one opened.
    """
    global _depth, _frozen_before
    with _lock:
        if _depth == 0:
            _frozen_before = gc.get_freeze_count() > 0
        _depth += 1
        gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and not _frozen_before:
                gc.unfreeze()


def leave_kept_objects_unscanned() -> None:
    """Inside :func:`kept_objects_unscanned`, leave out also every object that exists now (what the job has
    just read and will keep, such as a recording's events); outside any such block, do nothing."""
    with _lock:
        if _depth:
            gc.freeze()
