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

from testbed.contracts import inserted_arguments
from testbed.events import CallEvent, CallOutcomeKind
from testbed.memory import is_context_uri
from testbed.protocol import SemanticRole, ToolTruth
from testbed.validators._coords import tool_truth
from testbed.validators._model import RunRecord, ValidatorSpec, Violation
from testbed.validators._workflow import run_workflow
from testbed.workflow import Workflow

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
    parts: dict[int, _Parts] = {}

    def produced_before(value: Any, key: _Key, clock: float) -> bool:
        for index, (made_at, payload) in enumerate(produced):
            if made_at >= clock:
                continue
            if index not in parts:
                parts[index] = _Parts(payload)
            if parts[index].holds(value, key):
                return True
        return False

    for at, call in record.call_events():
        if call.outcome is CallOutcomeKind.SKIPPED:
            continue
        tool = tool_truth(record, call)
        carriers = _carrier_arguments(call, tool)
        adapted = _adapted_arguments(record, call.node)
        if carriers and (adapted or call.adapters):
            checked = carriers - adapted - inserted_arguments(call.adapters)
        else:
            checked = carriers  # nothing adapted: every carrier is checked (or there is none)
        for name in sorted(checked):
            value = call.arguments[name]
            key = _key(value)
            if key not in _scene_values(record) and not produced_before(value, key, call.clock):
                detail = (
                    f"argument {name!r} of {call.tool} was sent {_short(record.internalize(value))}, "
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


def _carrier_arguments(call: CallEvent, tool: ToolTruth | None) -> set[str]:
    arguments = call.arguments
    names = {name for name, value in arguments.items() if isinstance(value, str) and is_context_uri(value)}
    if tool is not None:
        names.update([name for name in _carrier_inputs(tool) if name in arguments])
    return names


_carriers: dict[int, tuple[ToolTruth, tuple[str, ...]]] = {}
"""Each tool truth's carrier inputs, by the truth's identity (shared by the runs of an experiment)."""


def _carrier_inputs(tool: ToolTruth) -> tuple[str, ...]:
    """The inputs ``tool`` reads in a carrier role (:data:`_CARRIERS`), in its truth's order, once per truth object."""
    cached = _carriers.get(id(tool))
    if cached is not None and cached[0] is tool:
        return cached[1]
    names = tuple(name for role, name in tool.inputs.items() if role in _CARRIERS)
    if len(_carriers) >= 1024:
        _carriers.clear()
    _carriers[id(tool)] = (tool, names)
    return names


def _answers_with_image(call: CallEvent, tool: ToolTruth) -> bool:
    return "image" in call.content_types or SemanticRole.CROP in tool.paths


def _adapted_arguments(record: RunRecord, node: str) -> frozenset[str]:
    workflow = run_workflow(record)
    if workflow is None:
        return frozenset()
    return _adapted_by_node(workflow).get(node, frozenset())


_adapted: dict[int, tuple[Workflow, dict[str, frozenset[str]]]] = {}
"""Each workflow's adapted arguments by node, by the workflow's identity (shared by the runs of an experiment)."""


def _adapted_by_node(workflow: Workflow) -> dict[str, frozenset[str]]:
    """Per node id, the arguments its nodes declare adapters for, once per workflow object."""
    cached = _adapted.get(id(workflow))
    if cached is not None and cached[0] is workflow:
        return cached[1]
    found: dict[str, set[str]] = {}
    for each in workflow.nodes:
        found.setdefault(each.id, set()).update(each.adapters)
    by_node = {node: frozenset(arguments) for node, arguments in found.items()}
    if len(_adapted) >= 256:
        _adapted.clear()
    _adapted[id(workflow)] = (workflow, by_node)
    return by_node


def _scene_values(record: RunRecord) -> set[_Key]:
    def compute() -> set[_Key]:
        started = record.started
        values = {_key({"$blob": started.image_blob})}
        for call in (call for _, call in record.call_events()):
            for value in call.arguments.values():
                if isinstance(value, str) and value.replace("\\", "/").endswith(f"/{started.scope}/{_SCENE_FILE}"):
                    values.add(_key(value))
        return values

    found: set[_Key] | None = record._memo.get("provenance.scene_values")
    if found is None:
        found = record.memo("provenance.scene_values", compute)
    return found


class _Parts:
    """Every value inside a (recorded, blob-externalized) result, looked up as JSON: a value is held when its
    canonical JSON equals a part's.

    Strings and blob references, what carriers mostly are, are held as themselves (a string's JSON is a
    function of it, and so is a blob reference's of its digest); the JSON of anything else, costly and seldom
    looked up, is written only when such a value is looked up.
    """

    def __init__(self, payload: Any) -> None:
        self._payload = payload
        self._strings: set[str] = set()
        self._digests: set[str] = set()
        self._others: dict[tuple[str, int], list[Any]] | None = None
        """The other parts by :func:`_shape` (only parts of one shape can have equal JSON), found when first needed."""
        self._other_keys: dict[tuple[str, int], set[str]] = {}
        stack = [payload]
        while stack:
            value = stack.pop()
            if isinstance(value, str):
                self._strings.add(value)
            elif isinstance(value, dict):
                if (digest := _blob_digest(value)) is not None:
                    self._digests.add(digest)
                elif set(value) != {"$blob"}:
                    stack.extend(value.values())
            elif isinstance(value, list) and not _NO_STRINGS.issuperset(map(type, value)):
                stack.extend(value)

    def _other_parts(self) -> dict[tuple[str, int], list[Any]]:
        if self._others is None:
            self._others = {}
            stack = [self._payload]
            while stack:
                value = stack.pop()
                if value is None or isinstance(value, str):
                    continue
                if isinstance(value, dict) and _blob_digest(value) is not None:
                    continue
                self._others.setdefault(_shape(value), []).append(value)
                if isinstance(value, dict) and set(value) != {"$blob"}:
                    stack.extend(value.values())
                elif isinstance(value, list):
                    stack.extend(value)
        return self._others

    def holds(self, value: Any, key: _Key | None = None) -> bool:
        """Whether ``value`` equals (as JSON) a part of the payload (``key``: its :func:`_key`, if made already)."""
        if isinstance(value, str):
            return value in self._strings
        if isinstance(value, dict) and (digest := _blob_digest(value)) is not None:
            return digest in self._digests
        shape = _shape(value)
        keys = self._other_keys.get(shape)
        if keys is None:
            keys = self._other_keys[shape] = {_json(other) for other in self._other_parts().get(shape, ())}
        return (key[1] if isinstance(key, tuple) else _json(value)) in keys  # ("json", its canonical JSON)


_NO_STRINGS = frozenset({int, float, bool, type(None)})
"""Types that are neither strings nor hold any."""


def _shape(value: Any) -> tuple[str, int]:
    """What a value's JSON must share with another's to be equal: an object's or array's member count, or
    neither (a number, a boolean)."""
    if isinstance(value, dict):
        return ("object", len(value))
    if isinstance(value, list):
        return ("array", len(value))
    return ("scalar", 0)


_Key = str | tuple[str, str]
"""A value's identity as JSON: two values have equal keys exactly when their canonical JSON is equal."""


def _blob_digest(value: dict[Any, Any]) -> str | None:
    digest = value.get("$blob") if len(value) == 1 else None
    return digest if isinstance(digest, str) else None


def _key(value: Any) -> _Key:
    """A string stands for itself (its JSON is a function of it); a blob reference for its digest; anything
    else for its canonical JSON. The three kinds never compare equal to each other."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and (digest := _blob_digest(value)) is not None:
        return ("$blob", digest)
    return ("json", _json(value))


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


VALIDATORS = (ValidatorSpec(ID, (ID,), check_untracked_provenance),)
