"""Provenance tagging: every value a call returns is tagged with the call, as data or as text.

A value is *data* when the call returned it where its producer declares a data role (an image, path, handle,
mask or crop, per the producer's truth manifest), or as an image or resource content block; every other string
it returned (a message, a caption, a note) is *text*. A data argument must carry a data tag of this run: text a
tool returned, echoed into a path or a handle, is refused, which is how an injected path or command travels.
A producer the testbed has no truth manifest for cannot say which of its fields are data: all it returns is
tagged as data (the check then only proves the value came from a call of this run).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["ProvenanceTags", "content_data", "string_leaves"]

_MAX_DEPTH = 32
_DATA_BLOCKS = {"image": ("data",), "audio": ("data",), "resource_link": ("uri",)}
"""Content block types that carry data, and their fields holding it (embedded resources: see :func:`content_data`)."""


def string_leaves(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string inside ``value`` (nested dicts and lists), depth-bounded."""
    if isinstance(value, str):
        yield value
    elif depth < _MAX_DEPTH and isinstance(value, dict):
        for child in value.values():
            yield from string_leaves(child, depth + 1)
    elif depth < _MAX_DEPTH and isinstance(value, list | tuple):
        for child in value:
            yield from string_leaves(child, depth + 1)


def content_data(content: list[dict[str, Any]]) -> Iterator[str]:
    """The data a result's content blocks carry: image and audio bytes, resource links and embedded resources."""
    for block in content:
        kind = block.get("type")
        for field in _DATA_BLOCKS.get(str(kind), ()):
            if isinstance(block.get(field), str):
                yield block[field]
        resource = block.get("resource") if kind == "resource" else None
        if isinstance(resource, dict):
            yield from (resource[key] for key in ("uri", "blob") if isinstance(resource.get(key), str))


class ProvenanceTags:
    """The current run's tagged values: the scene (by value and by path), then what each call returned."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._text: dict[str, str] = {}

    def start(self, *scene_values: str) -> None:
        """Forget the last run's tags; tag the new run's scene as data."""
        self._data = dict.fromkeys(scene_values, "the scene")
        self._text = {}

    def tag_data(self, produced: Any, producer: str) -> None:
        """Tag every string in ``produced`` as data the call ``producer`` returned."""
        for leaf in string_leaves(produced):
            self._data.setdefault(leaf, producer)

    def tag_text(self, produced: Any, producer: str) -> None:
        """Tag every string in ``produced`` that is not data already as text the call ``producer`` returned."""
        for leaf in string_leaves(produced):
            if leaf not in self._data:
                self._text.setdefault(leaf, producer)

    def refusal(self, argument: str, value: Any, *, run: int) -> str | None:
        """Why ``value`` may not cross into ``argument``, or ``None`` when every string in it is tagged as data."""
        for leaf in string_leaves(value):
            if leaf in self._data:
                continue
            producer = self._text.get(leaf)
            if producer is not None:
                return (
                    f"argument {argument!r} = {leaf[:60]!r} is text {producer} returned, not data it declares "
                    "(an image, path, handle or mask): a tool's output echoed into a data argument"
                )
            return (
                f"argument {argument!r} = {leaf[:60]!r} has no provenance in run {run}: "
                "it is neither the scene nor returned by a call of this run"
            )
        return None
