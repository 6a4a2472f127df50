"""The orchestrator's side of the defenses: what it asks before each call goes out.

One :class:`DefenseGuard` lives with the server pool for the whole experiment (tool pins outlive a run). At
the start of each run it checks the listing (:meth:`DefenseGuard.start_run`); before each call it answers why
the call is refused, or ``None`` (:meth:`DefenseGuard.refuse`). Results are read back lazily from the run's
view: a call's issued handles and provenance tags are taken from ``view.results`` when the next call asks,
which needs no second hook and sees exactly what the agent sees. Each refusal is a :class:`DefenseEvent`
added to the run's record (``view.agent_events``), so a replay, which runs the same checks on the same
recorded answers, refuses the same calls.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from testbed.agent import PlannedCall, RunView
from testbed.defenses._config import Defense, Defenses, PrivilegeLevel
from testbed.defenses._memory import HandleScopes, Issue
from testbed.defenses._pinning import ToolPins
from testbed.defenses._privilege import role_level, tool_levels
from testbed.defenses._provenance import ProvenanceTags, content_data, string_leaves
from testbed.events import BlobStore, DefenseEvent, externalize
from testbed.protocol import SemanticRole, ToolTruth
from testbed.transport import Connection
from testbed.workflow import read_path

__all__ = ["DATA_ROLES", "HANDLE_ROLES", "PROVENANCE_ROLES", "DefenseGuard"]

HANDLE_ROLES = (SemanticRole.IMAGE_HANDLE, SemanticRole.CROP_HANDLE)
"""Argument and result roles (per the truth manifest) that carry handles."""
PROVENANCE_ROLES = (
    SemanticRole.IMAGE,
    SemanticRole.IMAGE_PATH,
    SemanticRole.IMAGE_HANDLE,
    SemanticRole.CROP_HANDLE,
    SemanticRole.MASK,
)
"""Argument roles whose values must carry a provenance tag: the data a pipeline passes along."""
DATA_ROLES = (*PROVENANCE_ROLES, SemanticRole.CROP)
"""Result roles (per the producer's truth manifest) whose values are tagged as data; the rest of a result is text."""


@dataclass(frozen=True)
class _Sent:
    """A call the guard let through, until its result is read back."""

    call: PlannedCall
    clock: float
    truth: ToolTruth | None


@dataclass
class _Run:
    """The state of the run under way."""

    view: RunView
    blobs: BlobStore
    changed: dict[str, str]
    """Tools listed differently than pinned, with why."""
    levels: dict[str, PrivilegeLevel]
    role: PrivilegeLevel
    sent: dict[tuple[str, int], _Sent]
    read_back: set[str]
    """Nodes whose results were read back."""
    refusals: int = 0


class DefenseGuard:
    """Enforces a scenario's ``defenses`` on every run of an experiment (nothing when all are off)."""

    def __init__(self, defenses: Defenses | None = None, grants: Sequence[str] | None = None) -> None:
        self.defenses = defenses if defenses is not None else Defenses()
        self._grants = tuple(grants) if grants is not None else None
        self._pins = ToolPins()
        self._handles = HandleScopes(self.defenses.memory_ttl_s)
        self._tags = ProvenanceTags()
        self._run: _Run | None = None

    @property
    def active(self) -> bool:
        return bool(self.defenses.enabled)

    def start_run(self, view: RunView, blobs: BlobStore) -> None:
        """A run begins: collect the last run's handles, check the listing against the pins, tag the scene."""
        if not self.active:
            return
        self._handles.collect()
        self._tags.start(view.scene.image, view.scene.image_path)
        levels = tool_levels(view.catalog, self.defenses)
        self._run = _Run(
            view=view,
            blobs=blobs,
            changed=self._pins.check(view.catalog) if self.defenses.tool_pinning else {},
            levels=levels,
            role=role_level(levels, self.defenses, self._grants),
            sent={},
            read_back=set(),
        )

    def refuse(self, call: PlannedCall, clock: float, connection: Connection | None) -> str | None:
        """Why ``call`` may not go out (recorded as a defense event), or ``None`` when it may."""
        run = self._run
        if run is None:
            return None
        self._read_back(run)
        truth = _tool_truth(connection, call.tool)
        found = self._first_refusal(run, call, clock, truth)
        if found is None:
            run.sent[(call.node, call.item)] = _Sent(call, clock, truth)
            return None
        defense, detail = found
        run.view.agent_events.append(
            DefenseEvent(
                time=time.time(),
                run=run.view.run,
                agent=call.agent,
                seq=run.refusals,
                defense=defense.value,
                node=call.node,
                item=call.item,
                server=call.server,
                tool=call.tool,
                arguments=externalize(call.arguments, run.blobs),
                detail=detail,
            )
        )
        run.refusals += 1
        return f"refused by {defense.value}: {detail}"

    def _first_refusal(
        self, run: _Run, call: PlannedCall, clock: float, truth: ToolTruth | None
    ) -> tuple[Defense, str] | None:
        name = f"{call.server}.{call.tool}"
        if self.defenses.tool_pinning and name in run.changed:
            return Defense.TOOL_PINNING, run.changed[name]
        if self.defenses.role_binding:
            level = run.levels.get(name, PrivilegeLevel.DESTRUCTIVE)
            if level.rank > run.role.rank:
                return Defense.ROLE_BINDING, f"{name} is {level.value}, above the agent's role ({run.role.value})"
        if self.defenses.scoped_memory and truth is not None:
            for role in HANDLE_ROLES:
                handle = call.arguments.get(truth.inputs[role]) if role in truth.inputs else None
                if isinstance(handle, str):
                    why = self._handles.refusal(handle, run=run.view.run, agent=call.agent, clock=clock)
                    if why is not None:
                        return Defense.SCOPED_MEMORY, why
        if self.defenses.provenance_tags and truth is not None:
            adapted = {description.partition(":")[0] for description in call.adapters}
            for role in PROVENANCE_ROLES:
                argument = truth.inputs.get(role)
                if argument is None or argument not in call.arguments or argument in adapted:
                    continue  # a declared adapter's output is tracked by the adapter recorded on the call
                why = self._tags.refusal(argument, call.arguments[argument], run=run.view.run)
                if why is not None:
                    return Defense.PROVENANCE_TAGS, why
        return None

    def _read_back(self, run: _Run) -> None:
        """Take the handles and tags of every call whose result arrived since the last call asked."""
        for node, result in run.view.results.items():
            if node in run.read_back:
                continue
            run.read_back.add(node)
            for item, record in enumerate(result.calls):
                sent = run.sent.pop((node, item), None)
                if sent is None or record.outcome != "ok":
                    continue
                producer = f"{sent.call.server}.{sent.call.tool} ({node}#{item})"
                self._tag(sent.truth, record.payload, record.content, producer)
                self._issue_handles(run, sent, record.payload, producer)

    def _tag(self, truth: ToolTruth | None, payload: object, content: list[dict[str, Any]], producer: str) -> None:
        """Tag a result: as data where its producer declares a data role (all of it when there is no manifest)."""
        if truth is None:
            self._tags.tag_data(payload, producer)
            self._tags.tag_data(content, producer)
            return
        for role in DATA_ROLES:
            path = truth.paths.get(role)
            if path is None:
                continue
            try:
                self._tags.tag_data(read_path(payload, path), producer)
            except (ValueError, TypeError, KeyError, IndexError):
                continue
        self._tags.tag_data(list(content_data(content)), producer)
        self._tags.tag_text(payload, producer)

    def _issue_handles(self, run: _Run, sent: _Sent, payload: object, producer: str) -> None:
        if sent.truth is None:
            return
        for role in HANDLE_ROLES:
            path = sent.truth.paths.get(role)
            if path is None:
                continue
            try:
                value = read_path(payload, path)
            except (ValueError, TypeError, KeyError, IndexError):
                continue
            for handle in string_leaves(value):
                self._handles.issue(handle, Issue(run.view.run, sent.call.agent, sent.clock, producer))


def _tool_truth(connection: Connection | None, tool: str) -> ToolTruth | None:
    truth = connection.truth if connection is not None else None
    if truth is None:
        return None
    return next((candidate for candidate in truth.tools if candidate.name == tool), None)
