"""The agent seam: how the orchestrator asks an agent what to call next.

Agent kinds are plug-ins (:func:`testbed.registry.agent`); this module is what
they and the orchestrator share.

Agents act step by step: at each step the orchestrator shows the agent what
has happened so far (:class:`RunView`) and the agent answers with the calls
to make now (run concurrently) and the nodes it gives up on. An agent that
plans a whole DAG up front (the scripted agent) simply answers with the DAG's
ready nodes at each step, so the orchestrator, recording and replay never
assume a static DAG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import mcp.types as types

from testbed.events import Event

if TYPE_CHECKING:
    from testbed.workflow import WorkflowNode


@dataclass(frozen=True)
class PlannedCall:
    """One tool call an agent wants made (one per item of a for_each node)."""

    node: str
    """The workflow node (or step name) this call belongs to."""
    item: int
    """Index within the node (0 unless the node fans out over a list)."""
    server: str
    """Server alias."""
    tool: str
    """Tool name."""
    arguments: dict[str, Any]
    """Arguments, with any declared adapters already applied."""
    adapters: tuple[str, ...] = ()
    """Descriptions of the declared adapters applied to the arguments (tracked bridging)."""
    deadline_s: float | None = None
    """Per-call deadline; None means the scenario default."""
    fan_out: bool = False
    """Whether the node runs once per item of a list (its payload is then a list, even of one)."""
    agent: str = ""
    """The agent making the call (a worker's name in multi-agent runs; empty for a single agent)."""
    origin: WorkflowNode | None = None
    """The workflow node the call was bound from (its references and adapters: what runtime contracts check)."""


@dataclass(frozen=True)
class CallRecord:
    """What came back from one call, as the agent may read it."""

    outcome: str
    """ok, tool_error, protocol_error, timeout, transport_closed or skipped."""
    payload: Any
    """structuredContent, else the JSON of the first text block, else None."""
    content: list[dict[str, Any]]
    """The raw MCP content blocks."""
    arguments: dict[str, Any] = field(default_factory=dict)
    """The arguments that were sent."""
    error: str | None = None


@dataclass(frozen=True)
class NodeResult:
    """All calls of one node, in item order."""

    node: str
    calls: tuple[CallRecord, ...]
    fan_out: bool
    """Whether the node ran once per item of a list (its payload is then a list)."""
    server: str = ""
    """Server alias the node called."""
    tool: str = ""
    """Tool the node called."""

    @property
    def succeeded(self) -> bool:
        return all(call.outcome == "ok" for call in self.calls)

    @property
    def payload(self) -> Any:
        if self.fan_out:
            return [call.payload for call in self.calls]
        return self.calls[0].payload if self.calls else None

    @property
    def content(self) -> Any:
        if self.fan_out:
            return [call.content for call in self.calls]
        return self.calls[0].content if self.calls else []


@dataclass(frozen=True)
class SceneView:
    """The scene as an agent may reference it (``$scene.*``)."""

    image: str
    """Base64 PNG of the scene image."""
    image_path: str
    """The same image as a file inside the run's sandbox."""
    width: int
    height: int


@dataclass
class RunView:
    """What an agent sees at each step of a run."""

    run: int
    scene: SceneView
    catalog: dict[str, list[types.Tool]]
    """Each server alias's tools, as listed."""
    results: dict[str, NodeResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Nodes the agent gave up on, with the reason."""
    agent_events: list[Event] = field(default_factory=list)
    """Events the agent records about itself (its plans), added to the run's record."""


@dataclass(frozen=True)
class Step:
    """An agent's answer: calls to make now, and nodes it will not run (with reasons)."""

    calls: tuple[PlannedCall, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    empty: tuple[str, ...] = ()
    """Fan-out nodes whose list was empty: complete, with no calls."""
    error: str | None = None
    """Why the agent cannot go on (its model failed, its plan is unusable): the run ends with this error."""

    @property
    def done(self) -> bool:
        return not self.calls and not self.skipped and not self.empty


class Agent(Protocol):
    """Anything that can drive a run step by step."""

    kind: str
    """The orchestration mode: scripted, retrieval, llm or multi."""

    def start(self, view: RunView) -> None:
        """Prepare for a new run (plan up front, reset state)."""

    async def step(self, view: RunView) -> Step:
        """Return the next calls; an empty step ends the run."""
        ...


@dataclass(frozen=True)
class ContractNotice:
    """A node a runtime contract refused (policy ``replan``): the agent is told why, and chooses again."""

    node: str
    call: str
    """The refused call, ``alias.tool``."""
    reason: str


@runtime_checkable
class Replanning(Protocol):
    """An agent that can choose again when a runtime contract refuses one of its nodes."""

    async def replan(self, view: RunView, notice: ContractNotice) -> Step:
        """The next step, now that ``notice.node`` will not run (it is already in ``view.skipped``)."""
        ...


class ModelEvents(Protocol):
    """The model clients an agent holds, as the orchestrator sees them: what they recorded during a run."""

    def take_run(self, run: int) -> list[Event]:
        """The events recorded for ``run`` (LLM requests, similarity computations), handed to its record."""
        ...


class NoModels:
    """For agents that need no model: nothing is ever recorded."""

    def take_run(self, run: int) -> list[Event]:
        return []
