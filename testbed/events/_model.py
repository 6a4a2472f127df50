"""The versioned event schema of an experiment directory's ``events.jsonl``.

One model writes the log and the same model reads it. Every event carries a
deterministic position ``(run, node, item, seq)`` besides its wall-clock
``time``; replays compare events in that order without the wall-clock fields.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EVENTS_FORMAT_VERSION = 2
"""Bump when an event field is removed or changes meaning (adding optional fields does not force a bump).

Version 2 leaves out of a line what the log holds already (see ``elided``); the reader puts it back."""
READABLE_FORMAT_VERSIONS = frozenset({1, 2})
"""Versions this testbed reads: version 1 lines are version 2 lines with nothing elided."""

WALL_CLOCK_FIELDS = frozenset({"time", "duration_s", "started_at", "finished_at"})
"""Fields excluded when events are compared for reproduction."""


class FaultLayer(StrEnum):
    """Where a fault acts."""

    TRANSPORT = "transport"
    """On the JSON-RPC messages: lost, late, repeated, reordered, damaged or replaced."""
    SEMANTIC = "semantic"
    """On the meaning of a well-formed result: fields, conventions, masks, handles, the tool list."""
    PROCESS = "process"
    """On the server process: killed or restarted."""


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    time: float
    """Wall-clock UNIX time the event was recorded (excluded from comparisons)."""


TruthMode = Literal["truth", "declared", "none"]
"""How validators that read a truth manifest see a server: its manifest (``truth``), what its ``tools/list``
declares (``declared``: an external server without a truth file), or nothing (``none``: they skip it)."""


class LoadedWeights(BaseModel):
    """One weights file a server was configured with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    """The file, absolute."""
    sha256: str | None
    """Its hash; ``None`` when it could not be read (the server then reports the weights error on use)."""


class ServerRecord(BaseModel):
    """One server of the experiment as connected: what it declared and what it actually does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alias: str
    """Its name in the scenario."""
    server: str
    """Registry name; for an external server, how the scenario reaches it (``command '...'`` or ``url ...``)."""
    command: list[str] | None = None
    """An external stdio server's command, as the scenario gives it."""
    url: str | None = None
    """An external streamable-HTTP server's URL, as the scenario gives it."""
    transport: str
    """inprocess, stdio or http."""
    protocol_version: str | None
    """The negotiated MCP protocol version."""
    server_info: dict[str, Any] | None
    """The server's self-description (name, version)."""
    tools: list[dict[str, Any]]
    """Its ``tools/list`` result, as sent."""
    truth: dict[str, Any] | None
    """Its truth manifest: the registry's, or an external server's truth file (None without one)."""
    truth_mode: TruthMode | None = None
    """How truth-reading validators see it (``None`` in recordings made before this was recorded)."""
    weights: dict[str, LoadedWeights] = {}
    """The weights it was configured with, by task (``detect``, ``segment``); empty for servers without models."""


class ExperimentHeader(_Event):
    """The first line: everything needed to understand and re-run the experiment."""

    event: Literal["header"] = "header"
    format_version: int = EVENTS_FORMAT_VERSION
    experiment_id: str
    """Hash of the resolved scenario and seed: a resumed or replayed experiment must match it."""
    scenario: dict[str, Any]
    """The resolved scenario, as loaded (runs and seed as overridden on the command line)."""
    scenario_path: str | None
    seed: int
    runs: int
    versions: dict[str, str]
    """testbed, mcp, python, torch, ultralytics, numpy."""
    git_revision: str | None
    device: str
    weights: dict[str, str]
    """sha256 of the weights each task uses, as configured (``TESTBED_*_WEIGHTS``, else the shipped ones);
    each server's own are in ``servers[].weights``."""
    servers: list[ServerRecord]
    started_at: float
    sandbox: str | None = None
    """The run sandboxes' folder, absolute, as the live servers and the agent saw it (``$scene.image_path`` is
    in it). Replay shows the agent these paths again; None in logs written before it was recorded."""


class GroundTruthRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    class_name: str
    box_xyxy: list[float]
    """Canonical box: pixel, xyxy, top-left origin, pixel-edge coordinates."""
    mask_rle: dict[str, Any] | None
    """The visible mask as COCO RLE at image resolution."""


class RunStarted(_Event):
    event: Literal["run_started"] = "run_started"
    run: int
    scope: str
    """The memory scope sent to servers in request ``_meta`` for this run."""
    scene_source: str
    image_blob: str
    """Content hash of the scene image in ``blobs/``."""
    width: int
    height: int
    ground_truth: list[GroundTruthRecord]


class Direction(StrEnum):
    CLIENT_TO_SERVER = "c->s"
    SERVER_TO_CLIENT = "s->c"


class MessageEvent(_Event):
    """One JSON-RPC message on the wire (large strings replaced by blob references)."""

    event: Literal["message"] = "message"
    run: int | None
    node: str | None
    item: int | None
    seq: int
    """Position of this message within its call (or within the connection for unattributed messages)."""
    server: str
    direction: Direction
    message: dict[str, Any]
    elided: dict[str, str] | None = None
    """Only in a line of ``events.jsonl``: parts of ``message`` left out (``None`` in their place) and where the
    reader finds them (see :mod:`testbed.events._pack`). Events as read or made never have it."""


class CallOutcomeKind(StrEnum):
    OK = "ok"
    TOOL_ERROR = "tool_error"
    PROTOCOL_ERROR = "protocol_error"
    TIMEOUT = "timeout"
    TRANSPORT_CLOSED = "transport_closed"
    SKIPPED = "skipped"


class CallEvent(_Event):
    """One tool call's outcome, as the orchestrator saw it."""

    event: Literal["call"] = "call"
    run: int
    node: str
    item: int
    """Index within a for_each node (0 for a plain node)."""
    server: str
    tool: str
    arguments: dict[str, Any]
    adapters: list[str]
    """Declared adapters applied to the arguments (tracked bridging)."""
    clock: float
    """The run's logical clock sent with the call."""
    outcome: CallOutcomeKind
    payload: Any = None
    """structuredContent, else the JSON of the first text block, else None."""
    content_types: list[str] = []
    error: str | None = None
    cancel_honoured: bool | None = None
    """For a timeout: whether the server stayed silent after the client's cancellation notice
    (False when a late response arrived before the run ended); None for other outcomes."""
    agent: str = ""
    """The agent that made the call (multi-agent runs name each worker; empty for a single agent)."""
    duration_s: float
    elided: dict[str, str] | None = None
    """Only in a line of ``events.jsonl``: ``arguments`` or ``payload`` left out (``None`` in their place) because
    the call's request or response recorded before it holds them (see :mod:`testbed.events._pack`)."""


class FaultEvent(_Event):
    """A fault the testbed injected, with the violations it is expected to cause (none if tolerable)."""

    event: Literal["fault"] = "fault"
    run: int
    node: str
    item: int
    server: str
    index: int
    """Position of the fault in the scenario's ``faults`` list."""
    kind: str
    layer: FaultLayer
    expected: tuple[str, ...]
    """Violation IDs this fault should cause here; empty for faults a correct pipeline tolerates, and
    where nothing was altered."""
    detail: str
    """What was done, in a line; starts with ``not applicable:`` when nothing could be altered."""
    applied: bool = True
    """Whether anything was altered (``False`` together with a ``not applicable:`` detail)."""


class LLMEvent(_Event):
    """One request to a language model and its reply (or the classified failure), so replay needs no model."""

    event: Literal["llm"] = "llm"
    run: int
    agent: str
    """The agent that asked."""
    seq: int
    """The request's position among this agent's requests in the run."""
    backend: str
    """embedded or openai."""
    model: str
    request: dict[str, Any]
    """Messages, the reply's JSON schema, and decoding settings, as sent."""
    outcome: str
    """ok, or the failure: unreachable, auth, http_error, timeout, backend_error."""
    reply: str | None = None
    """The raw reply text (None when the request failed)."""
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    duration_s: float


class PlanEvent(_Event):
    """One planning decision of an agent that plans for itself: what it chose, and whether the plan is valid.

    A plan is valid when it parses and every call it makes names a listed tool and matches its input schema.
    """

    event: Literal["plan"] = "plan"
    run: int
    agent: str
    seq: int
    """The decision's position among this agent's decisions in the run."""
    kind: str
    """The agent kind: retrieval, llm or multi."""
    valid: bool
    problems: list[str] = []
    """Why the plan is not valid (empty when it is)."""
    plan: dict[str, Any]
    """What was decided: the nodes chosen (call, args, for_each), or ``{"finish": true}``."""


class RetrievalEvent(_Event):
    """Similarities an embedding model computed between queries and tool descriptions (replay reads them back)."""

    event: Literal["retrieval"] = "retrieval"
    run: int
    agent: str
    seq: int
    model: str
    queries: list[str]
    documents: list[str]
    scores: list[list[float]]
    """Cosine similarity of each query (row) with each document (column)."""
    duration_s: float


class DefenseEvent(_Event):
    """A call a defense refused before it went out (see :mod:`testbed.defenses`); its call is recorded as skipped,
    with no arguments: they are here."""

    event: Literal["defense"] = "defense"
    run: int
    agent: str
    """The agent whose call was refused (empty for a single agent)."""
    seq: int
    """The refusal's position among the run's refusals."""
    defense: str
    """The defense that refused it: tool_pinning, role_binding, scoped_memory or provenance_tags."""
    node: str
    item: int
    server: str
    tool: str
    arguments: dict[str, Any]
    """The arguments the call would have sent (large strings as blob references)."""
    detail: str
    """Why, in a line."""


class ContractEvent(_Event):
    """A runtime contract's finding on a value about to cross a workflow edge, and what was decided."""

    event: Literal["contract"] = "contract"
    run: int
    agent: str
    """Who decided: ``contracts`` (the orchestrator's contract check)."""
    seq: int
    """The finding's position among the run's contract findings."""
    node: str
    item: int
    server: str
    tool: str
    argument: str
    """The consumer's argument the value fills."""
    source: str
    """Where the value comes from: ``node.path`` in the producer's result."""
    rule: str
    finding: Literal["breach", "unevaluable"]
    detail: str
    decision: Literal["halt", "convert", "replan", "fallback", "pass"]
    """What the policy did (``pass``: an unevaluable rule lets the value through, recorded)."""
    remedy: str | None = None
    """The adapter inserted (convert) or the tool called instead (fallback)."""


class ServerEvent(_Event):
    """A server process was restarted (after a kill, a closed transport, or a scheduled restart)."""

    event: Literal["server"] = "server"
    run: int
    server: str
    action: Literal["restarted"]
    reason: str


class RunFinished(_Event):
    event: Literal["run_finished"] = "run_finished"
    run: int
    calls: int
    failed_calls: int
    task_passed: bool | None
    """The scenario's task checked against ground truth (None when the task is ``none``)."""
    task_detail: str
    error: str | None = None
    """An orchestrator failure that ended the run early."""


class ExperimentFinished(_Event):
    event: Literal["finished"] = "finished"
    runs: int
    finished_at: float


Event = Annotated[
    ExperimentHeader
    | RunStarted
    | MessageEvent
    | CallEvent
    | FaultEvent
    | LLMEvent
    | PlanEvent
    | RetrievalEvent
    | ContractEvent
    | ServerEvent
    | DefenseEvent
    | RunFinished
    | ExperimentFinished,
    Field(discriminator="event"),
]
