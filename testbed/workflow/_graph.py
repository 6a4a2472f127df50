"""The workflow as a networkx graph: typed edges, topological layers and ready sets.

:func:`build_graph` returns a :class:`networkx.MultiDiGraph` (a ``DiGraph``
that keeps one edge per reference, so two arguments bound to the same node are
two edges). Graph layout:

* node attributes: ``node`` (the :class:`WorkflowNode`), ``order`` (its declaration index);
* edge attributes: ``edge`` (an :class:`Edge`), from the producing node to the consuming one,
  and ``position`` (the consumer's declaration index and the reference's index within it);
* graph attribute ``scene_edges``: the :class:`Edge` objects of ``$scene`` references,
  whose ``source_node`` is ``"scene"`` (they are not graph edges).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

import networkx as nx
from pydantic import BaseModel, ConfigDict

from testbed.workflow._adapter import Adapter
from testbed.workflow._model import FOR_EACH_ARG, Workflow, WorkflowNode
from testbed.workflow._reference import SCENE_ROOT

__all__ = [
    "Edge",
    "build_graph",
    "graph_edges",
    "graph_node",
    "ready_nodes",
    "scene_edges",
    "topological_layers",
]


class Edge(BaseModel):
    """A typed binding: a value produced by one node (or the scene) flowing into another node's argument."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    source_node: str
    """The producing node's id, or ``"scene"`` for a scene binding."""
    source_path: str
    """Where in the producer's result the value lies, e.g. ``detections[*].bbox`` or ``@content[0].data``.

    ``$item`` references are rewritten through the node's ``for_each`` list, so
    ``$item.bbox`` under ``for_each: $detect.detections`` has source ``detect`` and
    path ``detections[*].bbox``. ``""`` is the whole result.
    """
    target_node: str
    """The consuming node's id."""
    target_arg: str
    """The argument filled, e.g. ``box`` or ``options.boxes[0]``; ``"@for_each"`` for the node's for_each list."""
    adapter: Adapter | None = None
    """The adapter declared on the target's top-level argument, if any."""
    reference: str
    """The reference as written in the workflow (``$item.bbox``, ``$detect.detections``)."""


def build_graph(workflow: Workflow) -> nx.MultiDiGraph:
    """Build the workflow's graph: one node per workflow node, one edge per node-to-node reference.

    The workflow is already valid (the model checks ids, references and cycles on
    construction), so this does not fail.
    """
    graph = nx.MultiDiGraph()
    for order, node in enumerate(workflow.nodes):
        graph.add_node(node.id, node=node, order=order)
    scene: list[Edge] = []
    for order, node in enumerate(workflow.nodes):
        for position, binding in enumerate(node.bindings()):
            source = node.item_source(binding.reference)
            adapter = node.adapters.get(binding.top_argument) if binding.top_argument != FOR_EACH_ARG else None
            edge = Edge(
                source_node=source.root,
                source_path=source.path_text,
                target_node=node.id,
                target_arg=binding.argument,
                adapter=adapter,
                reference=str(binding.reference),
            )
            if source.root == SCENE_ROOT:
                scene.append(edge)
            else:
                graph.add_edge(source.root, node.id, edge=edge, position=(order, position))
    graph.graph["scene_edges"] = tuple(scene)
    return graph


def graph_node(graph: nx.MultiDiGraph, node_id: str) -> WorkflowNode:
    """Return the :class:`WorkflowNode` stored on a graph node."""
    return cast(WorkflowNode, graph.nodes[node_id]["node"])


def graph_edges(graph: nx.MultiDiGraph) -> list[Edge]:
    """Return every node-to-node :class:`Edge`, in the order the references are declared."""
    found = sorted(graph.edges(data=True), key=lambda triple: triple[2]["position"])
    return [cast(Edge, data["edge"]) for _, _, data in found]


def scene_edges(graph: nx.MultiDiGraph) -> list[Edge]:
    """Return the bindings of ``$scene`` references (``source_node == "scene"``), in declaration order."""
    return list(cast(tuple[Edge, ...], graph.graph.get("scene_edges", ())))


def topological_layers(graph: nx.MultiDiGraph) -> list[list[str]]:
    """Group the nodes into layers: each layer's nodes depend only on earlier layers.

    Nodes within a layer are independent and may run concurrently; each layer is
    in declaration order.
    """
    return [_in_order(graph, layer) for layer in nx.topological_generations(graph)]


def ready_nodes(graph: nx.MultiDiGraph, done: Collection[str]) -> list[str]:
    """Return the nodes not in ``done`` whose every producer is in ``done``, in declaration order."""
    finished = set(done)
    ready = [
        node_id
        for node_id in graph.nodes
        if node_id not in finished and all(producer in finished for producer in graph.predecessors(node_id))
    ]
    return _in_order(graph, ready)


def _order(graph: nx.MultiDiGraph, node_id: str) -> int:
    return cast(int, graph.nodes[node_id]["order"])


def _in_order(graph: nx.MultiDiGraph, node_ids: Any) -> list[str]:
    return sorted((str(node_id) for node_id in node_ids), key=lambda node_id: _order(graph, node_id))
