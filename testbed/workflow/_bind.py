"""Binding a node's arguments for one call: resolve references, then apply declared adapters."""

from __future__ import annotations

from typing import Any

from testbed.conventions import ImageSize
from testbed.workflow._model import WorkflowNode
from testbed.workflow._reference import BindingContext, BindingError, resolve, resolve_value

__all__ = ["apply_adapters", "apply_adapters_each", "bind_arguments", "resolve_for_each"]


def resolve_for_each(node: WorkflowNode, context: BindingContext) -> list[Any] | None:
    """Return the list a ``for_each`` node iterates over, or ``None`` for a plain node.

    Raises:
        BindingError: the reference cannot be resolved or does not point at a list.
    """
    if node.for_each is None:
        return None
    value = resolve(node.for_each, context)
    if not isinstance(value, list | tuple):
        text = str(node.for_each)
        raise BindingError(
            f"node {node.id!r}: for_each {text} must be a list, got {type(value).__name__}", reference=text, segment=""
        )
    return list(value)


def bind_arguments(node: WorkflowNode, context: BindingContext) -> dict[str, Any]:
    """Return the node's arguments with every reference resolved and ``$$`` unescaped (no adapters applied).

    For a ``for_each`` node, call it once per element with ``context.with_item(element)``.

    Raises:
        BindingError: a reference cannot be resolved.
    """
    return {name: resolve_value(value, context) for name, value in node.args.items()}


def apply_adapters(node: WorkflowNode, arguments: dict[str, Any], *, image_size: ImageSize) -> dict[str, Any]:
    """Return a copy of bound ``arguments`` with the node's declared adapters applied.

    Raises:
        AdapterError: an argument's value does not have the shape its adapter's ``from`` promises.
    """
    adapted = dict(arguments)
    for name, adapter in node.adapters.items():
        if name in adapted:
            adapted[name] = adapter.apply(adapted[name], image_size=image_size)
    return adapted


def apply_adapters_each(
    node: WorkflowNode, arguments: list[dict[str, Any]], *, image_size: ImageSize
) -> list[dict[str, Any]]:
    """:func:`apply_adapters` to the bound arguments of each item of a fan-out, each adapter over all items at once.

    Gives what applying them item after item gives, and raises what that raises first (it does so on any failure).

    Raises:
        AdapterError: an argument's value does not have the shape its adapter's ``from`` promises.
    """
    try:
        adapted = [dict(bound) for bound in arguments]
        for name, adapter in node.adapters.items():
            holding = [bound for bound in adapted if name in bound]
            if holding:
                for bound, value in zip(
                    holding, adapter.apply_each([bound[name] for bound in holding], image_size=image_size), strict=True
                ):
                    bound[name] = value
    except Exception:  # the item-by-item path raises the same error the same way
        return [apply_adapters(node, bound, image_size=image_size) for bound in arguments]
    return adapted
