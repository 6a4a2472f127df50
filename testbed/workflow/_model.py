"""Workflow models: nodes (tool calls) whose arguments bind to other nodes' results."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator
from typing import Annotated, Any, Self

import networkx as nx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from testbed._errors import LocatedError, Location
from testbed.workflow._adapter import Adapter
from testbed.workflow._reference import (
    IDENTIFIER_JSON_SCHEMA,
    ITEM_ROOT,
    SCENE_ROOT,
    EachSegment,
    InvalidReferenceError,
    Reference,
    ReferenceText,
    check_identifier,
    iter_references,
    parse_reference,
)

__all__ = [
    "FOR_EACH_ARG",
    "ArgumentBinding",
    "Location",
    "NodeId",
    "Workflow",
    "WorkflowError",
    "WorkflowNode",
    "check_server_aliases",
]

FOR_EACH_ARG = "@for_each"
"""The target argument name that stands for a node's ``for_each`` list (no tool argument can start with ``@``)."""

NodeId = Annotated[
    str,
    AfterValidator(lambda value: check_identifier(value, what="node id")),
    WithJsonSchema(IDENTIFIER_JSON_SCHEMA),
]
"""A node id: letters, digits, ``_`` and ``-``, not starting with a digit or ``-``."""


class WorkflowError(LocatedError):
    """An invalid workflow. ``str()`` is the message; ``loc`` says where, relative to the model validated.

    Attributes:
        message: what is wrong, naming the node and argument.
        loc: the field path of the offending value (e.g. ``("nodes", 1, "args", "box")``),
            relative to the model whose validator raised it.
    """


class ArgumentBinding(BaseModel):
    """One reference in a node: which argument (or the ``for_each`` list) it fills, and where it points."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    argument: str
    """The argument path it fills, e.g. ``box`` or ``options.boxes[0]``; :data:`FOR_EACH_ARG` for ``for_each``."""
    top_argument: str
    """The top-level argument name (the key adapters are declared under); :data:`FOR_EACH_ARG` for ``for_each``."""
    loc: Location
    """Where the reference is written inside the node, e.g. ``("args", "box")``."""
    reference: Reference
    """The reference as written."""


class WorkflowNode(BaseModel):
    """One tool call of the workflow (or one call per element, with ``for_each``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    id: NodeId
    """Unique name of the node; other nodes refer to its result as ``$<id>``."""
    call: str
    """The tool to call, as ``<server alias>.<tool name>`` (exactly one dot)."""
    args: dict[str, Any] = {}
    """Tool arguments. Strings starting with ``$`` are references (``$$`` escapes a literal ``$``), at any depth."""
    for_each: ReferenceText | None = None
    """A reference to a list: the tool is called once per element, which ``$item`` names in ``args``."""
    adapters: dict[str, Adapter] = {}
    """Declared convention conversions, by top-level argument name, applied to the resolved argument."""
    deadline_s: float | None = Field(default=None, gt=0)
    """Deadline of each call in seconds; ``None`` uses the scenario's default."""

    @property
    def server(self) -> str:
        """The server alias part of :attr:`call`."""
        return self.call.split(".", 1)[0]

    @property
    def tool(self) -> str:
        """The tool name part of :attr:`call`."""
        return self.call.split(".", 1)[1]

    def bindings(self) -> tuple[ArgumentBinding, ...]:
        """Every reference of the node: ``for_each`` first, then those in ``args`` in order."""
        found: list[ArgumentBinding] = []
        if self.for_each is not None:
            found.append(
                ArgumentBinding(
                    argument=FOR_EACH_ARG, top_argument=FOR_EACH_ARG, loc=("for_each",), reference=self.for_each
                )
            )
        for loc, text in self._argument_references():
            found.append(
                ArgumentBinding(
                    argument=_format_location(loc),
                    top_argument=str(loc[0]),
                    loc=("args", *loc),
                    reference=parse_reference(text),
                )
            )
        return tuple(found)

    def item_source(self, reference: Reference) -> Reference:
        """Rewrite an ``$item`` reference of this ``for_each`` node as a reference to the list's source.

        ``$item.bbox`` in a node with ``for_each: $detect.detections`` becomes
        ``$detect.detections[*].bbox``. Other references are returned unchanged.
        """
        if reference.root != ITEM_ROOT or self.for_each is None:
            return reference
        return Reference(root=self.for_each.root, path=(*self.for_each.path, EachSegment(), *reference.path))

    def _argument_references(self) -> Iterator[tuple[Location, str]]:
        for name, value in self.args.items():
            yield from iter_references(value, prefix=(name,))

    @model_validator(mode="after")
    def _check_node(self) -> Self:
        where = f"node {self.id!r}"
        server, dot, tool = self.call.partition(".")
        if not dot or "." in tool or not server or not tool:
            raise WorkflowError(
                f"{where}: call {self.call!r} must be '<server alias>.<tool name>' with exactly one dot",
                loc=("call",),
            )
        if self.for_each is not None and self.for_each.root == ITEM_ROOT:
            raise WorkflowError(f"{where}: for_each cannot use $item", loc=("for_each",))
        for loc, text in self._argument_references():
            argument = _format_location(loc)
            try:
                reference = parse_reference(text)
            except InvalidReferenceError as error:
                raise WorkflowError(f"{where}, argument {argument!r}: {error}", loc=("args", *loc)) from None
            if reference.root == ITEM_ROOT and self.for_each is None:
                raise WorkflowError(
                    f"{where}, argument {argument!r}: {text} is only available inside a node with for_each",
                    loc=("args", *loc),
                )
        for name in self.adapters:
            if name not in self.args:
                known = ", ".join(repr(arg) for arg in self.args) or "none"
                raise WorkflowError(
                    f"{where}: adapter on argument {name!r}, which the node does not pass (arguments: {known})",
                    loc=("adapters", name),
                )
        return self


class Workflow(BaseModel):
    """A DAG of tool calls; edges are the references between nodes (see :func:`build_graph`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    nodes: tuple[WorkflowNode, ...] = Field(json_schema_extra={"minItems": 1})
    """The nodes in declaration order (which also orders nodes that are ready at the same time); at least one."""

    def node(self, node_id: str) -> WorkflowNode:
        """Return the node named ``node_id``.

        Raises:
            KeyError: there is no such node.
        """
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def node_ids(self) -> tuple[str, ...]:
        """The node ids in declaration order."""
        return tuple(node.id for node in self.nodes)

    @model_validator(mode="after")
    def _check_graph(self) -> Self:
        if not self.nodes:
            raise WorkflowError("a workflow needs at least one node", loc=("nodes",))
        first_index: dict[str, int] = {}
        for index, node in enumerate(self.nodes):
            if node.id in (SCENE_ROOT, ITEM_ROOT):
                raise WorkflowError(
                    f"node id {node.id!r} is reserved for ${node.id} references", loc=("nodes", index, "id")
                )
            if node.id in first_index:
                raise WorkflowError(
                    f"duplicate node id {node.id!r} (first declared as nodes[{first_index[node.id]}])",
                    loc=("nodes", index, "id"),
                )
            first_index[node.id] = index
        uses = nx.DiGraph()  # consumer -> producer, in declaration order
        uses.add_nodes_from(first_index)
        for index, node in enumerate(self.nodes):
            for binding in node.bindings():
                root = binding.reference.root
                if root in (SCENE_ROOT, ITEM_ROOT):
                    continue
                where = f"node {node.id!r}, {_describe_argument(binding.argument)}"
                loc: Location = ("nodes", index, *binding.loc)
                if root == node.id:
                    raise WorkflowError(f"{where}: {binding.reference} refers to the node itself", loc=loc)
                if root not in first_index:
                    raise WorkflowError(
                        f"{where}: unknown reference root ${root}{_suggest(root, first_index)};"
                        f" expected $scene, $item or a node id ({', '.join(first_index)})",
                        loc=loc,
                    )
                if not uses.has_edge(node.id, root):
                    uses.add_edge(node.id, root, loc=loc)
        _check_acyclic(uses, first_index)
        return self


def _check_acyclic(uses: Any, order: dict[str, int]) -> None:
    """Raise a :class:`WorkflowError` naming the first cycle of the consumer -> producer graph ``uses``."""
    try:
        cycle = nx.find_cycle(uses, source=list(order))
    except nx.NetworkXNoCycle:
        return
    members = [str(consumer) for consumer, _ in cycle]
    start = min(range(len(members)), key=lambda i: order[members[i]])
    members = members[start:] + members[:start]
    successor = members[1] if len(members) > 1 else members[0]
    loc: Location = uses.edges[members[0], successor]["loc"]
    names = " -> ".join([*members, members[0]])
    raise WorkflowError(f"cycle in the workflow: {names} (each node uses the result of the next)", loc=loc)


def check_server_aliases(workflow: Workflow, aliases: Collection[str]) -> None:
    """Check that every node calls a server alias in ``aliases``.

    Raises:
        WorkflowError: a node's call names an unknown alias; ``loc`` is relative to the workflow.
    """
    for index, node in enumerate(workflow.nodes):
        if node.server not in aliases:
            known = ", ".join(aliases) or "none declared"
            raise WorkflowError(
                f"node {node.id!r}: call {node.call!r} uses unknown server alias {node.server!r}"
                f"{_suggest(node.server, aliases)} (servers: {known})",
                loc=("nodes", index, "call"),
            )


def _format_location(loc: Location) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.removeprefix(".")


def _describe_argument(argument: str) -> str:
    return "for_each" if argument == FOR_EACH_ARG else f"argument {argument!r}"


def _suggest(name: str, candidates: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
