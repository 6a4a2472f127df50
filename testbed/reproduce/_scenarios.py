"""One workflow of a population as a scenario document: parametric servers with inline profiles, one tool chain.

The agent is granted the chain's tools (each member's store and capability tool). A member that bridges
(``profile.bridges``) is used the way its bridging script is: after its own call, the agent calls its helper,
which forwards to the next member's tool (the previous one's, for the last member) out of band. The helper
is no granted tool, so the ``perm.*`` validators see the reach beyond the grant in the recorded trace.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Final

from testbed._seeding import derive_int_seed
from testbed.population import Member, Population, Workflow
from testbed.profile import box_name, default_tool_name, truth_manifest
from testbed.protocol import MemoryScope, SemanticRole

__all__ = ["EXECUTED_AGENT", "workflow_scenario"]

EXECUTED_AGENT: Final[dict[str, str]] = {
    "scripted": "scripted",
    "multi": "multi",
    "retrieval": "scripted",
    "llm": "scripted",
}
"""The agent that executes each assigned kind here. Retrieval and LLM workflows run their tool chain as a fixed
script: their agents need an embedding model or an LLM, and what they choose is not what a population measures."""

_SCENE: Final = {"synthetic": {"min_objects": 2, "max_objects": 4}}


def _tool(member: Member) -> str:
    return member.profile.names.tool or default_tool_name(member.capability)


def _items(member: Member) -> str:
    tools = truth_manifest(member.capability, member.profile).tools
    paths = next(tool for tool in tools if tool.name == _tool(member)).paths
    role = SemanticRole.DETECTIONS if member.capability == "detect" else SemanticRole.INSTANCES
    return paths[role]


def _nodes_of(member: Member, args: dict[str, str], for_each: str | None) -> list[dict[str, Any]]:
    """The member's call (``args`` beside the image), preceded by its store call when it takes a handle."""
    profile, alias = member.profile, member.id
    nodes: list[dict[str, Any]] = []
    if profile.memory.scope is MemoryScope.BY_VALUE:
        image = {profile.names.image: "$scene.image"}
    else:
        store = f"{alias}_store"
        nodes.append(
            {"id": store, "call": f"{alias}.{profile.names.store_tool}", "args": {profile.names.image: "$scene.image"}}
        )
        image = {profile.names.handle: f"${store}.{profile.names.handle}"}
    node: dict[str, Any] = {"id": alias, "call": f"{alias}.{_tool(member)}", "args": {**image, **args}}
    if for_each is not None:
        node["for_each"] = for_each
    nodes.append(node)
    return nodes


def _consumer(member: Member, producer: Member) -> tuple[dict[str, str], str | None]:
    """The arguments ``member`` takes from ``producer``'s result, and the list it repeats over."""
    items = f"${producer.id}.{_items(producer)}"
    produced_box = box_name(producer.capability, producer.profile)
    if member.capability == "crop":
        return {box_name("crop", member.profile): f"$item.{produced_box}"}, items
    if member.capability == "segment":
        prompts = member.profile.names.prompts
        return ({prompts: f"{items}[*].{produced_box}"} if prompts else {}), None
    if member.capability == "crop-mask":
        if producer.profile.mask.encoding.value == "label_map":
            return {member.profile.names.mask: f"${producer.id}.{producer.profile.names.mask}"}, None
        return {member.profile.names.mask: f"$item.{producer.profile.names.mask}"}, items
    raise ValueError(f"{member.capability} consumes nothing in a population workflow")


def _bridges(members: list[Member]) -> list[dict[str, Any]]:
    """The bridging helper's call of each member that bridges, to its neighbour in the chain."""
    nodes = []
    for position, member in enumerate(members):
        if not member.profile.bridges:
            continue
        partner = members[position + 1] if position + 1 < len(members) else members[position - 1]
        call = f"{member.id}.{member.profile.names.bridge_tool}"
        forward = {"server": partner.id, "tool": _tool(partner)}
        nodes.append({"id": f"{member.id}_bridge", "call": call, "args": forward})
    return nodes


def _agent(workflow: Workflow, members: list[Member], nodes: list[dict[str, Any]], grants: list[str]) -> dict[str, Any]:
    kind = EXECUTED_AGENT[workflow.agent]
    if kind == "scripted":
        return {"kind": "scripted", "grants": grants, "workflow": {"nodes": nodes}}
    workers = []
    for member in dict.fromkeys(members):
        tools = [node["call"] for node in nodes if node["call"].startswith(f"{member.id}.")]
        workers.append({"name": f"worker_{member.id}", "tools": list(dict.fromkeys(tools))})
    return {"kind": "multi", "grants": grants, "workers": workers, "workflow": {"nodes": nodes}}


def workflow_scenario(population: Population, workflow: Workflow, *, runs: int) -> dict[str, Any]:
    """The scenario document that runs ``workflow`` ``runs`` times, seeded from the population's seed."""
    members = [population.member(member_id) for member_id in workflow.members]
    nodes = _nodes_of(members[0], {}, None)
    for producer, member in pairwise(members):
        args, for_each = _consumer(member, producer)
        nodes += _nodes_of(member, args, for_each)
    grants = list(dict.fromkeys(node["call"] for node in nodes))
    nodes += _bridges(members)
    servers = {
        member.id: {
            "server": member.capability,
            "profile": member.profile.model_dump(mode="json", exclude_defaults=True),
        }
        for member in members
    }
    return {
        "name": f"population_{workflow.id}",
        "version": 1,
        "description": f"{workflow.kind} {' -> '.join(workflow.members)} ({workflow.mode}, run by {workflow.agent})",
        "seed": derive_int_seed(population.seed, "workflow", workflow.id),
        "runs": runs,
        "scene": _SCENE,
        "servers": servers,
        "task": {"kind": "none"},
        "agent": _agent(workflow, members, nodes, grants),
    }
