"""``provenance.untracked``: a value with no recorded producer, or an image made from nothing it was given.

Two rules over one run's recorded calls:

* **Consumed without a producer.** An argument that carries an image, a handle,
  a path or a mask (by its tool's truth roles), or any ``context://`` reference,
  must be a value the run recorded before the call: the scene (its image, or
  its file in the run's sandbox) or a part of an earlier call's result in this
  run. A value found nowhere was made up, carried over from another run, or
  converted on the way with no declared adapter (an argument a node declares
  an adapter for is tracked, and exempt).
* **Laundered output.** A call that answers with an image (image content, or a
  result at its tool's ``crop`` role) while it was given no image, handle,
  path, mask or context reference made that image from state no call of the
  run handed it: its provenance is untracked even where it claims a source.

Roles come from each server's truth manifest, or what its listing declares;
a server with neither is checked for ``context://`` references only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Final

from testbed.events import CallEvent, CallOutcomeKind
from testbed.memory import is_context_uri
from testbed.protocol import SemanticRole, ToolTruth
from testbed.validators._model import RunRecord, ValidatorSpec, Violation
from testbed.validators._workflow import run_workflow

__all__ = ["VALIDATORS", "check_untracked_provenance"]

ID: Final = "provenance.untracked"
_CARRIERS: Final = frozenset(
    {SemanticRole.IMAGE, SemanticRole.IMAGE_HANDLE, SemanticRole.IMAGE_PATH, SemanticRole.MASK}
)
"""Roles of arguments that carry (or name) pixels: their values must have a recorded producer."""
_SCENE_FILE: Final = "scene.png"


def check_untracked_provenance(record: RunRecord) -> Iterator[Violation]:
    """``provenance.untracked``: see the module docstring for the two rules."""
    produced: list[tuple[float, Any]] = []
    """Each earlier OK call's clock and recorded payload; their parts are keyed only when a value is looked up."""
    parts: dict[int, set[str]] = {}

    def produced_before(key: str, clock: float) -> bool:
        for index, (made_at, payload) in enumerate(produced):
            if made_at >= clock:
                continue
            if index not in parts:
                parts[index] = _parts(payload)
            if key in parts[index]:
                return True
        return False

    for at, call in record.calls():
        if call.outcome is CallOutcomeKind.SKIPPED:
            continue
        tool = _truth(record, call)
        carriers = _carrier_arguments(call, tool)
        checked = carriers - _adapted_arguments(record, call.node) if carriers else set()
        for name in sorted(checked):
            key = _key(call.arguments[name])
            if key not in _scene_values(record) and not produced_before(key, call.clock):
                detail = (
                    f"argument {name!r} of {call.tool} was sent {_short(record.internalize(call.arguments[name]))}, "
                    "which neither the scene nor any earlier call of this run produced"
                )
                yield Violation.at_call(ID, record.started.run, at, call, detail)
        if call.outcome is CallOutcomeKind.OK:
            if not carriers and tool is not None and _answers_with_image(call, tool):
                detail = (
                    f"{call.tool} answered with an image although it was given no image, handle, path, mask or "
                    "context reference: the image comes from state no call of this run handed it"
                )
                yield Violation.at_call(ID, record.started.run, at, call, detail)
            produced.append((call.clock, call.payload))


def _truth(record: RunRecord, call: CallEvent) -> ToolTruth | None:
    truth = record.truth(call.server)
    if truth is None:
        return None
    try:
        return truth.tool(call.tool)
    except KeyError:
        return None


def _carrier_arguments(call: CallEvent, tool: ToolTruth | None) -> set[str]:
    names = {name for name, value in call.arguments.items() if is_context_uri(value)}
    if tool is not None:
        names |= {name for role, name in tool.inputs.items() if role in _CARRIERS and name in call.arguments}
    return names


def _answers_with_image(call: CallEvent, tool: ToolTruth) -> bool:
    return "image" in call.content_types or SemanticRole.CROP in tool.paths


def _adapted_arguments(record: RunRecord, node: str) -> set[str]:
    workflow = run_workflow(record)
    if workflow is None:
        return set()
    return {arg for each in workflow.nodes if each.id == node for arg in each.adapters}


def _scene_values(record: RunRecord) -> set[str]:
    def compute() -> set[str]:
        started = record.started
        values = {_key({"$blob": started.image_blob})}
        for call in (call for _, call in record.calls()):
            for value in call.arguments.values():
                if isinstance(value, str) and value.replace("\\", "/").endswith(f"/{started.scope}/{_SCENE_FILE}"):
                    values.add(_key(value))
        return values

    found: set[str] = record.memo("provenance.scene_values", compute)
    return found


def _parts(payload: Any) -> set[str]:
    """Every value inside a (recorded, blob-externalized) result, as comparable keys."""
    keys: set[str] = set()
    stack = [payload]
    while stack:
        value = stack.pop()
        if value is None:
            continue
        keys.add(_key(value))
        if isinstance(value, dict) and set(value) != {"$blob"}:
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return keys


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


VALIDATORS = (ValidatorSpec(ID, (ID,), check_untracked_provenance),)
