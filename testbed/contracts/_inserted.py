"""The adapters a contract inserted on a call, as the call records them and as validators read them back.

A converted call records each inserted adapter in its ``adapters`` as ``"<argument>: <adapter> (contract)"``
(:func:`describe_inserted`). :func:`inserted_mask_conversions` reads the mask ones back into the two
conventions, so a validator that judges an edge by its declared adapter judges a contract's the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from testbed.conventions import MaskEncoding, MaskResolution
from testbed.workflow import Adapter, MaskConvention

__all__ = ["INSERTED_SUFFIX", "describe_inserted", "inserted_arguments", "inserted_mask_conversions"]

INSERTED_SUFFIX: Final = " (contract)"
_MASK_PREFIX: Final = "mask "
_NORMALIZED: Final = "/normalized"


def describe_inserted(argument: str, adapter: Adapter) -> str:
    """The ``adapters`` entry of a call for an adapter a contract inserted on ``argument``."""
    return f"{argument}: {adapter}{INSERTED_SUFFIX}"


def inserted_arguments(adapters: Sequence[str]) -> set[str]:
    """The top-level arguments of a call that a contract inserted an adapter on (its recorded ``adapters``)."""
    return {entry.partition(": ")[0] for entry in adapters if entry.endswith(INSERTED_SUFFIX)}


def inserted_mask_conversions(adapters: Sequence[str]) -> dict[str, tuple[MaskConvention, MaskConvention]]:
    """Per top-level argument, the ``(from, to)`` conventions of each mask adapter a contract inserted.

    Entries that are not a contract's mask adapter (declared adapters, box adapters) are left out.
    """
    found: dict[str, tuple[MaskConvention, MaskConvention]] = {}
    for entry in adapters:
        argument, _, described = entry.partition(": ")
        if not described.endswith(INSERTED_SUFFIX) or not described.startswith(_MASK_PREFIX):
            continue
        source, arrow, target = described.removeprefix(_MASK_PREFIX).removesuffix(INSERTED_SUFFIX).partition(" -> ")
        sides = (_convention(source), _convention(target)) if arrow else (None, None)
        if sides[0] is not None and sides[1] is not None:
            found[argument] = (sides[0], sides[1])
    return found


def _convention(text: str) -> MaskConvention | None:
    """The convention :class:`MaskConvention` writes as ``encoding[/normalized]@resolution``."""
    encoding, _, resolution = text.partition("@")
    normalized = encoding.endswith(_NORMALIZED)
    try:
        return MaskConvention(
            encoding=MaskEncoding(encoding.removesuffix(_NORMALIZED)),
            resolution=MaskResolution(resolution),
            normalized_polygons=normalized,
        )
    except ValueError:
        return None
