"""The agents' scenario settings (``agent:`` in a scenario), one spec per kind, registered with each agent."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from testbed.llm import EmbeddedLLM, LLMSpec
from testbed.registry import AgentSpec
from testbed.scenario import FieldError
from testbed.workflow import Workflow

__all__ = ["LLMAgentSpec", "MultiAgentSpec", "RetrievalAgentSpec", "ScriptedAgentSpec", "Worker"]


class ScriptedAgentSpec(AgentSpec):
    """A scripted agent: runs a fixed workflow (the ground-truth agent of every scenario)."""

    kind: Literal["scripted"] = "scripted"
    """Discriminator."""
    workflow: Workflow
    """The tool calls to make and how their arguments bind."""


class RetrievalAgentSpec(AgentSpec):
    """Retrieval-augmented selection: for each step, the listed tool whose description is most similar to it.

    Arguments are wired from the scene and earlier results by declared semantic roles, else by name;
    box conventions the two sides declare differently are converted by the agent itself (bridging no
    adapter declares).
    """

    kind: Literal["retrieval"] = "retrieval"
    """Discriminator."""

    plans_for_itself: ClassVar[bool] = True
    steps: tuple[str, ...] = Field(min_length=1)
    """The subtasks in order, in plain language (each becomes one node)."""


class LLMAgentSpec(AgentSpec):
    """Dynamic orchestration: a language model picks each next call from the catalog, step by step."""

    kind: Literal["llm"] = "llm"
    """Discriminator."""

    plans_for_itself: ClassVar[bool] = True
    goal: str = Field(min_length=1)
    """What to achieve, in plain language (the model's instructions)."""
    llm: LLMSpec = EmbeddedLLM()
    """The model: the embedded SmolLM2 (default, offline) or an OpenAI-compatible endpoint."""
    max_calls: int = Field(default=4, ge=1, le=32)
    """Most nodes the model may add in one run."""
    max_tokens: int = Field(default=160, ge=16)
    """Most tokens per reply."""


class Worker(BaseModel):
    """One worker agent of a multi-agent team."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    """Its name (recorded on every call it makes and sent to servers in ``_meta``)."""
    tools: tuple[str, ...] = Field(min_length=1)
    """The ``alias.tool``s it handles; the planner delegates each node to the worker that handles its tool."""


class MultiAgentSpec(AgentSpec):
    """Multi-agent coordination: a planner delegates the workflow's nodes to workers that run concurrently
    against shared servers, passing results (and handles) through a shared blackboard."""

    kind: Literal["multi"] = "multi"
    """Discriminator."""
    workers: tuple[Worker, ...] = Field(min_length=2)
    """The team; worker names are unique and no tool is handled by two workers."""
    workflow: Workflow
    """The subtasks the planner delegates."""

    @model_validator(mode="after")
    def _check_workers(self) -> Self:
        owners: dict[str, str] = {}
        for index, worker in enumerate(self.workers):
            if any(other.name == worker.name for other in self.workers[:index]):
                raise FieldError(f"duplicate worker name {worker.name!r}", loc=("workers", index, "name"))
            for tool in worker.tools:
                if tool in owners:
                    raise FieldError(
                        f"tool {tool!r} is handled by both {owners[tool]!r} and {worker.name!r}",
                        loc=("workers", index, "tools"),
                    )
                owners[tool] = worker.name
        for index, node in enumerate(self.workflow.nodes):
            if node.call not in owners:
                raise FieldError(
                    f"node {node.id!r} calls {node.call!r}, which no worker handles (workers handle: "
                    f"{', '.join(owners)})",
                    loc=("workflow", "nodes", index, "call"),
                )
        return self
