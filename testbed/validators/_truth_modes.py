"""Truth modes: what the validators that read a truth manifest read, server by server.

Our servers come with a manifest of what they actually do (``truth``). An
external server comes with one only when the scenario gives a truth file;
without it, those validators read what the server *declares* in its recorded
``tools/list`` (``declared``: the extension keywords, see
:func:`testbed.protocol.declared_truth`), and where it declares nothing they
skip it (``none``). The mode is a pure function of the run header, so replay
and reports see exactly what the run saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from testbed.events import ExperimentHeader, ServerRecord, TruthMode
from testbed.protocol import ServerTruth, declared_truth

__all__ = [
    "MODE_MEANINGS",
    "TRUTH_READERS",
    "ServerMode",
    "declared_of",
    "server_modes",
    "truth_mode",
]

TRUTH_READERS: Final = (
    "coords.undeclared",
    "coords.out_of_bounds",
    "coords.mismatch",
    "coords.crop_misses_object",
    "mask.size_mismatch",
    "mask.outside_box",
    "mask.encoding_mismatch",
    "memory.handle_unknown",
    "memory.handle_expired",
    "memory.retention_exceeded",
    "memory.cross_agent",
    "memory.handle_out_of_scope",
    "memory.unbounded_store",
    "perm.path_outside_sandbox",
    "schema.field_name_divergence",
    "coords.scale_mismatch",
    "conn.binary_unparseable",
    "provenance.untracked",
)
"""The built-in checks that read servers' truth manifests (``RunRecord.truth``); every other one reads only
what was recorded on the wire. ``tests/test_external_servers.py`` keeps this list honest."""

MODE_MEANINGS: Final[dict[TruthMode, str]] = {
    "truth": "its truth manifest (what it actually does)",
    "declared": "declared only: what its tools/list declares (no truth manifest)",
    "none": "skipped: no truth manifest and nothing declared",
}
"""How reports explain each mode."""

_derived: dict[int, tuple[ServerRecord, ServerTruth | None]] = {}
"""Derived manifests by server record identity (every run of an experiment shares its header's records)."""


def declared_of(record: ServerRecord) -> ServerTruth | None:
    """What ``record``'s recorded ``tools/list`` declares, as a manifest; ``None`` where nothing is declared."""
    cached = _derived.get(id(record))
    if cached is not None and cached[0] is record:
        return cached[1]
    derived = declared_truth(record.server, record.tools)
    if len(_derived) >= 256:
        _derived.clear()
    _derived[id(record)] = (record, derived)
    return derived


def truth_mode(record: ServerRecord) -> TruthMode:
    """How the truth-reading validators see one recorded server."""
    if record.truth:
        return "truth"
    return "declared" if declared_of(record) is not None else "none"


@dataclass(frozen=True)
class ServerMode:
    """One server alias of an experiment and the mode its truth-reading validators ran in."""

    alias: str
    server: str
    mode: TruthMode

    @property
    def meaning(self) -> str:
        return MODE_MEANINGS[self.mode]


def server_modes(header: ExperimentHeader) -> tuple[ServerMode, ...]:
    """Every server of the experiment, in header order, with its truth mode."""
    return tuple(ServerMode(record.alias, record.server, truth_mode(record)) for record in header.servers)
