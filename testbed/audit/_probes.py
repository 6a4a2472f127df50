"""Dynamic probes of one tool: what it returns for probe scenes with exact ground truth, and for bad input.

Each probe ends in a :class:`ProbeOutcome` (``ok``, ``finding``,
``not_applicable`` or ``error``) and possibly findings; a tool the probes
cannot call with a probe image alone is "not applicable" for every probe.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from testbed.audit._arguments import ImageArgument
from testbed.audit._boxes import infer_box_convention
from testbed.audit._calls import Called, Caller
from testbed.audit._card import Evidence, Finding, ProbeOutcome, ProbeStatus
from testbed.audit._masks import infer_mask_encoding, mask_uris
from testbed.audit._payload import box_groups, result_style
from testbed.audit._static import ListedTool, declared_box_conventions, declared_keyword, listed_style
from testbed.conventions import MaskEncoding
from testbed.events import CallOutcomeKind
from testbed.imaging import encode_png, encode_png_base64
from testbed.orchestrator import result_payload
from testbed.scenes import Scene
from testbed.validators._schema import schema_errors

__all__ = ["Feed", "ToolFindings", "image_feed", "image_value", "probe_tool"]

WRONG_TYPE: Final = 12345
"""A value of the wrong JSON type for a string argument."""
INVALID_IMAGE: Final = base64.b64encode(b"this is not an image").decode()
UNKNOWN_HANDLE: Final = "audit-unknown-handle-0000"


@dataclass(frozen=True)
class Feed:
    """How a tool gets a probe scene: which argument, how to make its value, and what an invalid one is."""

    argument: str
    make: Callable[[Scene], Awaitable[Any]]
    """The argument's value for a scene (``None``: it could not be made)."""
    invalid: tuple[str, Any]
    """A named bad value of the right type (an invalid image, an unknown handle)."""
    required: bool


def image_feed(tool: ListedTool, argument: ImageArgument, folder: Path) -> Feed:
    """The probe image itself, by value or by path."""

    async def make(scene: Scene) -> Any:
        return image_value(scene, argument, folder)

    return Feed(argument.name, make, ("invalid image", INVALID_IMAGE), _required(tool, argument.name))


def _required(tool: ListedTool, name: str) -> bool:
    required = tool.input_schema.get("required")
    return isinstance(required, list) and name in required


@dataclass
class ToolFindings:
    """What the probes of one tool learned (merged into its :class:`ToolReport`)."""

    fields: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    probes: list[ProbeOutcome] = field(default_factory=list)
    first_ok: tuple[Called, dict[str, Any]] | None = None
    """The first successful probe call and its arguments (what the handle probes start from)."""

    def outcome(self, probe: str, tool: str, status: ProbeStatus, detail: str) -> None:
        self.probes.append(ProbeOutcome(probe=probe, tool=tool, status=status, detail=detail))

    def find(self, vid: str, tool: str, detail: str, confidence: float, evidence: Evidence) -> None:
        self.findings.append(Finding(id=vid, tool=tool, detail=detail, confidence=confidence, evidence=evidence))


def image_value(scene: Scene, argument: ImageArgument, folder: Path) -> str:
    """The probe image as the argument takes it: base64 PNG, or the path of a PNG written to ``folder``."""
    if argument.kind == "base64":
        return encode_png_base64(scene.image)
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".png", prefix="probe-", dir=folder)
    with open(handle, "wb") as file:
        file.write(encode_png(scene.image))
    return str(Path(name).resolve())


async def probe_tool(caller: Caller, tool: ListedTool, feed: Feed, scenes: list[Scene]) -> ToolFindings:
    """Call ``tool`` with each probe scene, then with bad inputs; infer what its results show."""
    found = ToolFindings()
    calls = await _scene_calls(caller, tool, feed, scenes)
    if not calls:
        found.outcome("functional", tool.name, "error", f"no value for {feed.argument!r} could be made")
        return found
    _flag_unbounded(found, tool, [called for called, _, _ in calls])
    ok = [(called, scene) for called, scene, _ in calls if called.ok]
    if not ok:
        detail = f"no probe call succeeded: {calls[0][0].evidence.response}"
        found.outcome("functional", tool.name, "error", detail)
    else:
        found.first_ok = next((called, arguments) for called, _, arguments in calls if called.ok)
        found.outcome("functional", tool.name, "ok", f"{len(ok)} of {len(calls)} probe calls succeeded")
        _output_schema(found, tool, ok[0][0])
        _boxes(found, tool, ok)
        await _masks(found, caller, tool, ok)
        if _may_call(found, caller, tool, "determinism"):
            await _determinism(found, caller, tool, *found.first_ok)
    if _may_call(found, caller, tool, "error_style"):
        await _error_style(found, caller, tool, feed)
    return found


async def _scene_calls(
    caller: Caller, tool: ListedTool, feed: Feed, scenes: list[Scene]
) -> list[tuple[Called, Scene, dict[str, Any]]]:
    """One call per probe scene (fewer once the server stops answering or the tool times out)."""
    calls: list[tuple[Called, Scene, dict[str, Any]]] = []
    for scene in scenes:
        value = await feed.make(scene)
        if value is None:
            continue
        arguments = {feed.argument: value}
        calls.append((await caller.call(tool.name, arguments), scene, arguments))
        if caller.closed is not None or tool.name in caller.timed_out:
            break
    return calls


def _flag_unbounded(found: ToolFindings, tool: ListedTool, calls: list[Called]) -> None:
    """Calls that ran past the time bound, or answered past the size bound."""
    for called in calls:
        if called.outcome.kind is CallOutcomeKind.TIMEOUT:
            found.find("proto.timeout", tool.name, f"probe call: {called.outcome.error}", 1.0, called.evidence)
        if called.oversized:
            detail = "result larger than the audit's size bound"
            found.find("proto.oversized_response", tool.name, detail, 1.0, called.evidence)


def _may_call(found: ToolFindings, caller: Caller, tool: ListedTool, probe: str) -> bool:
    """Whether a probe may still call ``tool``: not once the server stopped answering, nor after it timed out."""
    if caller.closed is None and tool.name not in caller.timed_out:
        return True
    why = caller.closed or f"a call to {tool.name} timed out after {caller.timeout_s:g}s"
    found.outcome(probe, tool.name, "error", f"skipped: {why}")
    return False


def _output_schema(found: ToolFindings, tool: ListedTool, called: Called) -> None:
    result = called.result
    assert result is not None
    style = result_style(result, listed_style(tool))
    found.fields["schema_style"] = style.value
    structured = result.structured_content
    if tool.output_schema is None:
        if structured is not None:
            found.find(
                "schema.output_schema_missing",
                tool.name,
                "structuredContent without an outputSchema",
                1.0,
                called.evidence,
            )
            found.outcome("output_schema", tool.name, "finding", "structuredContent but no outputSchema")
        elif result_payload(result) is not None:
            found.find(
                "schema.text_json_without_schema",
                tool.name,
                "JSON in a text block, no outputSchema",
                1.0,
                called.evidence,
            )
            found.outcome("output_schema", tool.name, "finding", "JSON in a text block, no outputSchema")
        else:
            found.outcome(
                "output_schema", tool.name, "not_applicable", "no outputSchema and no JSON payload (content only)"
            )
        return
    if structured is None:
        found.find(
            "schema.structured_mismatch",
            tool.name,
            "outputSchema declared but no structuredContent returned",
            1.0,
            called.evidence,
        )
        found.outcome("output_schema", tool.name, "finding", "no structuredContent")
        return
    errors = schema_errors(structured, dict(tool.output_schema))
    if errors:
        found.find(
            "schema.structured_mismatch",
            tool.name,
            f"{len(errors)} schema error(s), first: {errors[0]}",
            1.0,
            called.evidence,
        )
        found.outcome("output_schema", tool.name, "finding", errors[0])
    else:
        found.outcome("output_schema", tool.name, "ok", "structuredContent validates against outputSchema")


def _boxes(found: ToolFindings, tool: ListedTool, ok: list[tuple[Called, Scene]]) -> None:
    per_path: dict[str, list[tuple[list[list[float]], Scene]]] = {}
    for called, scene in ok:
        assert called.result is not None
        groups = box_groups(result_payload(called.result))
        for path in groups:
            per_path.setdefault(path, [])
        for path in per_path:
            per_path[path].append((groups.get(path, []), scene))
    if not per_path:
        found.outcome("box_convention", tool.name, "not_applicable", "no 4-number boxes in its results")
        return
    inferences = {path: infer_box_convention(observations) for path, observations in per_path.items()}
    path, inference = max(inferences.items(), key=lambda item: (item[1].explained, item[1].boxes))
    evidence = ok[0][0].evidence
    declared = declared_box_conventions(tool)
    found.fields["declared_box_convention"] = declared[0] if declared else None
    if inference.convention is None:
        found.outcome(
            "box_convention", tool.name, "error",
            f"{inference.boxes} box(es) at {path}, none on a ground-truth object under any known convention",
        )  # fmt: skip
        return
    found.fields.update(
        box_convention=inference.convention,
        box_convention_confidence=round(inference.confidence, 3),
        box_convention_alternatives=list(inference.alternatives),
    )
    detail = (
        f"{path}: {inference.convention} explains {inference.explained}/{inference.boxes} boxes "
        f"(mean IoU {inference.mean_iou:.2f})"
    )
    status: ProbeStatus = "ok"
    if not declared:
        found.find(
            "coords.undeclared",
            tool.name,
            f"returns boxes at {path} ({inference.convention}) without a coordinate_system",
            1.0,
            evidence,
        )
        status = "finding"
    elif inference.convention not in declared and not set(inference.alternatives) & set(declared):
        text = f"declares {declared[0]} but its boxes at {path} read as {inference.convention}"
        found.find("coords.declared_mismatch", tool.name, text, inference.confidence, evidence)
        status = "finding"
    found.outcome("box_convention", tool.name, status, detail)


async def _masks(found: ToolFindings, caller: Caller, tool: ListedTool, ok: list[tuple[Called, Scene]]) -> None:
    unread: list[str] = []
    for called, scene in ok:
        assert called.result is not None
        payload = result_payload(called.result)
        resources: dict[str, str] = {}
        for uri in mask_uris(payload):
            content = await caller.read_resource(uri)
            if content is not None:
                resources[uri] = content
            else:
                unread.append(uri)
        inference = infer_mask_encoding(payload, scene, resources)
        if inference is None:
            continue
        encoding = inference.encoding + (" (normalized)" if inference.normalized_polygons else "")
        found.fields.update(mask_encoding=encoding, mask_resolution=inference.resolution)
        detail = (
            f"{inference.path}: {encoding} on a {inference.grid[1]}x{inference.grid[0]} grid for a "
            f"{scene.width}x{scene.height} image (mean IoU {inference.mean_iou:.2f})"
        )
        status: ProbeStatus = "ok"
        if inference.resolution != "image":
            found.find("mask.size_mismatch", tool.name, detail, 1.0, called.evidence)
            status = "finding"
        declared = declared_keyword(tool, "encoding"), declared_keyword(tool, "resolution")
        if (declared[0] is not None and declared[0] != inference.encoding) or (
            declared[1] is not None and declared[1] != inference.resolution
        ):
            text = f"declares {declared[0]}/{declared[1]}, returns {inference.encoding}/{inference.resolution}"
            found.find("mask.declared_mismatch", tool.name, text, 1.0, called.evidence)
            status = "finding"
        found.outcome("mask_encoding", tool.name, status, detail)
        return
    if unread:
        # The payload's format is resource_uri by its shape; what the URIs hold cannot be checked from here.
        found.fields.update(mask_encoding=MaskEncoding.RESOURCE_URI.value)
        detail = f"resource_uri: {unread[0]} and others are not readable through resources/read, so not decoded"
        found.outcome("mask_encoding", tool.name, "ok", detail)
        return
    found.outcome("mask_encoding", tool.name, "not_applicable", "no value in its results decodes as masks of the scene")


async def _determinism(
    found: ToolFindings, caller: Caller, tool: ListedTool, called: Called, arguments: dict[str, Any]
) -> None:
    again = await caller.call(tool.name, arguments)
    if not again.ok or called.result is None or again.result is None:
        found.outcome("determinism", tool.name, "error", f"the repeated call failed: {again.evidence.response}")
        return
    same = _canonical(called.result) == _canonical(again.result)
    found.fields["deterministic"] = same
    if same:
        found.outcome("determinism", tool.name, "ok", "an identical call returned an identical result")
        return
    found.find(
        "proto.nondeterministic", tool.name, "two identical calls returned different results", 0.9, again.evidence
    )
    found.outcome("determinism", tool.name, "finding", "an identical call returned a different result")


def _canonical(result: Any) -> str:
    return json.dumps(result.model_dump(by_alias=True, mode="json", exclude_none=True), sort_keys=True)


async def _error_style(found: ToolFindings, caller: Caller, tool: ListedTool, feed: Feed) -> None:
    """Bad inputs: how each failure arrives, and whether the server is still up afterwards."""
    styles: list[str] = []
    invalid_case, invalid = feed.invalid
    cases: list[tuple[str, dict[str, Any]]] = [
        (invalid_case, {feed.argument: invalid}),
        ("wrong type", {feed.argument: WRONG_TYPE}),
    ]
    if feed.required:
        cases.append(("missing field", {}))
    before = len(found.findings)
    for case, arguments in cases:
        called = await caller.call(tool.name, arguments)
        style = _classify(found, tool, case, called)
        styles.append(f"{case}: {style}")
        if caller.closed is not None or tool.name in caller.timed_out:
            break
    found.fields["error_style"] = _overall(styles)
    status: ProbeStatus = "finding" if len(found.findings) > before else "ok"
    found.outcome("error_style", tool.name, status, "; ".join(styles))
    if await caller.alive():
        found.outcome("robustness", tool.name, "ok", "still answers tools/list after the bad calls")
    else:
        found.outcome("robustness", tool.name, "finding", f"stopped answering after bad input: {caller.closed}")


def _classify(found: ToolFindings, tool: ListedTool, case: str, called: Called) -> str:
    kind = called.outcome.kind
    if kind is CallOutcomeKind.TOOL_ERROR:
        return "is_error"
    if kind is CallOutcomeKind.PROTOCOL_ERROR:
        confidence = (
            0.7 if case in ("wrong type", "missing field") else 1.0
        )  # invalid params may be argued a protocol matter
        found.find(
            "proto.error_misclassified", tool.name, f"{case}: {called.outcome.error}", confidence, called.evidence
        )
        return "protocol_error"
    if kind is CallOutcomeKind.TIMEOUT:
        found.find("proto.timeout", tool.name, f"{case}: {called.outcome.error}", 1.0, called.evidence)
        return "timeout"
    if kind is CallOutcomeKind.TRANSPORT_CLOSED:
        found.find("proto.server_crashed", tool.name, f"{case}: the transport closed", 1.0, called.evidence)
        return "crashed"
    payload = result_payload(called.result) if called.result is not None else None
    if isinstance(payload, dict) and "error" in payload:
        found.find("schema.error_in_payload", tool.name, f"{case}: error reported in the payload", 1.0, called.evidence)
        return "payload"
    found.find("schema.bad_input_accepted", tool.name, f"{case}: answered as a success", 0.8, called.evidence)
    return "accepted"


def _overall(styles: list[str]) -> str:
    kinds = sorted({style.split(": ", 1)[1] for style in styles})
    return kinds[0] if len(kinds) == 1 else "mixed (" + ", ".join(kinds) + ")"
