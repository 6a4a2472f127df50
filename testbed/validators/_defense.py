"""Defense validators: one ID per defense, for each call it refused (a ``defense`` event in the run)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from testbed.defenses import Defense
from testbed.events import DefenseEvent
from testbed.validators._model import RunRecord, ValidatorSpec, Violation

__all__ = ["DEFENSE_IDS", "VALIDATORS"]

DEFENSE_IDS: dict[Defense, str] = {
    Defense.TOOL_PINNING: "defense.tool_unpinned",
    Defense.ROLE_BINDING: "defense.privilege_exceeded",
    Defense.SCOPED_MEMORY: "defense.handle_unscoped",
    Defense.PROVENANCE_TAGS: "defense.provenance_untagged",
}
"""The violation ID each defense's refusals get."""


def _refusals(defense: Defense) -> Callable[[RunRecord], Iterator[Violation]]:
    violation_id = DEFENSE_IDS[defense]

    def check(record: RunRecord) -> Iterator[Violation]:
        for position, event in record.events_of(DefenseEvent):
            if event.defense == defense.value:
                yield Violation(
                    violation_id,
                    record.started.run,
                    event.server,
                    event.node,
                    event.item,
                    f"{event.server}.{event.tool} refused: {event.detail}",
                    (position,),
                )

    check.__doc__ = f"``{violation_id}``: a call {defense.value} refused (a recorded defense event)."
    return check


VALIDATORS: tuple[ValidatorSpec, ...] = tuple(
    ValidatorSpec(violation_id, (violation_id,), _refusals(defense)) for defense, violation_id in DEFENSE_IDS.items()
)
