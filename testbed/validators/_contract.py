"""Runtime-contract findings as violations: ``contract.violation`` and ``contract.unevaluable``.

The orchestrator records each contract finding with its decision (:class:`~testbed.events.ContractEvent`);
a breach the policy answered by halting the run is a ``contract.violation``, a rule that could not be
evaluated is a ``contract.unevaluable``. A breach remedied by a tracked conversion, a fallback tool or a
new plan is no violation: the value that crossed the edge met the contract.
"""

from __future__ import annotations

from collections.abc import Iterator

from testbed.events import ContractEvent
from testbed.validators._model import RunRecord, ValidatorSpec, Violation


def check_contracts(record: RunRecord) -> Iterator[Violation]:
    for at, event in record.events_of(ContractEvent):
        if event.finding == "unevaluable":
            violation_id = "contract.unevaluable"
        elif event.decision == "halt":
            violation_id = "contract.violation"
        else:
            continue
        yield Violation(
            id=violation_id,
            run=record.started.run,
            server=event.server,
            node=event.node,
            item=event.item,
            detail=f"{event.rule}: {event.detail}",
            evidence=(at,),
        )


VALIDATORS = (ValidatorSpec("contract", ("contract.violation", "contract.unevaluable"), check_contracts),)
