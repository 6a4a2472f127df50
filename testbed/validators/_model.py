"""The shapes every validator shares: catalog entries, violations, and what a validator reads.

Validators are pure functions of one run's recorded events, its ground truth,
the servers' truth manifests and tool schemas (all in ``events.jsonl``), so a
replay recomputes exactly the same violations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from testbed.events import (
    BlobStore,
    CallEvent,
    Event,
    ExperimentHeader,
    FaultEvent,
    MessageEvent,
    RunStarted,
    ServerRecord,
)
from testbed.protocol import ServerTruth
from testbed.registry import RECORDED_CONTEXT, ValidatorPlugin
from testbed.scenario import Scenario


@dataclass(frozen=True)
class Violation:
    """One occurrence of a catalogued violation in one run."""

    id: str
    run: int
    server: str | None
    """Server alias it is attributed to (None for run-level findings)."""
    node: str | None
    item: int | None
    detail: str
    """One line explaining this occurrence."""
    evidence: tuple[int, ...] = ()
    """Positions (in the run's event list) of the events that caused it."""

    @classmethod
    def at_call(cls, violation_id: str, run: int, position: int, call: CallEvent, detail: str) -> Violation:
        """A violation attributed to one recorded call (its server, node and item), with the call as evidence."""
        return cls(
            id=violation_id,
            run=run,
            server=call.server,
            node=call.node,
            item=call.item,
            detail=detail,
            evidence=(position,),
        )


_parsed: dict[int, tuple[ExperimentHeader, Scenario]] = {}
"""Recently parsed headers by identity (every run of an experiment shares its header object)."""


def recorded_scenario(header: ExperimentHeader) -> Scenario:
    """The scenario a run header recorded, parsed once per header."""
    cached = _parsed.get(id(header))
    if cached is not None and cached[0] is header:
        return cached[1]
    scenario = Scenario.model_validate(header.scenario, context={RECORDED_CONTEXT: True})
    if len(_parsed) >= 8:
        _parsed.clear()
    _parsed[id(header)] = (header, scenario)
    return scenario


@dataclass(frozen=True)
class RunRecord:
    """Everything a validator may read about one run (all from the experiment directory)."""

    header: ExperimentHeader
    started: RunStarted
    events: tuple[Event, ...]
    """The run's events in recorded (deterministic) order, RunStarted first."""
    blobs: BlobStore
    servers: dict[str, ServerRecord] = field(default_factory=dict)
    """By alias: what each server listed (tools, schemas) and its truth manifest as recorded."""

    @property
    def scenario(self) -> Scenario:
        """The resolved scenario the run's header recorded (kinds this install lacks read as recorded)."""
        return recorded_scenario(self.header)

    def truth(self, alias: str) -> ServerTruth | None:
        record = self.servers.get(alias)
        return ServerTruth.model_validate(record.truth) if record is not None and record.truth else None

    def tools(self, alias: str) -> list[dict[str, Any]]:
        record = self.servers.get(alias)
        return list(record.tools) if record is not None else []

    def calls(self) -> list[tuple[int, CallEvent]]:
        return [(i, e) for i, e in enumerate(self.events) if isinstance(e, CallEvent)]

    def messages(self) -> list[tuple[int, MessageEvent]]:
        return [(i, e) for i, e in enumerate(self.events) if isinstance(e, MessageEvent)]

    def faults(self) -> list[tuple[int, FaultEvent]]:
        return [(i, e) for i, e in enumerate(self.events) if isinstance(e, FaultEvent)]


Validator = Callable[[RunRecord], Iterable[Violation]]
"""A validator: a pure function from one run to the violations it finds."""


ValidatorSpec = ValidatorPlugin
"""A registered validator and the IDs it may emit (checked against the catalog when it registers)."""
