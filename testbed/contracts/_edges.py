"""The edges a planned call's values cross: what each producer declares, what the consumer declares, the values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import mcp.types as types

from testbed.agent import PlannedCall, RunView
from testbed.contracts._rules import EdgeValue
from testbed.conventions import ImageSize
from testbed.protocol import schema_at
from testbed.workflow import (
    FOR_EACH_ARG,
    SCENE_ROOT,
    Adapter,
    BindingContext,
    BindingError,
    ContentSegment,
    PayloadPathError,
    read_path,
    resolve,
    resolve_for_each,
)

__all__ = ["Unreadable", "call_edges"]

_INDEX = re.compile(r"\[-?[0-9]+\]")


@dataclass(frozen=True)
class Unreadable:
    """An edge whose value or declarations cannot be read (a missing path): its rules cannot be evaluated."""

    argument: str
    source: str
    detail: str


def call_edges(
    call: PlannedCall, view: RunView, adapters: Mapping[str, Adapter] | None = None
) -> list[EdgeValue | Unreadable]:
    """Every node-to-node edge into ``call`` (bound from ``call.origin``), in the order the node binds them.

    ``adapters`` (by top-level argument) stand in for the node's declared ones: the adapters a contract inserted.
    A call with no origin node crosses no edge the contracts know of.
    """
    node = call.origin
    if node is None:
        return []
    context = BindingContext(
        scene=asdict(view.scene),
        payloads={name: result.payload for name, result in view.results.items()},
        contents={name: result.content for name, result in view.results.items()},
    )
    size = ImageSize(width=view.scene.width, height=view.scene.height)
    consumer = _tool(view.catalog, call.server, call.tool)
    edges: list[EdgeValue | Unreadable] = []
    for binding in node.bindings():
        source = node.item_source(binding.reference)
        if binding.argument == FOR_EACH_ARG or source.root == SCENE_ROOT or _content(source.path):
            continue
        where = f"{source.root}.{source.path_text}"
        result = view.results.get(source.root)
        if result is None:
            missing = f"{where} -> {binding.argument}: {source.root} has no result"
            edges.append(Unreadable(binding.argument, where, missing))
            continue
        try:
            item_context = context
            if node.for_each is not None:
                items = resolve_for_each(node, context) or []
                item_context = context.with_item(items[call.item])
            value = resolve(binding.reference, item_context)
            sent = read_path(call.arguments, binding.argument)
        except (BindingError, PayloadPathError, IndexError) as error:
            edges.append(Unreadable(binding.argument, where, f"{where} -> {binding.argument}: {error}"))
            continue
        producer = _tool(view.catalog, result.server, result.tool)
        produced = producer.output_schema if producer is not None else None
        chosen = (adapters or {}).get(binding.top_argument)
        edges.append(
            EdgeValue(
                producer=f"{result.server}.{result.tool}",
                source_node=source.root,
                source_path=source.path_text,
                argument=binding.argument,
                produced=schema_at(produced, source.path_text) if produced else None,
                expected=_expected(consumer, binding.argument),
                source=value,
                sent=sent,
                adapter=chosen if chosen is not None else node.adapters.get(binding.top_argument),
                image_size=size,
                consumer_schema=consumer.input_schema if consumer is not None else None,
            )
        )
    return edges


def _tool(catalog: Mapping[str, list[types.Tool]], server: str, name: str) -> types.Tool | None:
    return next((tool for tool in catalog.get(server, ()) if tool.name == name), None)


def _expected(consumer: types.Tool | None, argument: str) -> dict[str, Any]:
    """The consumer's schema property for ``argument`` (an index reads the list's items), ``{}`` if none."""
    if consumer is None or not consumer.input_schema:
        return {}
    return schema_at(consumer.input_schema, _INDEX.sub("[*]", argument)) or {}


def _content(path: tuple[Any, ...]) -> bool:
    """Whether a path addresses raw content blocks (no schema declares those)."""
    return any(isinstance(segment, ContentSegment) for segment in path)
