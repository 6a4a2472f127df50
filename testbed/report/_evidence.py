"""Visual evidence for violations: what a producer meant, how its consumer read it, and what came back.

For each violation that involves an image the evidence is a small figure:

* ``coords.*``: the scene with the ground-truth boxes, the producer's box in its
  true convention and the box as the consumer read it (distinct colours, a
  legend), with the crop the consumer returned beside it;
* ``mask.*``: the mask as produced, the mask as read, and their overlap;
* ``memory.*`` and ``perm.*``: a diagram of the handle's or the call's path
  (issued by, used by, scope, clock), as HTML.

Geometry is computed from the recorded run alone (the same readings the
validators make, through each tool's truth manifest). Figures are PNG files
drawn with OpenCV and stored once, by content hash, in the experiment's blob
store; box evidence can also be drawn as an SVG overlay on the scene image,
which costs no rasterisation (the run viewer's pages use it for runs outside
the figure sample).
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from testbed._errors import TestbedError
from testbed.catalog import CATALOG
from testbed.conventions import (
    BoxConvention,
    ImageSize,
    MaskResolution,
    box_iou,
    decode_masks,
    to_canonical,
)
from testbed.events import BlobStore, CallEvent, CallOutcomeKind, Direction, MessageEvent, internalize
from testbed.imaging import decode_image, encode_png
from testbed.protocol import SemanticRole
from testbed.tasks import unletterbox_masks
from testbed.validators import RunRecord, Violation
from testbed.validators._coords import as_boxes, box_edges, tool_truth
from testbed.validators._mask import mask_convention, mask_edges, mask_grids
from testbed.validators._memory import handle_uses, issued_handles
from testbed.validators._permission import PATH_ROLES
from testbed.workflow import BoxAdapter, MaskAdapter, MaskConvention, read_path

__all__ = [
    "ROLE_COLOURS",
    "Evidence",
    "EvidenceBuilder",
    "Hop",
    "Panel",
    "Sample",
    "Shape",
    "evidence_kind",
    "legend_html",
    "path_html",
    "render_figure",
    "sample_violations",
    "store_figure",
    "svg_overlay",
]

EvidenceKind = Literal["boxes", "masks", "path", "none"]

ROLE_COLOURS: dict[str, tuple[int, int, int]] = {
    "context": (150, 205, 150),
    "truth": (20, 200, 60),
    "producer": (0, 185, 255),
    "adapter": (255, 150, 0),
    "consumer": (235, 25, 25),
}
"""RGB colour of each kind of box or mask: other objects, the ground truth, as produced, as an adapter read
it, as consumed (bright colours, unlike the saturated scene shapes, and outlined in black when drawn)."""

_ROLE_ORDER = ("context", "truth", "producer", "adapter", "consumer")
_FIGURE_SCALE = 2
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (236, 236, 236)
_TEXT = (30, 30, 30)
_MAX_MASK_FIGURE_SIDE = 320
_READ_ERRORS = (TestbedError, ValueError, TypeError, KeyError, IndexError, AttributeError)


def _box4(values: Any) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def _merge(stack: NDArray[np.bool_], height: int, width: int) -> NDArray[np.bool_]:
    """One mask: the union of a stack (all false for an empty one)."""
    merged: NDArray[np.bool_] = np.zeros((height, width), dtype=np.bool_)
    for mask in stack:
        merged |= mask
    return merged


_ACTUAL = re.compile(r"value is (\S+) but ")


def _actual_convention(violation: Violation) -> BoxConvention | None:
    """The convention ``coords.mismatch`` inferred the value to be in (its detail names it), if it says."""
    if violation.id != "coords.mismatch":
        return None
    match = _ACTUAL.search(violation.detail)
    if match is None:
        return None
    try:
        return BoxConvention.from_name(match.group(1))
    except (TestbedError, ValueError):
        return None


def evidence_kind(violation_id: str) -> EvidenceKind:
    """Which figure a violation ID gets (``none``: it involves no image and no handle or path)."""
    category = violation_id.partition(".")[0]
    if category == "coords":
        return "boxes"
    if category == "mask":
        return "masks"
    if category in ("memory", "perm"):
        return "path"
    return "none"


def hex_colour(role: str) -> str:
    red, green, blue = ROLE_COLOURS.get(role, (90, 90, 90))
    return f"#{red:02x}{green:02x}{blue:02x}"


@dataclass(frozen=True)
class Shape:
    """One box drawn on the scene, in canonical coordinates (pixel xyxy, top-left origin)."""

    role: str
    """``truth``, ``producer``, ``adapter`` or ``consumer`` (its colour)."""
    label: str
    """Legend text (ASCII)."""
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Panel:
    """An image shown beside the scene (a returned crop), or why there is none."""

    caption: str
    blob: str | None
    """Content hash of the image in the experiment's blob store."""
    note: str = ""


@dataclass(frozen=True)
class Hop:
    """One box of a handle's or a call's path diagram."""

    title: str
    lines: tuple[str, ...]
    role: str = "producer"


@dataclass(eq=False)
class MaskLayers:
    """Masks at image resolution, for a mask figure."""

    produced: NDArray[np.bool_] | None
    produced_label: str
    read: NDArray[np.bool_] | None
    read_label: str
    read_error: str = ""
    produced_error: str = ""


@dataclass(eq=False)
class Evidence:
    """What to draw for one violation, from its recorded run."""

    violation: Violation
    kind: EvidenceKind
    scene: str | None
    """Content hash of the scene image."""
    width: int
    height: int
    shapes: tuple[Shape, ...] = ()
    panels: tuple[Panel, ...] = ()
    hops: tuple[Hop, ...] = ()
    masks: MaskLayers | None = None
    missing: list[str] = field(default_factory=list)
    """Evidence that could not be found (a missing blob, an unreadable value), one line each."""
    figure: str | None = None
    """Content hash of the rendered PNG figure, once stored."""
    experiment: str | None = None
    """Which experiment the run belongs to, where a report covers several."""

    @property
    def title(self) -> str:
        v = self.violation
        where = f" at {v.node}[{v.item}]" if v.node is not None else ""
        of = f" of {self.experiment}" if self.experiment is not None else ""
        return f"run {v.run}{of}{where}: {v.id}"


@dataclass(frozen=True)
class Sample:
    """A bounded, seeded sample of one ID's occurrences: one per sampled run."""

    id: str
    occurrences: int
    runs: int
    chosen: tuple[Violation, ...]
    seed: int


def sample_violations(
    violations: Iterable[Violation],
    per_id: int,
    seed: int,
    prefer: Callable[[Violation], bool] | None = None,
) -> dict[str, Sample]:
    """Per ID, up to ``per_id`` occurrences from distinct runs chosen by ``seed``.

    In each chosen run the occurrence shown is the first one ``prefer`` accepts (e.g. one whose call
    returned something to show), else the run's first.
    """
    by_id: dict[str, list[Violation]] = {}
    for violation in violations:
        by_id.setdefault(violation.id, []).append(violation)
    samples: dict[str, Sample] = {}
    for violation_id, found in sorted(by_id.items()):
        first: dict[int, Violation] = {}
        for violation in found:
            current = first.get(violation.run)
            if current is None or (prefer is not None and not prefer(current) and prefer(violation)):
                first[violation.run] = violation
        runs = sorted(first)
        chosen = sorted(random.Random(f"{seed}:{violation_id}").sample(runs, min(per_id, len(runs))))
        samples[violation_id] = Sample(violation_id, len(found), len(runs), tuple(first[r] for r in chosen), seed)
    return samples


def _message_result(message: MessageEvent) -> dict[str, Any] | None:
    result = message.message.get("result")
    return result if isinstance(result, dict) else None


def _image_blobs(result: dict[str, Any] | None) -> list[str]:
    """Blob hashes of the image content blocks of a tools/call result."""
    blobs = []
    for block in (result or {}).get("content") or []:
        if isinstance(block, dict) and block.get("type") == "image":
            data = block.get("data")
            if isinstance(data, dict) and isinstance(data.get("$blob"), str):
                blobs.append(data["$blob"])
    return blobs


class EvidenceBuilder:
    """Builds the evidence of each violation of one run, reading the run's edges and messages once."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.size = ImageSize(width=record.started.width, height=record.started.height)
        self._box_edges: list[Any] | None = None
        self._mask_edges: list[Any] | None = None
        self._responses: dict[tuple[str, str, int], MessageEvent] | None = None
        self._truth_boxes: NDArray[np.float64] | None = None

    # --- shared lookups -------------------------------------------------------------------

    def responses(self) -> dict[tuple[str, str, int], MessageEvent]:
        """The last response message of each call, by ``(server, node, item)``."""
        if self._responses is None:
            found: dict[tuple[str, str, int], MessageEvent] = {}
            for event in self.record.events:
                if (
                    isinstance(event, MessageEvent)
                    and event.direction is Direction.SERVER_TO_CLIENT
                    and event.node is not None
                    and event.item is not None
                    and ("result" in event.message or "error" in event.message)
                ):
                    found[(event.server, event.node, event.item)] = event
            self._responses = found
        return self._responses

    def truth_boxes(self) -> NDArray[np.float64]:
        if self._truth_boxes is None:
            boxes = [g.box_xyxy for g in self.record.started.ground_truth]
            self._truth_boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        return self._truth_boxes

    def _call(self, violation: Violation) -> tuple[int, CallEvent] | None:
        """The call a violation is attributed to (its node and item), else its first evidence call."""
        events = self.record.events
        candidates = [(p, events[p]) for p in violation.evidence if 0 <= p < len(events)]
        calls = [(p, e) for p, e in candidates if isinstance(e, CallEvent)]
        for position, call in reversed(calls):
            if (call.node, call.item) == (violation.node, violation.item):
                return position, call
        if violation.node is not None:
            for position, event in enumerate(events):
                if isinstance(event, CallEvent) and (event.node, event.item) == (violation.node, violation.item):
                    return position, event
        return calls[0] if calls else None

    def _base(self, violation: Violation) -> Evidence:
        started = self.record.started
        return Evidence(violation, evidence_kind(violation.id), started.image_blob, started.width, started.height)

    def build(self, violation: Violation) -> Evidence:
        """The evidence of one violation of this run (never raises: what is missing is listed)."""
        evidence = self._base(violation)
        try:
            if evidence.kind == "boxes":
                self._boxes(evidence)
            elif evidence.kind == "masks":
                self._mask_layers(evidence)
            elif evidence.kind == "path":
                self._path(evidence)
        except Exception as error:  # evidence is an aid: a surprise in one run must not stop a report
            evidence.missing.append(f"evidence could not be read ({error.__class__.__name__}: {error})")
        if evidence.scene is not None and self.record.blobs.path(evidence.scene) is None:
            evidence.missing.append(f"scene image {evidence.scene[:12]} is missing from blobs/")
        return evidence

    # --- boxes ----------------------------------------------------------------------------

    def box_edges(self) -> list[Any]:
        if self._box_edges is None:
            self._box_edges = list(box_edges(self.record))
        return self._box_edges

    def _canonical(self, boxes: Any, convention: BoxConvention) -> list[tuple[float, float, float, float]]:
        array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        canonical = to_canonical(array, convention, self.size)
        limit = 4.0 * max(self.size.width, self.size.height)
        clipped = np.clip(canonical, -limit, limit)
        return [_box4(row) for row in clipped]

    def _truth_shapes(self, shapes: list[Shape]) -> list[Shape]:
        """Ground-truth boxes: the object the drawn boxes locate best first, labelled with its class."""
        truth = self.truth_boxes()
        if len(truth) == 0:
            return []
        best = 0
        if shapes:
            ious = box_iou(np.array([s.box for s in shapes], dtype=np.float64), truth)
            best = int(np.argmax(ious.max(axis=0)))
        names = [g.class_name for g in self.record.started.ground_truth]
        result = [Shape("truth", f"ground truth: {names[best]}", _box4(truth[best]))]
        others = [i for i in range(len(truth)) if i != best]
        result += [Shape("context", "other ground-truth objects", _box4(truth[i])) for i in others]
        return result

    def _crop_panel(self, call: CallEvent) -> Panel | None:
        response = self.responses().get((call.server, call.node, call.item))
        images = _image_blobs(_message_result(response)) if response is not None else []
        if images:
            return Panel(f"what {call.server}.{call.tool} returned", images[0])
        truth = self.record.truth(call.server)
        if truth is None or truth.kind != "cropping":
            return None
        why = f"{call.outcome.value}" + (f": {call.error}" if call.error else "")
        return Panel(f"what {call.server}.{call.tool} returned", None, f"no image returned ({why})")

    def _boxes(self, evidence: Evidence) -> None:

        found = self._call(evidence.violation)
        if found is None:
            evidence.missing.append("no call of this run to draw (the finding is about a listing, not a call)")
            return
        at, call = found
        shapes: list[Shape] = []
        edges = [edge for edge in self.box_edges() if edge.consumer_at == at]
        if edges:
            edge = edges[0]
            producer, consumer = edge.producer, edge.consumer
            manifest = edge.producer_truth.box_convention if edge.producer_truth is not None else None
            produced_in = _actual_convention(evidence.violation) or manifest
            if produced_in is not None:
                meant = f"as it actually is ({produced_in}"
                meant += f"; its manifest says {manifest})" if manifest is not None and manifest != produced_in else ")"
                for box in self._canonical(edge.source, produced_in):
                    shapes.append(
                        Shape(
                            "producer",
                            f"{producer.server}.{producer.tool} box, {meant}",
                            box,
                        )
                    )
            if isinstance(edge.edge.adapter, BoxAdapter):
                adapter = edge.edge.adapter
                for box in self._canonical(edge.source, adapter.from_):
                    shapes.append(Shape("adapter", f"declared adapter reads it as {adapter.from_}", box))
            read_in = edge.consumer_truth.box_convention
            if read_in is not None:
                for box in self._canonical(edge.sent, read_in):
                    shapes.append(Shape("consumer", f"{consumer.server}.{consumer.tool} reads it as {read_in}", box))
        else:
            truth = tool_truth(self.record, call)
            convention = truth.box_convention if truth is not None else None
            if truth is None or convention is None:
                evidence.missing.append(f"{call.server}.{call.tool}: no truth manifest with a box convention")
            else:
                if SemanticRole.BOUNDING_BOX in truth.inputs:
                    sent = as_boxes(
                        internalize(call.arguments.get(truth.inputs[SemanticRole.BOUNDING_BOX]), self.record.blobs)
                    )
                    if sent is not None:
                        for box in self._canonical(sent, convention):
                            shapes.append(
                                Shape("consumer", f"{call.server}.{call.tool} reads its argument as {convention}", box)
                            )
                if SemanticRole.BOUNDING_BOX in truth.paths and call.outcome is CallOutcomeKind.OK:
                    try:
                        value = read_path(
                            internalize(call.payload, self.record.blobs), truth.paths[SemanticRole.BOUNDING_BOX]
                        )
                    except _READ_ERRORS:
                        value = None
                    returned = as_boxes(value)
                    if returned is not None:
                        for box in self._canonical(returned, convention):
                            shapes.append(
                                Shape("producer", f"{call.server}.{call.tool} result, in its true {convention}", box)
                            )
        if not shapes:
            evidence.missing.append("no box found in the call's arguments or result")
        evidence.shapes = tuple(self._truth_shapes(shapes) + shapes)
        panel = self._crop_panel(call)
        if panel is not None:
            evidence.panels = (panel,)
            if panel.blob is not None and self.record.blobs.path(panel.blob) is None:
                evidence.missing.append(f"returned image {panel.blob[:12]} is missing from blobs/")

    # --- masks ----------------------------------------------------------------------------

    def mask_edges(self) -> list[Any]:
        if self._mask_edges is None:
            self._mask_edges = list(mask_edges(self.record))
        return self._mask_edges

    def _decode(self, value: Any, convention: MaskConvention) -> NDArray[np.bool_]:
        """``value`` read in ``convention``, as one mask at image resolution (several are merged)."""

        last: Exception | None = None
        for payload in (value, [value]):
            try:
                grid = self.size
                if convention.resolution is MaskResolution.MODEL:
                    grids = mask_grids(payload, convention.encoding)
                    grid = grids[0] if grids else self.size
                stack = decode_masks(
                    payload, convention.encoding, grid, normalized_polygons=convention.normalized_polygons
                )
                if (grid.width, grid.height) != (self.size.width, self.size.height):
                    stack = unletterbox_masks(stack, self.size)
                return _merge(stack, self.size.height, self.size.width)
            except _READ_ERRORS as error:
                last = error
        raise ValueError(str(last)) from None

    def _mask_layers(self, evidence: Evidence) -> None:

        found = self._call(evidence.violation)
        if found is None:
            evidence.missing.append("no call of this run to draw (the finding is about a listing, not a call)")
            return
        at, call = found
        violation_id = evidence.violation.id
        blobs = self.record.blobs
        if violation_id == "mask.encoding_mismatch":
            edges = [edge for edge in self.mask_edges() if edge.consumer_at == at]
            if not edges:
                evidence.missing.append("the mask edge into this call was not found")
                return
            edge = edges[0]
            consumer_truth = tool_truth(self.record, edge.consumer)
            argument = consumer_truth.inputs[SemanticRole.MASK] if consumer_truth is not None else None
            value = internalize(edge.consumer.arguments.get(argument), blobs) if argument else None
            sent = edge.edge.adapter.to if isinstance(edge.edge.adapter, MaskAdapter) else edge.producer_convention
            layers = MaskLayers(
                None, f"as produced ({sent})", None, f"as {edge.consumer.tool} reads it ({edge.consumer_convention})"
            )
            self._fill(layers, value, sent, edge.consumer_convention)
            evidence.masks = layers
            return
        truth = tool_truth(self.record, call)
        convention = mask_convention(truth) if truth is not None else None
        if truth is None or convention is None or SemanticRole.MASK not in truth.paths:
            evidence.missing.append(f"{call.server}.{call.tool}: no truth manifest with a mask encoding")
            return
        value = read_path(internalize(call.payload, blobs), truth.paths[SemanticRole.MASK])
        if violation_id == "mask.size_mismatch":
            grids = mask_grids(value, convention.encoding)
            grid = f"{grids[0].width}x{grids[0].height}" if grids else "unknown"
            naive = convention.model_copy(update={"resolution": MaskResolution.IMAGE})
            layers = MaskLayers(
                None,
                f"as produced, on its {grid} grid, mapped to the image",
                None,
                f"read as if on the {self.size.width}x{self.size.height} image grid",
            )
            self._fill(layers, value, convention, naive, stretch_read=True)
            evidence.masks = layers
            return
        layers = MaskLayers(None, f"as produced ({convention})", None, "its pixels outside the box it came with")
        try:
            layers.produced = self._decode(value, convention)
        except ValueError as error:
            layers.produced_error = str(error)
        if (
            layers.produced is not None
            and SemanticRole.BOUNDING_BOX in truth.paths
            and truth.box_convention is not None
        ):
            boxes = as_boxes(read_path(internalize(call.payload, blobs), truth.paths[SemanticRole.BOUNDING_BOX]))
            if boxes is not None:
                canonical = self._canonical(boxes, truth.box_convention)
                evidence.shapes = tuple(Shape("producer", f"its box ({truth.box_convention})", b) for b in canonical)
                inside = np.zeros_like(layers.produced)
                for x1, y1, x2, y2 in canonical:
                    inside[max(0, int(y1)) : max(0, int(np.ceil(y2))), max(0, int(x1)) : max(0, int(np.ceil(x2)))] = (
                        True
                    )
                layers.read = layers.produced & ~inside
        evidence.masks = layers

    def _fill(
        self,
        layers: MaskLayers,
        value: Any,
        produced: MaskConvention,
        read: MaskConvention,
        *,
        stretch_read: bool = False,
    ) -> None:
        try:
            layers.produced = self._decode(value, produced)
        except ValueError as error:
            layers.produced_error = str(error)
        try:
            if stretch_read:
                layers.read = self._naive(value, read)
            else:
                layers.read = self._decode(value, read)
        except ValueError as error:
            layers.read_error = str(error)

    def _naive(self, value: Any, convention: MaskConvention) -> NDArray[np.bool_]:
        """Masks written on another grid, read pixel for pixel as if on the image's (cropped or padded)."""

        grids = mask_grids(value, convention.encoding)
        if not grids:
            return self._decode(value, convention)
        grid = grids[0]
        try:
            stack = decode_masks(value, convention.encoding, grid, normalized_polygons=convention.normalized_polygons)
        except _READ_ERRORS as error:
            raise ValueError(str(error)) from None
        merged = _merge(stack, grid.height, grid.width)
        canvas = np.zeros((self.size.height, self.size.width), dtype=bool)
        rows, cols = min(grid.height, self.size.height), min(grid.width, self.size.width)
        canvas[:rows, :cols] = merged[:rows, :cols]
        return canvas

    # --- handles and paths ----------------------------------------------------------------

    def _path(self, evidence: Evidence) -> None:

        violation = evidence.violation
        found = self._call(violation)
        scope = self.record.started.scope
        if found is None:
            evidence.missing.append("no call of this run to draw (the finding is about a listing, not a call)")
            return
        at, call = found
        if violation.id.startswith("perm."):
            granted = self.record.scenario.agent.grants
            agent = call.agent or self.record.scenario.agent.kind
            hops = [
                Hop(
                    "agent",
                    (agent, f"scope {scope}", "grants: " + (", ".join(sorted(granted)) if granted else "every tool")),
                    "truth",
                ),
                Hop(
                    "called",
                    (
                        f"{call.server}.{call.tool}",
                        f"{call.node}[{call.item}] at t={call.clock:g}s",
                        call.outcome.value,
                    ),
                    "consumer",
                ),
            ]
            if violation.id == "perm.path_outside_sandbox":
                truth = tool_truth(self.record, call)
                paths = [
                    call.arguments.get(arg)
                    for role, arg in (truth.inputs.items() if truth else [])
                    if role in PATH_ROLES
                ]
                shown = [str(p)[:120] for p in paths if isinstance(p, str)]
                hops.append(Hop("path argument", (*shown, "must stay under the run's sandbox/"), "consumer"))
            evidence.hops = tuple(hops)
            return
        if violation.id == "memory.unbounded_store":
            truth = tool_truth(self.record, call)
            returns = truth.returns.value if truth is not None and truth.returns is not None else "unknown"
            evidence.hops = (
                Hop(
                    "issued by",
                    (f"{call.server}.{call.tool}", f"{call.node}[{call.item}]", f"run scope {scope}"),
                    "producer",
                ),
                Hop("store", (f"{call.server}: {returns} handles", violation.detail), "consumer"),
            )
            return
        uses = [use for use in handle_uses(self.record) if use.at == at]
        if not uses:
            evidence.hops = (Hop("used by", (f"{call.server}.{call.tool}", f"{call.node}[{call.item}]"), "consumer"),)
            return
        use = uses[0]
        origin = next(
            (
                i
                for i in issued_handles(self.record)
                if i.handle == use.handle and i.call.server == use.call.server and i.at <= use.at
            ),
            None,
        )
        hops = []
        if origin is not None:
            truth = origin.truth
            lifetime = f"ttl {truth.ttl_seconds:g}s" if truth.ttl_seconds is not None else "no ttl"
            hops.append(
                Hop(
                    "issued by",
                    (
                        f"{origin.call.server}.{origin.call.tool}",
                        f"{origin.call.node}[{origin.call.item}]"
                        + (f", agent {origin.call.agent}" if origin.call.agent else ""),
                        f"run {self.record.started.run}, scope {scope}",
                        f"clock t={origin.clock:g}s",
                    ),
                    "producer",
                )
            )
            hops.append(
                Hop(
                    "handle",
                    (use.handle[:80], f"scope {truth.returns.value if truth.returns else 'unknown'}, {lifetime}"),
                    "adapter",
                )
            )
        else:
            hops.append(
                Hop("handle", (use.handle[:80], f"not issued by {use.call.server} earlier in this run"), "adapter")
            )
        outcome = use.call.outcome.value + (f": {use.call.error[:100]}" if use.call.error else "")
        hops.append(
            Hop(
                "used by",
                (
                    f"{use.call.server}.{use.call.tool}",
                    f"{use.call.node}[{use.call.item}]" + (f", agent {use.call.agent}" if use.call.agent else ""),
                    f"run {self.record.started.run}, scope {scope}",
                    f"clock t={use.clock:g}s",
                    outcome,
                ),
                "consumer",
            )
        )
        evidence.hops = tuple(hops)


# --- drawing -------------------------------------------------------------------------------


def _load(blobs: BlobStore, digest: str | None) -> NDArray[np.uint8] | None:
    if digest is None:
        return None
    path = blobs.path(digest)
    if path is None or path.suffix == ".txt":
        return None
    try:
        return decode_image(path.read_bytes(), what=str(path))
    except (TestbedError, OSError):
        return None


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _text(
    canvas: NDArray[np.uint8], text: str, x: int, y: int, colour: tuple[int, int, int] = _TEXT, scale: float = 0.45
) -> None:
    cv2.putText(canvas, _ascii(text), (x, y), _FONT, scale, colour, 1, cv2.LINE_AA)


def _legend(entries: Sequence[tuple[tuple[int, int, int], str]], width: int) -> NDArray[np.uint8]:
    line = 20
    strip = np.full((8 + line * max(len(entries), 1), width, 3), 255, dtype=np.uint8)
    for index, (colour, label) in enumerate(entries):
        y = 6 + index * line
        cv2.rectangle(strip, (8, y + 3), (26, y + 15), colour, -1)
        _text(strip, label, 34, y + 14)
    return strip


def _fit(image: NDArray[np.uint8], height: int, max_width: int) -> NDArray[np.uint8]:
    scale = min(height / image.shape[0], max_width / image.shape[1])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    interpolation = cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA
    return np.asarray(cv2.resize(image, size, interpolation=interpolation), dtype=np.uint8)


def _hstack(parts: Sequence[NDArray[np.uint8]], gap: int = 12) -> NDArray[np.uint8]:
    height = max(part.shape[0] for part in parts)
    width = sum(part.shape[1] for part in parts) + gap * (len(parts) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for part in parts:
        canvas[: part.shape[0], x : x + part.shape[1]] = part
        x += part.shape[1] + gap
    return canvas


def _vstack(parts: Sequence[NDArray[np.uint8]]) -> NDArray[np.uint8]:
    width = max(part.shape[1] for part in parts)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts]
    return np.concatenate(padded, axis=0)


def _titled(image: NDArray[np.uint8], title: str, *, wrap: int | None = None) -> NDArray[np.uint8]:
    lines = _wrap(title, wrap)[:2] if wrap is not None else [title]
    width = max(image.shape[1], max((8 * len(line) + 10 for line in lines), default=8))
    bar = np.full((6 + 18 * max(len(lines), 1), width, 3), 255, dtype=np.uint8)
    for index, line in enumerate(lines):
        _text(bar, line, 4, 15 + 18 * index)
    return _vstack([bar, image])


def _bounds(evidence: Evidence) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = 0.0, 0.0, float(evidence.width), float(evidence.height)
    for shape in evidence.shapes:
        x1, y1 = min(x1, shape.box[0]), min(y1, shape.box[1])
        x2, y2 = max(x2, shape.box[2]), max(y2, shape.box[3])
    pad = 6.0
    return x1 - pad, y1 - pad, x2 + pad, y2 + pad


def _boxes_figure(evidence: Evidence, blobs: BlobStore) -> NDArray[np.uint8]:
    scene = _load(blobs, evidence.scene)
    x0, y0, x1, y1 = _bounds(evidence)
    scale = _FIGURE_SCALE if max(x1 - x0, y1 - y0) <= 480 else max(0.5, 960 / max(x1 - x0, y1 - y0))
    width, height = round((x1 - x0) * scale), round((y1 - y0) * scale)
    canvas = np.full((height, width, 3), _BACKGROUND, dtype=np.uint8)
    ox, oy = round(-x0 * scale), round(-y0 * scale)
    w, h = round(evidence.width * scale), round(evidence.height * scale)
    if scene is not None:
        canvas[oy : oy + h, ox : ox + w] = cv2.resize(scene, (w, h), interpolation=cv2.INTER_NEAREST)
    else:
        _text(canvas, "scene image missing", ox + 8, oy + 20)
    cv2.rectangle(canvas, (ox - 1, oy - 1), (ox + w, oy + h), (60, 60, 60), 1)
    for shape in sorted(evidence.shapes, key=lambda s: _ROLE_ORDER.index(s.role) if s.role in _ROLE_ORDER else 9):
        colour = ROLE_COLOURS.get(shape.role, (90, 90, 90))
        thin = shape.role == "context"
        a = (round((shape.box[0] - x0) * scale), round((shape.box[1] - y0) * scale))
        b = (round((shape.box[2] - x0) * scale) - 1, round((shape.box[3] - y0) * scale) - 1)
        if shape.role == "truth":  # wide, under the others: it shows around a box drawn on top of it
            cv2.rectangle(canvas, a, b, colour, 9, lineType=cv2.LINE_AA)
        elif not thin:
            cv2.rectangle(canvas, a, b, (0, 0, 0), 4, lineType=cv2.LINE_AA)
            cv2.rectangle(canvas, a, b, colour, 2, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(canvas, a, b, colour, 1, lineType=cv2.LINE_AA)
    parts = [canvas]
    for panel in evidence.panels:
        image = _load(blobs, panel.blob)
        if image is not None:
            side = _fit(image, min(height, 240), 240)
        else:
            side = np.full((min(height, 120), 240, 3), _BACKGROUND, dtype=np.uint8)
            for index, chunk in enumerate(_wrap(panel.note or "image missing", 34)[:5]):
                _text(side, chunk, 6, 20 + 18 * index, scale=0.4)
        parts.append(_titled(side, "returned"))
    body = _hstack(parts)
    entries: list[tuple[tuple[int, int, int], str]] = []
    seen: set[str] = set()
    for shape in evidence.shapes:
        if shape.label not in seen:
            seen.add(shape.label)
            entries.append((ROLE_COLOURS.get(shape.role, (90, 90, 90)), shape.label))
    return _vstack([_titled(body, evidence.title), _legend(entries, body.shape[1])])


def _overlay(
    scene: NDArray[np.uint8] | None,
    size: tuple[int, int],
    layers: Sequence[tuple[NDArray[np.bool_] | None, tuple[int, int, int]]],
) -> NDArray[np.uint8]:
    height, width = size
    base = scene.copy() if scene is not None else np.full((height, width, 3), _BACKGROUND, dtype=np.uint8)
    base = (base.astype(np.float32) * 0.55 + 255 * 0.45).astype(np.uint8)
    for mask, colour in layers:
        if mask is not None and mask.shape == (height, width):
            base[mask] = (0.35 * base[mask] + 0.65 * np.array(colour)).astype(np.uint8)
    return base


def _wrap(text: str, width: int) -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    if current:
        lines.append(current)
    return lines


def _masks_figure(evidence: Evidence, blobs: BlobStore) -> NDArray[np.uint8]:
    layers = evidence.masks
    assert layers is not None
    scene = _load(blobs, evidence.scene)
    size = (evidence.height, evidence.width)
    produced, read = layers.produced, layers.read
    both = produced & read if produced is not None and read is not None else None
    blue, red, purple = ROLE_COLOURS["producer"], ROLE_COLOURS["consumer"], (150, 40, 200)
    panels = [
        (layers.produced_label, _overlay(scene, size, [(produced, blue)]), layers.produced_error),
        (layers.read_label, _overlay(scene, size, [(read, red)]), layers.read_error),
        (
            "overlap",
            _overlay(
                scene,
                size,
                [
                    (produced & ~read if both is not None else produced, blue),  # type: ignore[operator]
                    (read & ~produced if both is not None else read, red),  # type: ignore[operator]
                    (both, purple),
                ],
            ),
            "",
        ),
    ]
    scale = min(_FIGURE_SCALE, _MAX_MASK_FIGURE_SIDE / max(size))
    parts = []
    for label, image, error in panels:
        fitted = _fit(image, round(size[0] * scale), round(size[1] * scale))
        for shape in evidence.shapes:
            x1, y1, x2, y2 = (round(v * scale) for v in shape.box)
            cv2.rectangle(fitted, (x1, y1), (x2 - 1, y2 - 1), ROLE_COLOURS.get(shape.role, (90, 90, 90)), 1)
        for index, chunk in enumerate(_wrap(error, 40)[:4]):
            _text(fitted, chunk, 6, 20 + 18 * index, ROLE_COLOURS["consumer"], 0.4)
        parts.append(_titled(fitted, label, wrap=max(20, fitted.shape[1] // 8)))
    body = _hstack(parts)
    entries = [
        (blue, layers.produced_label),
        (red, layers.read_label + (f" - unreadable: {layers.read_error[:60]}" if layers.read_error else "")),
        (purple, "both"),
    ]
    return _vstack([_titled(body, evidence.title), _legend(entries, body.shape[1])])


def render_figure(evidence: Evidence, blobs: BlobStore) -> bytes | None:
    """The evidence as a PNG figure (``None`` for kinds drawn as HTML, or with nothing to draw)."""
    if evidence.kind == "boxes" and evidence.shapes:
        return encode_png(_boxes_figure(evidence, blobs))
    if evidence.kind == "masks" and evidence.masks is not None:
        return encode_png(_masks_figure(evidence, blobs))
    return None


def store_figure(evidence: Evidence, blobs: BlobStore) -> bytes | None:
    """Render the figure and store it once, by content hash, in ``blobs`` (sets ``evidence.figure``).

    Returns:
        The PNG bytes, also when the blob store is read-only (then ``evidence.figure`` is the hash
        the bytes would have, and the caller keeps the bytes).
    """
    png = render_figure(evidence, blobs)
    if png is None:
        return None
    try:
        evidence.figure = blobs.put_bytes(png, ".png")
    except OSError:
        import hashlib

        evidence.figure = hashlib.sha256(png).hexdigest()
    return png


# --- HTML ----------------------------------------------------------------------------------


def legend_html(evidence: Evidence) -> str:
    """The colour key of a figure or overlay, as an HTML list."""
    esc = html.escape
    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    for shape in evidence.shapes:
        if shape.label not in seen:
            seen.add(shape.label)
            items.append((hex_colour(shape.role), shape.label))
    if evidence.masks is not None:
        items += [
            (hex_colour("producer"), evidence.masks.produced_label),
            (hex_colour("consumer"), evidence.masks.read_label),
            ("#9628c8", "both"),
        ]
    if not items:
        return ""
    return (
        '<ul class="legend">'
        + "".join(f'<li><span class="swatch" style="background:{c}"></span>{esc(label)}</li>' for c, label in items)
        + "</ul>"
    )


def svg_overlay(evidence: Evidence, href: Callable[[str], str | None], *, max_width: int = 480) -> str:
    """Box evidence drawn as SVG over the scene image (no rasterisation), with the returned images beside it."""
    esc = html.escape
    x0, y0, x1, y1 = _bounds(evidence)
    width, height = x1 - x0, y1 - y0
    scale = min(_FIGURE_SCALE, max_width / width)
    parts = [
        f'<svg class="overlay" role="img" aria-label="{esc(evidence.title)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width * scale:.0f}" height="{height * scale:.0f}" '
        f'viewBox="{x0:.1f} {y0:.1f} {width:.1f} {height:.1f}">',
        f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{width:.1f}" height="{height:.1f}" fill="#ececec"/>',
    ]
    scene = href(evidence.scene) if evidence.scene is not None else None
    if scene is not None:
        parts.append(
            f'<image href="{esc(scene)}" x="0" y="0" width="{evidence.width}" height="{evidence.height}" '
            'preserveAspectRatio="none" style="image-rendering:pixelated"/>'
        )
    else:
        parts.append('<text x="8" y="20" font-size="12">scene image missing</text>')
    parts.append(
        f'<rect x="0" y="0" width="{evidence.width}" height="{evidence.height}" fill="none" stroke="#3c3c3c" '
        f'stroke-width="{1 / scale:.2f}"/>'
    )
    for shape in sorted(evidence.shapes, key=lambda s: _ROLE_ORDER.index(s.role) if s.role in _ROLE_ORDER else 9):
        thin = shape.role == "context"
        bx1, by1, bx2, by2 = shape.box
        geometry = f'x="{bx1:.1f}" y="{by1:.1f}" width="{max(bx2 - bx1, 0):.1f}" height="{max(by2 - by1, 0):.1f}"'
        widths = [(hex_colour(shape.role), 8.0 if shape.role == "truth" else 1.0 if thin else 2.0)]
        if shape.role not in ("truth", "context"):
            widths.insert(0, ("#000000", 4.0))
        for colour, stroke in widths:
            parts.append(
                f'<rect {geometry} fill="none" stroke="{colour}" stroke-width="{stroke / scale:.2f}">'
                f"<title>{esc(shape.label)}</title></rect>"
            )
    parts.append("</svg>")
    for panel in evidence.panels:
        target = href(panel.blob) if panel.blob is not None else None
        if target is not None:
            parts.append(
                f'<figure class="panel"><img src="{esc(target)}" alt="{esc(panel.caption)}">'
                f"<figcaption>{esc(panel.caption)}</figcaption></figure>"
            )
        else:
            note = esc(panel.note or "image missing")
            parts.append(f'<figure class="panel"><figcaption>{esc(panel.caption)}: {note}</figcaption></figure>')
    return '<div class="overlay-row">' + "".join(parts) + "</div>"


def path_html(evidence: Evidence) -> str:
    """A handle's or a call's path (issued by, handle, used by) as an HTML diagram."""
    esc = html.escape
    if not evidence.hops:
        return ""
    boxes = []
    for hop in evidence.hops:
        lines = "".join(f"<li>{esc(line)}</li>" for line in hop.lines)
        boxes.append(
            f'<div class="hop" style="border-color:{hex_colour(hop.role)}">'
            f"<h4>{esc(hop.title)}</h4><ul>{lines}</ul></div>"
        )
    return '<div class="path">' + '<div class="arrow" aria-hidden="true">&#8594;</div>'.join(boxes) + "</div>"


def describe(violation_id: str) -> tuple[str, str, str]:
    """The catalog's (behaviour, severity, source) of an ID, with placeholders for an uncatalogued one."""
    entry = CATALOG.get(violation_id)
    if entry is None:
        return ("not in this install's catalog", "unknown", "unknown")
    return entry.behaviour, entry.severity.value, entry.source


def builders(records: Iterable[RunRecord]) -> dict[int, EvidenceBuilder]:
    return {record.started.run: EvidenceBuilder(record) for record in records}


def sampled_evidence(
    records: Sequence[RunRecord],
    violations: Sequence[Violation],
    *,
    per_id: int,
    seed: int,
    render: bool = True,
) -> tuple[dict[str, Sample], dict[str, list[Evidence]], dict[str, bytes]]:
    """Each ID's seeded sample and its evidence, figures rendered and stored in the runs' blob store.

    Returns:
        The samples, the evidence per ID (in sample order), and the PNG bytes of each figure by hash.
    """
    by_run = {record.started.run: record for record in records}
    outcomes: dict[tuple[int, str | None, int | None], CallOutcomeKind] = {
        (record.started.run, call.node, call.item): call.outcome for record in records for _, call in record.calls()
    }

    def answered(violation: Violation) -> bool:
        """The occurrence's call succeeded: its figure can show what came back."""
        return outcomes.get((violation.run, violation.node, violation.item)) is CallOutcomeKind.OK

    samples = sample_violations(violations, per_id, seed, prefer=answered)
    made: dict[int, EvidenceBuilder] = {}
    evidence: dict[str, list[Evidence]] = {}
    figures: dict[str, bytes] = {}
    for violation_id, sample in samples.items():
        for violation in sample.chosen:
            record = by_run.get(violation.run)
            if record is None:
                continue
            builder = made.setdefault(violation.run, EvidenceBuilder(record))
            item = builder.build(violation)
            if render and item.kind in ("boxes", "masks"):
                png = store_figure(item, record.blobs)
                if png is not None and item.figure is not None:
                    figures[item.figure] = png
            evidence.setdefault(violation_id, []).append(item)
    return samples, evidence, figures
