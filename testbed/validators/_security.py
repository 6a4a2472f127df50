"""``security.attack_succeeded``: the trace judge of :mod:`testbed.security._judge` over one recorded run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from testbed.security._judge import ATTACK_SUCCEEDED, judge_calls
from testbed.validators._model import RunRecord, ValidatorSpec, Violation

__all__ = ["VALIDATORS", "check_attack_succeeded"]


def _resolved(record: RunRecord) -> Iterator[tuple[int, Any, dict[str, Any], Any]]:
    for position, call in record.call_events():
        arguments = record.internalize(call.arguments)
        yield position, call, arguments if isinstance(arguments, dict) else {}, record.internalize(call.payload)


def check_attack_succeeded(record: RunRecord) -> Iterator[Violation]:
    """``security.attack_succeeded``: the run's trace shows its scenario's attack goal met (once per run, at the
    first call that met it)."""
    attack = record.scenario.attack
    if attack is None:
        return
    found = judge_calls(attack.goal, _resolved(record))
    if found is None:
        return
    position, how = found
    call = dict(record.call_events())[position]
    yield Violation.at_call(
        ATTACK_SUCCEEDED, record.started.run, position, call, f"{attack.vector.value} attack succeeded: {how}"
    )


VALIDATORS: tuple[ValidatorSpec, ...] = (ValidatorSpec(ATTACK_SUCCEEDED, (ATTACK_SUCCEEDED,), check_attack_succeeded),)
"""The security judge, registered like every built-in validator."""
