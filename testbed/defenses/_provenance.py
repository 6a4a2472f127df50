"""Provenance tagging: every value a call returns is tagged with the call; data arguments must carry a tag."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["ProvenanceTags", "string_leaves"]

_MAX_DEPTH = 32


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


class ProvenanceTags:
    """The current run's tagged values: the scene (by value and by path), then what each call returned."""

    def __init__(self) -> None:
        self._tags: dict[str, str] = {}

    def start(self, *scene_values: str) -> None:
        """Forget the last run's tags; tag the new run's scene."""
        self._tags = dict.fromkeys(scene_values, "the scene")

    def tag(self, produced: Any, producer: str) -> None:
        """Tag every string in ``produced`` (a payload or content blocks) with the call that returned it."""
        for leaf in string_leaves(produced):
            self._tags.setdefault(leaf, producer)

    def refusal(self, argument: str, value: Any, *, run: int) -> str | None:
        """Why ``value`` may not cross into ``argument``, or ``None`` when every string in it is tagged."""
        for leaf in string_leaves(value):
            if leaf not in self._tags:
                return (
                    f"argument {argument!r} = {leaf[:60]!r} has no provenance in run {run}: "
                    "it is neither the scene nor returned by a call of this run"
                )
        return None
