"""Fault models: what to break, where, and when, as frozen data a scenario lists under ``faults``.

Each fault names its ``kind`` (the discriminator), a ``target`` (a server alias,
optionally one tool, and for semantic faults where in the payload), a schedule
(``probability``, ``runs``, ``nodes``) and its kind's parameters. The kinds,
their layer and the violation IDs each is expected to cause are listed in
:data:`FAULT_CATALOG`.

Changing what a kind or a parameter means breaks recorded experiments: add a new
kind or parameter instead.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from testbed._errors import LocatedError, Location, first_error
from testbed.conventions import BoxUnits, ImageSize, MaskEncoding
from testbed.events import FaultLayer
from testbed.protocol import SemanticRole, ToolTruth
from testbed.registry import by_kind, fault_kind
from testbed.workflow import BoxConventionName, FieldSegment, IndexSegment, check_identifier
from testbed.workflow._paths import (
    PayloadPath,
    PayloadPathError,
    parse_payload_path,
)

if TYPE_CHECKING:
    from testbed.faults._effects import EffectContext

__all__ = [
    "BUILTIN_FAULTS",
    "FAULT_ADAPTER",
    "FAULT_CATALOG",
    "FAULT_KINDS",
    "ChangeUnitsFault",
    "CorruptJsonFault",
    "DelayFault",
    "DropFault",
    "DuplicateFault",
    "EvictHandleFault",
    "ExpireHandleFault",
    "Fault",
    "FaultError",
    "FaultKindInfo",
    "FaultLayer",
    "FaultSpec",
    "FaultTarget",
    "FlipConventionFault",
    "JsonRpcErrorFault",
    "KillFault",
    "MaskResolutionFault",
    "NotApplicableError",
    "PayloadFault",
    "RecordedFault",
    "RemoveFieldFault",
    "RenameFieldFault",
    "ReorderFault",
    "RestartFault",
    "RugPullFault",
    "TimeoutFault",
    "TruncateFault",
    "check_targets",
    "load_faults",
]


class NotApplicableError(Exception):
    """The fault cannot alter this message (e.g. the tool errored, or the payload has no such place)."""


class FaultError(LocatedError):
    """An invalid fault list, as one line naming the offending field (``faults[1].probability: ...``).

    ``loc`` is relative to what was validated (e.g. ``(2, "target", "server")`` for ``faults[2].target.server``).
    """

    def __init__(self, message: str, *, loc: Location = ()) -> None:
        super().__init__(message, loc=loc, root="faults")


class FaultKindInfo(BaseModel):
    """What one fault kind does and what it is expected to cause."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    layer: FaultLayer
    """Where the fault acts."""
    expected: tuple[str, ...]
    """Violation IDs a validator should report when the fault is injected; empty for faults a
    correct pipeline tolerates."""
    description: str
    """One line saying what the fault does."""


_CONFIG = ConfigDict(
    frozen=True,
    extra="forbid",
    use_attribute_docstrings=True,
    validate_by_name=True,
    validate_by_alias=True,
    serialize_by_alias=True,
)


def _check_probability(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be between 0 and 1, got {value!r}")
    return value


def _check_non_negative(value: float) -> float:
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"must not be negative, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number of seconds, got {value!r}")
    return value


def _check_positive(value: float) -> float:
    if not value > 0.0:
        raise ValueError(f"must be positive, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number of seconds, got {value!r}")
    return value


def _check_path(value: str) -> str:
    try:
        parse_payload_path(value)
    except PayloadPathError as error:
        raise ValueError(str(error)) from None
    return value


Probability = Annotated[
    float,
    AfterValidator(_check_probability),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1}),
]
"""A probability in ``[0, 1]``."""

Seconds = Annotated[float, AfterValidator(_check_non_negative), WithJsonSchema({"type": "number", "minimum": 0})]
"""A non-negative duration in seconds."""

PositiveSeconds = Annotated[
    float, AfterValidator(_check_positive), WithJsonSchema({"type": "number", "exclusiveMinimum": 0})
]
"""A positive duration in seconds."""

PayloadPathText = Annotated[
    str,
    AfterValidator(_check_path),
    WithJsonSchema({"type": "string", "description": "A payload path such as detections[*].bbox"}),
]
"""A payload path as text, e.g. ``detections[*].bbox`` (the grammar of workflow references, without the root)."""

RunIndex = Annotated[int, Field(ge=0)]


class FaultTarget(BaseModel):
    """Where a fault applies: a server, optionally one tool, and for semantic faults a place in the payload."""

    model_config = _CONFIG

    server: str
    """The scenario's alias of the server (the part before the dot in a call)."""
    tool: str | None = Field(default=None, min_length=1)
    """Only calls of this tool (for ``rug_pull``: the tool whose listing changes); ``None`` for every tool."""
    path: PayloadPathText | None = None
    """Where in the result payload to alter, e.g. ``detections[*].bbox``."""
    role: SemanticRole | None = None
    """An alternative to ``path``: the payload place of this role, from the server's truth manifest."""

    @field_validator("server")
    @classmethod
    def _check_server(cls, value: str) -> str:
        return check_identifier(value, what="server alias")

    @model_validator(mode="after")
    def _check_path_or_role(self) -> Self:
        if self.path is not None and self.role is not None:
            raise FaultError("give path or role, not both", loc=("role",))
        return self

    def payload_path(self, truth: ToolTruth | None) -> PayloadPath:
        """The parsed payload path: ``path``, or the truth manifest's path for ``role``.

        Raises:
            PayloadPathError: neither is set, or ``truth`` has no path for ``role``.
        """
        if self.path is not None:
            return parse_payload_path(self.path)
        if self.role is None:
            raise PayloadPathError("the target names neither a path nor a role")
        if truth is None or self.role not in truth.paths:
            owner = f"tool {truth.name!r}" if truth is not None else "a tool without a truth manifest"
            raise PayloadPathError(f"{owner} has no payload path for role {self.role.value!r}")
        return parse_payload_path(truth.paths[self.role])


class Fault(BaseModel):
    """Fields every fault has; each kind subclasses it with its ``kind`` literal and its metadata.

    Register a kind with :func:`testbed.registry.fault_kind`; a plug-in's kind is ``distribution/kind``.
    """

    model_config = _CONFIG

    target: FaultTarget
    """Which server (and tool, and payload place) the fault applies to."""
    probability: Probability = 1.0
    """The chance that the fault applies to one matching call, drawn per call from the seed."""
    runs: tuple[RunIndex, ...] | None = None
    """Only these runs (0-based); ``None`` for every run."""
    nodes: tuple[str, ...] | None = None
    """Only calls made by these workflow nodes; ``None`` for every node."""

    kind: str
    """Discriminator: the registered fault kind."""

    layer: ClassVar[FaultLayer]
    """Where faults of this kind act."""
    expected: ClassVar[tuple[str, ...]] = ()
    """Violation IDs a validator should report when the fault is injected; empty for faults a correct
    pipeline tolerates."""
    waits: ClassVar[bool] = False
    """Whether the faulted call waits for its deadline (no response, or an unparseable one)."""

    @classmethod
    def info(cls) -> FaultKindInfo:
        """This kind's metadata, as the catalog lists it."""
        description = (cls.__doc__ or "").strip().splitlines()[0]
        return FaultKindInfo(layer=cls.layer, expected=cls.expected, description=description)

    def scheduled(self, *, run: int, node: str) -> bool:
        """Whether the schedule (``runs``, ``nodes``) includes a call of ``node`` in ``run``."""
        return (self.runs is None or run in self.runs) and (self.nodes is None or node in self.nodes)


class PayloadFault(Fault):
    """A semantic fault that alters one place of the result payload: it needs ``target.path`` or ``target.role``.

    A plug-in's payload kind overrides :meth:`alter`; the core's kinds keep their effects in one table
    (``testbed.faults._effects.PAYLOAD_EFFECTS``).
    """

    @field_validator("target")
    @classmethod
    def _check_place(cls, target: FaultTarget) -> FaultTarget:
        if target.path is None and target.role is None:
            raise FaultError("a semantic fault needs target.path or target.role: where in the payload to alter")
        return target

    def alter(self, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
        """What this fault does to one result payload: the altered payload and a one-line detail.

        Args:
            path: the target's place in ``payload`` (``target.path``, or the truth manifest's path for ``target.role``).
            payload: the result's JSON payload (a private copy: change it or return a new one).
            context: the call site, and ``context.rng(...)`` for anything random (drawn from the seed, never global).

        Raises:
            testbed.faults.NotApplicableError: the payload has nothing to alter; the fault is recorded as not
                applied (so is any other exception, with its message).
        """
        # Unreachable for registered kinds: built-in ones are applied from the effects table, and
        # registration refuses a plug-in kind that does not override this method.
        raise NotApplicableError(f"fault kind {self.kind!r} defines no payload effect")

    @classmethod
    def registration_problem(cls) -> str | None:
        """Why this kind cannot be registered, or ``None`` (called by :func:`testbed.registry.fault_kind`)."""
        builtin = cls.__module__.startswith("testbed.")
        if not builtin and cls.alter is PayloadFault.alter:
            return "a PayloadFault kind must override alter(path, payload, context) with its effect"
        return None


# --- transport ---------------------------------------------------------------------------------


@fault_kind
class DelayFault(Fault):
    """The request reaches the server late (tolerated: a slow link)."""

    kind: Literal["delay"] = "delay"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.TRANSPORT
    expected: ClassVar[tuple[str, ...]] = ()
    seconds: Seconds = 0.05
    """How long the request is held before it is sent."""


@fault_kind
class TimeoutFault(Fault):
    """The server answers, but its response never arrives (the client times out)."""

    kind: Literal["timeout"] = "timeout"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.TRANSPORT
    expected: ClassVar[tuple[str, ...]] = ("proto.timeout",)
    waits: ClassVar[bool] = True


@fault_kind
class DropFault(Fault):
    """The request never reaches the server (the client times out)."""

    kind: Literal["drop"] = "drop"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.TRANSPORT
    expected: ClassVar[tuple[str, ...]] = ("proto.timeout",)
    waits: ClassVar[bool] = True


@fault_kind
class DuplicateFault(Fault):
    """The response arrives twice (tolerated: the client drops the copy)."""

    kind: Literal["duplicate"] = "duplicate"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.TRANSPORT
    expected: ClassVar[tuple[str, ...]] = ("proto.id_mismatch",)


@fault_kind
class ReorderFault(Fault):
    """The response is held until the next response on the connection passes it (tolerated).

    When nothing else is in flight on the connection (so nothing could pass it),
    the response is held for ``hold_s`` instead.
    """

    kind: Literal["reorder"] = "reorder"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.TRANSPORT
    expected: ClassVar[tuple[str, ...]] = ()
    hold_s: Seconds = 0.2
    """How long to hold the response when nothing else is in flight."""


@fault_kind
class TruncateFault(Fault):
    """The response frame is cut short; the client's transport sees an unparseable line."""

    kind: Literal["truncate"] = "truncate"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.TRANSPORT
    expected: ClassVar[tuple[str, ...]] = ("proto.malformed_message",)
    waits: ClassVar[bool] = True
    keep: float = Field(default=0.5, gt=0.0, lt=1.0)
    """The fraction of the frame's characters that arrive."""


@fault_kind
class CorruptJsonFault(Fault):
    """Garbage bytes replace part of the response frame; the client's transport sees an unparseable line."""

    kind: Literal["corrupt_json"] = "corrupt_json"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.TRANSPORT
    expected: ClassVar[tuple[str, ...]] = ("proto.malformed_message",)
    waits: ClassVar[bool] = True


@fault_kind
class JsonRpcErrorFault(Fault):
    """A JSON-RPC error replaces the tool result: a protocol error where a tool error (``isError``) belongs."""

    kind: Literal["jsonrpc_error"] = "jsonrpc_error"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.TRANSPORT
    expected: ClassVar[tuple[str, ...]] = ("proto.error_misclassified",)
    code: int = -32603
    """The JSON-RPC error code (default: internal error)."""
    message: str = "Internal error"
    """The JSON-RPC error message."""


# --- semantic ----------------------------------------------------------------------------------


@fault_kind
class RenameFieldFault(PayloadFault):
    """The payload field at the target path is renamed."""

    kind: Literal["rename_field"] = "rename_field"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("schema.structured_mismatch",)
    new_name: str = Field(min_length=1)
    """The field's new name."""

    @field_validator("target")
    @classmethod
    def _check_field_path(cls, target: FaultTarget) -> FaultTarget:
        if target.path is not None and not isinstance(parse_payload_path(target.path)[-1], FieldSegment):
            raise FaultError(f"{target.path!r} must end with the field name to rename", loc=("path",))
        return target


@fault_kind
class RemoveFieldFault(PayloadFault):
    """The payload field (or list element) at the target path is removed."""

    kind: Literal["remove_field"] = "remove_field"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("schema.structured_mismatch",)

    @field_validator("target")
    @classmethod
    def _check_field_path(cls, target: FaultTarget) -> FaultTarget:
        if target.path is not None and not isinstance(parse_payload_path(target.path)[-1], FieldSegment | IndexSegment):
            raise FaultError(f"{target.path!r} must end with a field name or an index to remove", loc=("path",))
        return target


@fault_kind
class FlipConventionFault(PayloadFault):
    """The boxes at the target path are rewritten from the server's true convention into ``to``."""

    kind: Literal["flip_convention"] = "flip_convention"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("coords.mismatch",)
    to: BoxConventionName
    """The convention the boxes are rewritten in, e.g. ``xywh/pixel``."""
    from_: BoxConventionName | None = Field(default=None, alias="from")
    """The convention the server writes boxes in (YAML key ``from``); ``None`` reads it from the truth manifest
    (give it for third-party servers, which have none)."""

    @model_validator(mode="after")
    def _check_differs(self) -> Self:
        if self.from_ is not None and self.from_ == self.to:
            raise FaultError(f"{self.to} is the convention the boxes are already in", loc=("to",))
        return self


@fault_kind
class ChangeUnitsFault(PayloadFault):
    """The boxes at the target path are rewritten in other units; format, axis order and origin stay."""

    kind: Literal["change_units"] = "change_units"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("coords.mismatch",)
    to_units: BoxUnits
    """The units the boxes are rewritten in."""
    from_: BoxConventionName | None = Field(default=None, alias="from")
    """The convention the server writes boxes in (YAML key ``from``); ``None`` reads it from the truth manifest."""

    @model_validator(mode="after")
    def _check_differs(self) -> Self:
        if self.from_ is not None and self.from_.units is self.to_units:
            raise FaultError(f"the boxes are already in {self.to_units.value} units", loc=("to_units",))
        return self


@fault_kind
class MaskResolutionFault(PayloadFault):
    """The masks at the target path are decoded and re-encoded on a ``size`` grid."""

    kind: Literal["mask_resolution"] = "mask_resolution"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("mask.size_mismatch",)
    size: tuple[PositiveInt, PositiveInt]
    """The new grid as ``[width, height]``."""
    encoding: MaskEncoding | None = None
    """The masks' encoding; ``None`` reads it from the truth manifest (give it for third-party servers)."""

    @property
    def image_size(self) -> ImageSize:
        """``size`` as an :class:`~testbed.conventions.ImageSize`."""
        return ImageSize(width=self.size[0], height=self.size[1])


@fault_kind
class EvictHandleFault(PayloadFault):
    """The handle at the target path is replaced by one the server never issued, so using it later fails."""

    kind: Literal["evict_handle"] = "evict_handle"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("memory.handle_unknown",)


@fault_kind
class ExpireHandleFault(Fault):
    """Later requests to the server carry a logical clock advanced past the TTL of the handles this call returns.

    "Later" means a strictly greater clock (``_meta`` key ``CLOCK_META_KEY``) in the same
    run, so the effect does not depend on the timing of concurrent calls. A ``target.path``
    or ``role`` is optional: when given, the fault applies only if the result has that place.
    """

    kind: Literal["expire_handle"] = "expire_handle"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("memory.handle_expired",)
    advance_s: PositiveSeconds | None = None
    """How far the clock jumps; ``None`` for the tool's TTL (truth manifest) plus one second."""


RugPullChange = Literal["description", "schema", "remove_tool"]


@fault_kind
class RugPullFault(Fault):
    """The ``tools/list`` result changes: a tool's description or input schema, or the tool disappears.

    It applies to the listing the orchestrator makes at the start of each run (node ``@list``),
    so ``nodes`` cannot be given; ``target.tool`` names the tool.
    """

    kind: Literal["rug_pull"] = "rug_pull"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("proto.tool_list_changed",)
    change: RugPullChange
    """What changes: ``description``, ``schema`` (a new required argument) or ``remove_tool``."""
    text: str | None = None
    """For ``description``: the new description; ``None`` appends a note to the old one."""

    @field_validator("target")
    @classmethod
    def _check_tool(cls, target: FaultTarget) -> FaultTarget:
        if target.tool is None:
            raise FaultError("a rug_pull needs the tool whose listing changes", loc=("tool",))
        return target

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, nodes: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if nodes is not None:
            raise ValueError("a rug_pull changes tools/list, which no workflow node makes; schedule it with runs")
        return nodes


# --- process -----------------------------------------------------------------------------------


@fault_kind
class KillFault(Fault):
    """The server process dies with the call in flight: no response, and the connection closes.

    The kill happens once the server has received the call, before its response reaches the client.
    """

    kind: Literal["kill"] = "kill"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.PROCESS
    expected: ClassVar[tuple[str, ...]] = ("proto.transport_closed",)


@fault_kind
class RestartFault(Fault):
    """The server is restarted before the call (tolerated by a pipeline that does not rely on lost state)."""

    kind: Literal["restart"] = "restart"
    """Discriminator."""

    layer: ClassVar[FaultLayer] = FaultLayer.PROCESS
    expected: ClassVar[tuple[str, ...]] = ()


class RecordedFault(Fault):
    """A fault of a kind this install lacks (a plug-in's), read back from a recording.

    Replay only decides faults again from their schedule (the recorded messages
    already carry their effects), so the common fields are all it needs; the
    kind's own parameters are kept as they were recorded.
    """

    model_config = ConfigDict(**{**_CONFIG, "extra": "allow"})

    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC


FaultSpec = Annotated[SerializeAsAny[Fault], by_kind("fault", recorded=RecordedFault)]
"""One fault, selected by ``kind`` among the registered fault kinds (built-in and plug-in)."""

BUILTIN_FAULTS: Final[tuple[type[Fault], ...]] = (
    DelayFault,
    TimeoutFault,
    DropFault,
    DuplicateFault,
    ReorderFault,
    TruncateFault,
    CorruptJsonFault,
    JsonRpcErrorFault,
    RenameFieldFault,
    RemoveFieldFault,
    FlipConventionFault,
    ChangeUnitsFault,
    MaskResolutionFault,
    EvictHandleFault,
    ExpireHandleFault,
    RugPullFault,
    KillFault,
    RestartFault,
)
"""The fault kinds the core ships, in catalog order."""

FAULT_CATALOG: Final[Mapping[str, FaultKindInfo]] = MappingProxyType(
    {str(cls.model_fields["kind"].default): cls.info() for cls in BUILTIN_FAULTS}
)
"""The built-in kinds' metadata, read from their classes (``testbed plugins`` lists plug-in kinds too)."""

FAULT_KINDS: Final = tuple(FAULT_CATALOG)
"""The built-in ``kind`` values, in catalog order."""

FAULT_ADAPTER: TypeAdapter[FaultSpec] = TypeAdapter(FaultSpec)
"""Validates (``validate_python``) and writes (``dump_python``) one fault; its ``json_schema()`` documents them."""

_FAULT_LIST: TypeAdapter[tuple[FaultSpec, ...]] = TypeAdapter(tuple[FaultSpec, ...])


def load_faults(data: object) -> tuple[FaultSpec, ...]:
    """Validate a fault list (e.g. a scenario's ``faults`` from YAML).

    Raises:
        FaultError: the first invalid field, as one line such as
            ``faults[1].probability: must be between 0 and 1, got 1.5``.
    """
    try:
        return _FAULT_LIST.validate_python(data)
    except ValidationError as error:
        raise _one_line(error) from None


def _one_line(error: ValidationError) -> FaultError:
    located = first_error(error)
    return FaultError(located.message, loc=located.loc)


def check_targets(
    faults: Sequence[FaultSpec],
    *,
    aliases: Mapping[str, str],
    tools: Mapping[str, Collection[str]] | None,
) -> None:
    """Check that every fault targets a server alias of the scenario, and a tool that server has.

    Args:
        faults: the scenario's faults.
        aliases: the scenario's servers, alias to registry name.
        tools: each alias's tool names; ``None`` (or an alias left out, e.g. a third-party server whose
            tools are not known before it runs) skips the tool check.

    Raises:
        FaultError: naming ``faults[i].target.server`` or ``faults[i].target.tool``.
    """
    for index, fault in enumerate(faults):
        target = fault.target
        if target.server not in aliases:
            known = ", ".join(aliases) or "none"
            raise FaultError(
                f"unknown server alias {target.server!r} (servers: {known})", loc=(index, "target", "server")
            )
        known_tools = tools.get(target.server) if tools is not None else None
        if target.tool is not None and known_tools is not None and target.tool not in known_tools:
            listed = ", ".join(sorted(known_tools)) or "none"
            raise FaultError(
                f"server {target.server!r} ({aliases[target.server]}) has no tool {target.tool!r} (tools: {listed})",
                loc=(index, "target", "tool"),
            )
