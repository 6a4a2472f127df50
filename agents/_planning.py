"""Turning workflow nodes into calls: shared by every agent, whether its nodes are scripted or planned at run time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from testbed.agent import PlannedCall, RunView, SceneView
from testbed.conventions import ImageSize
from testbed.events import PlanEvent
from testbed.workflow import (
    AdapterError,
    BindingContext,
    BindingError,
    WorkflowNode,
    apply_adapters,
    apply_adapters_each,
    bind_arguments,
    resolve_for_each,
)

MAX_REFERENCES = 48
"""Most references offered to a planner at one step (the rest are left out, deepest first)."""


@dataclass(frozen=True)
class NodePlan:
    """What one node comes to at this step: calls, an empty fan-out, or the reason it cannot run."""

    calls: tuple[PlannedCall, ...] = ()
    empty: bool = False
    skipped: str | None = None


@dataclass
class PlanLog:
    r"""Records an agent's planning decisions as numbered :class:`PlanEvent`\ s in the run's view."""

    agent: str
    kind: str
    seq: int = field(default=0)

    def reset(self) -> None:
        """Start numbering again (at the start of a run)."""
        self.seq = 0

    def record(self, view: RunView, *, valid: bool, plan: dict[str, Any], problems: list[str] | None = None) -> None:
        view.agent_events.append(
            PlanEvent(
                time=time.time(),
                run=view.run,
                agent=self.agent,
                seq=self.seq,
                kind=self.kind,
                valid=valid,
                problems=problems or [],
                plan=plan,
            )
        )
        self.seq += 1


_SCENE_FIELDS = tuple(item.name for item in fields(SceneView))


def _scene_fields(scene: SceneView) -> tuple[str, ...]:
    return _SCENE_FIELDS if type(scene) is SceneView else tuple(item.name for item in fields(scene))


def binding_context(view: RunView) -> BindingContext:
    """What references resolve against in ``view``: the scene and every finished node's results."""
    scene = view.scene  # its fields are str and int: asdict's deep copies would copy nothing
    return BindingContext(
        scene={name: getattr(scene, name) for name in _scene_fields(scene)},
        payloads={node: result.payload for node, result in view.results.items()},
        contents={node: result.content for node, result in view.results.items()},
    )


def plan_node(node: WorkflowNode, view: RunView, *, agent: str = "") -> NodePlan:
    """Bind ``node``'s arguments against ``view`` and apply its declared adapters: one call per item."""
    context = binding_context(view)
    size = ImageSize(width=view.scene.width, height=view.scene.height)
    adapters = tuple(f"{name}: {adapter}" for name, adapter in node.adapters.items())
    calls: list[PlannedCall] = []
    try:
        items = resolve_for_each(node, context)
        if items is None:
            arguments = apply_adapters(node, bind_arguments(node, context), image_size=size)
            calls.append(_call(node, 0, arguments, adapters, fan_out=False, agent=agent))
        elif not items:
            return NodePlan(empty=True)
        else:
            bound: list[dict[str, object]] = []
            unbound: Exception | None = None
            for item in items:
                try:
                    bound.append(bind_arguments(node, context.with_item(item)))
                except Exception as error:  # raised below, after the items before it were adapted
                    unbound = error
                    break
            # Item after item, the items bound before a failing one were adapted before it failed: their adapter
            # errors come first.
            adapted = apply_adapters_each(node, bound, image_size=size)
            if unbound is not None:
                raise unbound
            for index, arguments in enumerate(adapted):
                calls.append(_call(node, index, arguments, adapters, fan_out=True, agent=agent))
    except (BindingError, AdapterError) as error:
        return NodePlan(skipped=str(error))
    return NodePlan(calls=tuple(calls))


def _call(
    node: WorkflowNode,
    item: int,
    arguments: dict[str, object],
    adapters: tuple[str, ...],
    *,
    fan_out: bool,
    agent: str,
) -> PlannedCall:
    return PlannedCall(
        node=node.id,
        item=item,
        server=node.server,
        tool=node.tool,
        arguments=dict(arguments),
        adapters=adapters,
        deadline_s=node.deadline_s,
        fan_out=fan_out,
        agent=agent,
        origin=node,
    )


def failed_producers(producers: Iterator[str] | list[str], view: RunView) -> list[str]:
    """Those of ``producers`` that were skipped or had a call that did not succeed."""
    return sorted(p for p in producers if p in view.skipped or (p in view.results and not view.results[p].succeeded))


def payload_references(view: RunView) -> tuple[list[str], list[str]]:
    """References a planner may use now: ``(values, lists)``.

    ``values`` are the scene's fields and every leaf path of each finished node's payload (lists
    walked with ``[*]``); ``lists`` are the paths that point at lists, usable as ``for_each``.
    """
    values = ["$scene.image", "$scene.image_path", "$scene.width", "$scene.height"]
    lists: list[str] = []
    for node, result in view.results.items():
        if result.succeeded:
            _walk_paths(f"${node}", result.payload, values, lists, depth=0)
    return values[:MAX_REFERENCES], lists[:MAX_REFERENCES]


def item_references(view: RunView, list_reference: str) -> list[str]:
    """The ``$item`` references into the elements of the list ``list_reference`` points at."""
    from testbed.workflow import parse_reference, resolve

    try:
        value = resolve(parse_reference(list_reference), binding_context(view))
    except (BindingError, ValueError):
        return []
    if not isinstance(value, list) or not value:
        return []
    values: list[str] = []
    _walk_paths("$item", value[0], values, [], depth=0)
    return values[:MAX_REFERENCES]


def _walk_paths(prefix: str, value: Any, values: list[str], lists: list[str], *, depth: int) -> None:
    if depth > 4:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            if isinstance(key, str) and key.isidentifier():
                _walk_paths(f"{prefix}.{key}", child, values, lists, depth=depth + 1)
        return
    values.append(prefix)
    if isinstance(value, list) and value:
        lists.append(prefix)
        if isinstance(value[0], dict):
            _walk_paths(f"{prefix}[*]", value[0], values, [], depth=depth + 1)


def unique_node_id(base: str, taken: list[str]) -> str:
    """A node id made from ``base`` (a tool name) that is not in ``taken``: ``crop``, ``crop_2``, ..."""
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in base) or "step"
    if not name[0].isalpha():
        name = f"n_{name}"
    candidate, index = name, 2
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    return candidate
