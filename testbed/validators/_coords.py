"""Coordinate-convention validators: undeclared box conventions, boxes off the image, mismatched edges, bad crops.

Every box is read through the truth manifest of the tool that wrote or reads
it (what it *actually* does), converted to the canonical convention and
compared with the run's ground truth.

Model-error rule (``coords.mismatch``, ``coords.crop_misses_object``): a box
is attributed to a ground-truth object only when, read in *some* of the 36
conventions, it lies inside the image (1 px tolerance) and overlaps that
object at IoU >= 0.5. A box that matches no object under any convention is a
missed or mislocated detection (model error) and is never flagged.

Every box of a run is read in all 36 conventions at once (:func:`read_boxes`:
one array of canonical boxes, one of IoUs with every object), with the same
floating-point operations as reading one box in one convention
(:func:`infer_convention`, :func:`reads_as`), so the results are identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from testbed.conventions import (
    BoxConvention,
    ImageSize,
    all_box_conventions,
    box_iou,
    to_canonical,
)
from testbed.conventions._box import canonical_columns
from testbed.events import CallEvent, CallOutcomeKind
from testbed.protocol import SemanticRole, ToolTruth, declared_box_convention, schema_at
from testbed.validators._model import RunRecord, ValidatorSpec, Violation
from testbed.validators._workflow import RunEdges, read_at
from testbed.workflow import BindingError, BoxAdapter, Edge

MATCH_IOU = 0.5
"""IoU at which a box is taken to locate a ground-truth object."""
BOUNDS_TOLERANCE_PX = 1.0
"""How far a box may stick out of the image before it is out of bounds."""
CROP_COVERAGE = 0.9
"""Fraction of the object's box a crop must contain."""

_READ_ERRORS = (ValueError, TypeError, KeyError, IndexError)

Boxes = NDArray[np.float64]


def image_size(record: RunRecord) -> ImageSize:
    """The run's scene size."""
    return record.memo("coords.image_size", lambda: ImageSize(width=record.started.width, height=record.started.height))


def gt_boxes(record: RunRecord) -> Boxes:
    """The run's canonical ground-truth boxes, ``(N, 4)`` (shared: read-only)."""

    def compute() -> Boxes:
        boxes = np.array([g.box_xyxy for g in record.started.ground_truth], dtype=np.float64).reshape(-1, 4)
        boxes.setflags(write=False)
        return boxes

    return record.memo("coords.gt_boxes", compute)


def as_boxes(value: object) -> Boxes | None:
    """A JSON value as ``(N, 4)`` floats, or ``None`` when it is not boxes."""
    try:
        boxes = np.array(value, dtype=np.float64)
    except _READ_ERRORS:
        return None
    if boxes.size == 0 or boxes.size % 4 or not np.isfinite(boxes).all():
        return None
    return boxes.reshape(-1, 4)


def returned_boxes(record: RunRecord, call: CallEvent, path: str) -> Boxes | None:
    """``as_boxes`` of what ``call`` returned at ``path``, once per run, call and path (shared: read-only).

    Raises:
        BindingError, ValueError, TypeError, KeyError, IndexError: as reading the path raises, every time.
    """
    return record.memo(
        ("coords.returned_boxes", id(call), path), lambda: as_boxes(read_at(record.internalize(call.payload), path))
    )


def inside(canonical: Boxes, size: ImageSize, tolerance: float = BOUNDS_TOLERANCE_PX) -> NDArray[np.bool_]:
    """Per box: positive area and within the image (``tolerance`` px)."""
    x1, y1, x2, y2 = canonical.T
    has_area = (x2 > x1) & (y2 > y1)
    within = (x1 >= -tolerance) & (y1 >= -tolerance) & (x2 <= size.width + tolerance) & (y2 <= size.height + tolerance)
    result: NDArray[np.bool_] = has_area & within
    return result


@dataclass(frozen=True)
class Reading:
    """The convention a box most plausibly follows, and the ground-truth object it then locates."""

    convention: BoxConvention
    gt_index: int
    iou: float


def infer_convention(box: Boxes, size: ImageSize, truth_boxes: Boxes) -> Reading | None:
    """The convention under which ``box`` (one row) lies in the image and best matches a ground-truth box.

    Returns ``None`` (model error) when no convention yields IoU >= :data:`MATCH_IOU` with any object.
    Ties keep the first convention of :func:`all_box_conventions` (canonical first).
    """
    if len(truth_boxes) == 0:
        return None
    best: Reading | None = None
    for convention in all_box_conventions():
        canonical = to_canonical(box.reshape(1, 4), convention, size)
        if not inside(canonical, size)[0]:
            continue
        ious = box_iou(canonical, truth_boxes)[0]
        index = int(np.argmax(ious))
        if float(ious[index]) >= MATCH_IOU and (best is None or float(ious[index]) > best.iou + 1e-9):
            best = Reading(convention, index, float(ious[index]))
    return best


def reads_as(box: Boxes, convention: BoxConvention, size: ImageSize, truth_boxes: Boxes, gt_index: int) -> float:
    """IoU with ground-truth object ``gt_index`` of ``box`` read in ``convention`` (0 when off the image)."""
    canonical = to_canonical(box.reshape(1, 4), convention, size)
    if not inside(canonical, size)[0]:
        return 0.0
    return float(box_iou(canonical, truth_boxes[gt_index : gt_index + 1])[0, 0])


CONVENTIONS: tuple[BoxConvention, ...] = all_box_conventions()
"""Every convention a box may be read in, canonical first (the order :func:`infer_convention` tries them)."""
_CONVENTION_AT = {(c.format, c.units, c.axis_order, c.origin): k for k, c in enumerate(CONVENTIONS)}


def convention_index(convention: BoxConvention) -> int:
    """The position of ``convention`` in :data:`CONVENTIONS`."""
    return _CONVENTION_AT[(convention.format, convention.units, convention.axis_order, convention.origin)]


@dataclass(frozen=True)
class Readings:
    """Boxes read in every convention of :data:`CONVENTIONS` at once.

    Entry ``[k, n]`` of each array is what :func:`to_canonical`, :func:`inside` and :func:`box_iou` give for box
    ``n`` read in ``CONVENTIONS[k]``, bit for bit.
    """

    canonical: Boxes
    """``(K, N, 4)`` canonical boxes."""
    inside: NDArray[np.bool_]
    """``(K, N)``: the box lies in the image."""
    ious: Boxes
    """``(K, N, M)``: IoU with each ground-truth object where the box lies in the image (``inside``), else 0."""
    best: tuple[Reading | None, ...]
    """Per box, :func:`infer_convention`'s answer."""

    def reads_as(self, index: int, convention: BoxConvention, gt_index: int) -> float:
        """:func:`reads_as` for box ``index``."""
        k = convention_index(convention)
        return float(self.ious[k, index, gt_index]) if self.inside[k, index] else 0.0

    def canonical_as(self, index: int, convention: BoxConvention) -> Boxes:
        """Box ``index`` read in ``convention``, canonical (``(4,)``)."""
        row: Boxes = self.canonical[convention_index(convention), index]
        return row


def read_boxes(boxes: Boxes, size: ImageSize, truth_boxes: Boxes) -> Readings:
    """Read ``(N, 4)`` boxes in every convention and infer each one's (:func:`infer_convention` for every row)."""
    return read_boxes_of_runs([(boxes, truth_boxes)], size)[0]


def read_boxes_of_runs(parts: Sequence[tuple[Boxes, Boxes]], size: ImageSize) -> list[Readings]:
    """:func:`read_boxes` for several ``(boxes, truth_boxes)`` pairs on images of one size, in one batch.

    Each box meets its own pair's truth boxes, padded with zero boxes to the longest: a zero box meets no box,
    so its IoU is 0 and the first highest IoU stays a real object's. Entry by entry the floating-point
    operations are those of one pair alone, so each result equals ``read_boxes`` of its pair bit for bit.
    """
    stacked = parts[0][0] if len(parts) == 1 else np.concatenate([boxes for boxes, _ in parts] or [np.zeros((0, 4))])
    x1, y1, x2, y2 = columns = canonical_columns(stacked, CONVENTIONS, size)  # each (K, N), as to_canonical_many
    canonical = np.stack(columns, axis=-1)
    counts = [canonical.shape[1]] if len(parts) == 1 else [len(boxes) for boxes, _ in parts]
    tolerance = BOUNDS_TOLERANCE_PX
    within = (x1 >= -tolerance) & (y1 >= -tolerance) & (x2 <= size.width + tolerance) & (y2 <= size.height + tolerance)
    in_image: NDArray[np.bool_] = (x2 > x1) & (y2 > y1) & within
    objects = [len(truth) for _, truth in parts]
    widest = max(objects, default=0)
    total = canonical.shape[1]
    truth_of_box = np.zeros((total, widest, 4), dtype=np.float64)
    has_truth = np.zeros(total, dtype=bool)
    start = 0
    for count, (_, truth) in zip(counts, parts, strict=True):
        truth_of_box[start : start + count, : len(truth)] = truth
        has_truth[start : start + count] = len(truth) > 0
        start += count
    # IoUs only where they are read (a box off the image reads as 0); each entry the same operations as ever
    kept = np.nonzero(in_image & has_truth)
    ious = np.zeros((*in_image.shape, widest), dtype=np.float64)
    ious[kept] = _ious_per_box([column[kept] for column in columns], truth_of_box, kept[1])
    top = ious.argmax(axis=2) if widest else np.zeros(in_image.shape, dtype=np.intp)  # (K, N): as np.argmax
    top_iou = np.take_along_axis(ious, top[..., None], axis=2)[..., 0] if widest else np.zeros(in_image.shape)
    candidates = in_image & (top_iou >= MATCH_IOU) & has_truth
    best: list[Reading | None] = [None] * total
    boxes_at, conventions_at = np.nonzero(candidates.T)  # by box, then the conventions in order
    top_ious, tops = top_iou.T[boxes_at, conventions_at].tolist(), top.T[boxes_at, conventions_at].tolist()
    for box, at, iou, index in zip(boxes_at.tolist(), conventions_at.tolist(), top_ious, tops, strict=True):
        current = best[box]
        if current is None or iou > current.iou + 1e-9:  # as infer_convention: ties keep the earlier
            best[box] = Reading(CONVENTIONS[at], index, iou)
    readings = []
    start = 0
    for count, found in zip(counts, objects, strict=True):
        end = start + count
        rows = slice(start, end)
        readings.append(Readings(canonical[:, rows], in_image[:, rows], ious[:, rows, :found], tuple(best[start:end])))
        start = end
    return readings


def _ious_per_box(first: Sequence[Boxes], truth: Boxes, owner: NDArray[np.intp]) -> Boxes:
    """``box_iou_many`` where box ``p`` (its coordinates ``first[0][p]`` .. ``first[3][p]``) meets its own boxes
    ``truth[owner[p]]`` (``(M, 4)`` each): ``(P, M)``, entry by entry the operations of ``box_iou_many``
    (``np.clip(x, 0, None)`` is ``np.maximum(x, 0)``), on one contiguous array per coordinate."""
    x1, y1, x2, y2 = first
    area_first = (np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0))[:, None]
    tx1, ty1, tx2, ty2 = (np.ascontiguousarray(truth[..., i]) for i in range(4))
    area_second = (np.maximum(tx2 - tx1, 0.0) * np.maximum(ty2 - ty1, 0.0))[owner]
    width = np.minimum(x2[:, None], tx2[owner])
    width -= np.maximum(x1[:, None], tx1[owner])
    height = np.minimum(y2[:, None], ty2[owner])
    height -= np.maximum(y1[:, None], ty1[owner])
    intersection = np.maximum(width, 0.0, out=width)
    intersection *= np.maximum(height, 0.0, out=height)
    union = area_first + area_second
    union -= intersection
    iou: Boxes = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    return iou


def tool_truth(record: RunRecord, call: CallEvent) -> ToolTruth | None:
    """The truth manifest of the tool a call used, if the testbed holds one (once per run, server and tool)."""
    known: dict[tuple[str, str], ToolTruth | None] = record.memo(_TOOL_TRUTHS, dict)
    key = (call.server, call.tool)
    try:
        return known[key]
    except KeyError:
        found = known[key] = _tool_truth(record, call)
        return found


def _tool_truth(record: RunRecord, call: CallEvent) -> ToolTruth | None:
    truth = record.truth(call.server)
    if truth is None:
        return None
    try:
        return truth.tool(call.tool)
    except KeyError:
        return None


_TOOL_TRUTHS = "coords.tool_truths"


@dataclass(frozen=True)
class BoxEdge:
    """One box value crossing one workflow edge into one call."""

    edge: Edge
    consumer_at: int
    consumer: CallEvent
    consumer_truth: ToolTruth
    producer_at: int
    producer: CallEvent
    producer_truth: ToolTruth | None
    source: Boxes
    """The value as the producer returned it (before any adapter)."""
    sent: Boxes
    """The value as sent to the consumer (after any adapter)."""


def box_edges(record: RunRecord) -> Iterator[BoxEdge]:
    """Every box-carrying edge instance of the run: consumers whose truth has a ``bounding_box`` input."""
    return iter(record.memo("coords.box_edges", lambda: tuple(_box_edges(record))))


def _box_edges(record: RunRecord) -> Iterator[BoxEdge]:
    run_edges = RunEdges(record)
    for at, call in record.calls():
        truth = tool_truth(record, call)
        if truth is None or truth.box_convention is None or SemanticRole.BOUNDING_BOX not in truth.inputs:
            continue
        argument = truth.inputs[SemanticRole.BOUNDING_BOX]
        sent = as_boxes(record.internalize(call.arguments.get(argument)))
        if sent is None:
            continue
        for feed in run_edges.feeds(call, argument):
            try:
                source = as_boxes(feed.source_value(record, call.item))
            except (BindingError, *_READ_ERRORS):
                continue
            if source is None or len(source) != len(sent):
                continue
            producer_truth = tool_truth(record, feed.producer)
            yield BoxEdge(feed.edge, at, call, truth, feed.producer_at, feed.producer, producer_truth, source, sent)


def _violation(record: RunRecord, vid: str, call: CallEvent, detail: str, *evidence: int) -> Violation:
    return Violation(
        id=vid,
        run=record.started.run,
        server=call.server,
        node=call.node,
        item=call.item,
        detail=detail,
        evidence=tuple(sorted(set(evidence))),
    )


def check_undeclared(record: RunRecord) -> Iterator[Violation]:
    """``coords.undeclared``: a box-carrying tool whose listed schema property has no ``coordinate_system``.

    Once per tool per run, at the first call of the tool (or the run's first event if it was never called).
    """
    first_call: dict[tuple[str, str], tuple[int, CallEvent | None]] = {}
    for at, call in record.calls():
        first_call.setdefault((call.server, call.tool), (at, call))
    for alias in sorted(record.servers):
        for name, missing, convention in record.per_server(
            alias,
            "coords.undeclared",
            lambda _, alias=alias: _undeclared(record, alias),  # type: ignore[misc]
        ):
            at, first = first_call.get((alias, name), (0, None))
            yield Violation(
                id="coords.undeclared",
                run=record.started.run,
                server=alias,
                node=first.node if first is not None else None,
                item=first.item if first is not None else None,
                detail=f"{alias}.{name}: box in {' and '.join(missing)} declares no coordinate_system"
                f" (actually {convention})",
                evidence=(at,),
            )


def _undeclared(record: RunRecord, alias: str) -> tuple[tuple[str, list[str], BoxConvention], ...]:
    """Per box-carrying tool of ``alias`` whose listed schema leaves a box undeclared: its name, where, and its
    true convention (from the server's truth and listing alone, so once per server record)."""
    truth = record.truth(alias)
    if truth is None:
        return ()
    found = []
    listed = {tool.get("name"): tool for tool in record.tools(alias)}
    for tool in truth.tools:
        if tool.box_convention is None or tool.name not in listed:
            continue
        places = []
        if SemanticRole.BOUNDING_BOX in tool.inputs:
            places.append(("inputSchema", _input_property(listed[tool.name], tool.inputs[SemanticRole.BOUNDING_BOX])))
        if SemanticRole.BOUNDING_BOX in tool.paths:
            places.append(
                ("outputSchema", listed_output_property(listed[tool.name], tool.paths[SemanticRole.BOUNDING_BOX]))
            )
        missing = [where for where, prop in places if prop is None or declared_box_convention(prop) is None]
        if missing:
            found.append((tool.name, missing, tool.box_convention))
    return tuple(found)


def _input_property(tool: dict[str, Any], argument: str) -> dict[str, Any] | None:
    schema = tool.get("inputSchema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    prop = props.get(argument) if isinstance(props, dict) else None
    return prop if isinstance(prop, dict) else None


def listed_output_property(tool: dict[str, Any], path: str) -> dict[str, Any] | None:
    """Walk ``outputSchema`` along a truth path such as ``detections[*].bbox`` (``$ref`` and ``anyOf``
    followed, as pydantic-built servers publish them)."""
    schema = tool.get("outputSchema")
    return schema_at(schema, path) if isinstance(schema, dict) else None


@dataclass(frozen=True)
class BoxValue:
    """Boxes one call was sent or returned, and which of them lie off the image read in its tool's true convention."""

    at: int
    call: CallEvent
    convention: BoxConvention
    where: str
    """``argument`` or ``result``."""
    boxes: Boxes
    off_image: NDArray[np.bool_]


def check_out_of_bounds(record: RunRecord) -> Iterator[Violation]:
    """``coords.out_of_bounds``: a box a tool returned or was sent, read in that tool's true convention, off the image.

    Off the image means more than 1 px outside it, or no positive area.
    """
    size = image_size(record)
    try:
        values: Iterable[BoxValue] = box_values(record)
    except Exception:  # raise where reading one value at a time raises, after what comes before it
        values = _each_value(record)
    for value in values:
        bad = value.off_image
        if bad.any():
            first = int(np.argmax(bad))
            yield _violation(
                record,
                "coords.out_of_bounds",
                value.call,
                f"{value.call.tool} {value.where}: {int(bad.sum())} box(es) off the {size.width}x{size.height} image"
                f" read as {value.convention}, e.g. {value.boxes[first].round(2).tolist()}",
                value.at,
            )


def box_values(record: RunRecord) -> tuple[BoxValue, ...]:
    """Every box value of the run's calls whose tool has a box convention, in call order (argument, then result).

    Shared: read-only. :func:`read_values_of_runs` computes many runs' in one batch.
    """
    return record.memo(_BOX_VALUES, lambda: _box_values(record))


def read_values_of_runs(records: Sequence[RunRecord]) -> None:
    """Compute :func:`box_values` of many runs with one conversion per image size and convention (row by row
    the same floating-point operations as each value alone)."""
    found: list[tuple[RunRecord, list[tuple[int, CallEvent, BoxConvention, str, Boxes]]]] = []
    groups: dict[tuple[int, int, int], tuple[ImageSize, BoxConvention, list[Boxes]]] = {}
    for record in records:
        try:
            read = list(_read_values(record))
        except Exception:  # the validator reports it on its own run
            continue
        found.append((record, read))
        size = image_size(record)
        for _, _, convention, _, boxes in read:
            groups.setdefault(_group(size, convention), (size, convention, []))[2].append(boxes)
    off: dict[tuple[int, int, int], Iterator[NDArray[np.bool_]]] = {}
    try:
        for key, (size, convention, parts) in groups.items():
            bad = ~inside(to_canonical(np.concatenate(parts), convention, size), size)
            off[key] = iter(np.split(bad, np.cumsum([len(part) for part in parts])[:-1]))
    except Exception:  # each run then reads (and raises) on its own
        return
    for record, read in found:
        size = image_size(record)
        values = tuple(
            BoxValue(at, call, convention, where, boxes, next(off[_group(size, convention)]))
            for at, call, convention, where, boxes in read
        )
        record.remember(_BOX_VALUES, values)


def _group(size: ImageSize, convention: BoxConvention) -> tuple[int, int, int]:
    """Equal for equal sizes and conventions (hashing the models themselves is slower)."""
    return size.width, size.height, convention_index(convention)


_BOX_VALUES = "coords.box_values"


def _box_values(record: RunRecord) -> tuple[BoxValue, ...]:
    return tuple(_each_value(record))


def _each_value(record: RunRecord) -> Iterator[BoxValue]:
    size = image_size(record)
    for at, call, convention, where, boxes in _read_values(record):
        yield BoxValue(at, call, convention, where, boxes, ~inside(to_canonical(boxes, convention, size), size))


def _read_values(record: RunRecord) -> Iterator[tuple[int, CallEvent, BoxConvention, str, Boxes]]:
    for at, call in record.calls():
        truth = tool_truth(record, call)
        if truth is None or truth.box_convention is None:
            continue
        if SemanticRole.BOUNDING_BOX in truth.inputs:
            sent = as_boxes(record.internalize(call.arguments.get(truth.inputs[SemanticRole.BOUNDING_BOX])))
            if sent is not None:
                yield at, call, truth.box_convention, "argument", sent
        if SemanticRole.BOUNDING_BOX in truth.paths and call.outcome is CallOutcomeKind.OK:
            try:
                returned = returned_boxes(record, call, truth.paths[SemanticRole.BOUNDING_BOX])
            except (BindingError, *_READ_ERRORS):
                returned = None
            if returned is not None:
                yield at, call, truth.box_convention, "result", returned


def edge_readings(record: RunRecord) -> tuple[tuple[Readings, Readings], ...]:
    """Per box edge of :func:`box_edges` (in order): its source boxes and its sent boxes read in every convention.

    All boxes of the run are read in one batch, once per run (:func:`read_edges_of_runs` reads several runs').
    """
    return record.memo(_EDGE_READINGS, lambda: _edge_readings(record, None))


def read_edges_of_runs(records: Sequence[RunRecord]) -> None:
    """Compute :func:`edge_readings` of many runs in one batch per image size (each as it alone would be).

    A run whose box edges cannot be read is left to compute (and raise) on its own when a validator asks.
    """
    by_size: dict[ImageSize, list[tuple[RunRecord, Boxes]]] = {}
    for record in records:
        try:
            edges = tuple(box_edges(record))
        except Exception:  # the validators that read the edges report it, each on its own
            continue
        if edges:
            stacked = np.concatenate([part for found in edges for part in (found.source, found.sent)])
            by_size.setdefault(image_size(record), []).append((record, stacked))
    for size, group in by_size.items():
        for start in range(0, len(group), _RUNS_PER_BATCH):
            chunk = group[start : start + _RUNS_PER_BATCH]
            try:
                read = read_boxes_of_runs([(stacked, gt_boxes(record)) for record, stacked in chunk], size)
            except Exception:  # each run then reads (and raises) on its own
                continue
            for (record, _), everything in zip(chunk, read, strict=True):
                record.remember(_EDGE_READINGS, _edge_readings(record, everything))


_EDGE_READINGS = "coords.edge_readings"
_RUNS_PER_BATCH = 256
"""Runs read in one batch: enough to amortise numpy's per-call cost, few enough to bound the batch's arrays."""


def _edge_readings(record: RunRecord, everything: Readings | None) -> tuple[tuple[Readings, Readings], ...]:
    edges = tuple(box_edges(record))
    if not edges:
        return ()
    if everything is None:
        stacked = np.concatenate([part for found in edges for part in (found.source, found.sent)])
        everything = read_boxes(stacked, image_size(record), gt_boxes(record))
    result = []
    start = 0
    for found in edges:
        middle = start + len(found.source)
        end = middle + len(found.sent)
        result.append((_rows(everything, start, middle), _rows(everything, middle, end)))
        start = end
    return tuple(result)


def _rows(readings: Readings, start: int, end: int) -> Readings:
    return Readings(
        readings.canonical[:, start:end],
        readings.inside[:, start:end],
        readings.ious[:, start:end],
        readings.best[start:end],
    )


def check_mismatch(record: RunRecord) -> Iterator[Violation]:
    """``coords.mismatch``: a box crossing an edge in a convention other than the one read on the other side.

    Two reading points per edge instance: an adapter reads the producer's value in its ``from`` convention,
    and the consumer reads the value sent (after any adapter) in its true convention. At each, the value's
    actual convention is inferred (:func:`infer_convention`); a box locating no object under any convention
    is model error and skipped. It is a mismatch when the reader's convention locates the inferred object at
    IoU < 0.5 (or off the image). One violation per consumer call.
    """
    for found, (source, sent) in zip(box_edges(record), edge_readings(record), strict=True):
        readers: list[tuple[str, Readings, BoxConvention]] = []
        if isinstance(found.edge.adapter, BoxAdapter):
            readers.append((f"adapter ({found.edge.adapter})", source, found.edge.adapter.from_))
        assert found.consumer_truth.box_convention is not None
        readers.append((f"{found.consumer.tool}", sent, found.consumer_truth.box_convention))
        detail = _first_mismatch(readers)
        if detail is not None:
            yield _violation(
                record,
                "coords.mismatch",
                found.consumer,
                f"edge {found.edge.source_node}.{found.edge.source_path} -> {found.edge.target_node}."
                f"{found.edge.target_arg}: {detail}",
                found.producer_at,
                found.consumer_at,
            )


def _first_mismatch(readers: Sequence[tuple[str, Readings, BoxConvention]]) -> str | None:
    for reader, readings, expected in readers:
        for index, reading in enumerate(readings.best):
            if reading is None:
                continue  # model error: the box locates no object under any convention
            if readings.reads_as(index, expected, reading.gt_index) < MATCH_IOU:
                return f"value is {reading.convention} but {reader} reads {expected}"
    return None


def check_crop_misses_object(record: RunRecord) -> Iterator[Violation]:
    """``coords.crop_misses_object``: a crop box holding < 90% of what its producing box held of its object.

    The object is the one the producer's value locates under its inferred convention (model error skipped);
    the crop box is read in the crop tool's true convention. The bar is 90% of the producing box's own
    coverage of the object, so a slightly tight detection (model imprecision) cropped faithfully is not flagged.
    """
    truth_boxes = gt_boxes(record)
    for found, (source, sent) in zip(box_edges(record), edge_readings(record), strict=True):
        server = record.truth(found.consumer.server)
        if server is None or server.kind != "cropping" or found.consumer_truth.box_convention is None:
            continue
        crops = sent.canonical[convention_index(found.consumer_truth.box_convention)]  # as to_canonical reads them
        for index, (reading, crop) in enumerate(zip(source.best, crops, strict=True)):
            if reading is None:
                continue
            target = truth_boxes[reading.gt_index]
            coverage = _coverage(crop, target)
            located = _coverage(source.canonical_as(index, reading.convention), target)
            if coverage < CROP_COVERAGE * located:
                yield _violation(
                    record,
                    "coords.crop_misses_object",
                    found.consumer,
                    f"crop {crop.round(1).tolist()} holds {coverage:.0%} of "
                    f"{record.started.ground_truth[reading.gt_index].class_name} {target.tolist()}",
                    found.producer_at,
                    found.consumer_at,
                )
                break


def _coverage(crop: Boxes, target: Boxes) -> float:
    width = max(0.0, min(crop[2], target[2]) - max(crop[0], target[0]))
    height = max(0.0, min(crop[3], target[3]) - max(crop[1], target[1]))
    area = (target[2] - target[0]) * (target[3] - target[1])
    return float(width * height / area) if area > 0 else 1.0


VALIDATORS = (
    ValidatorSpec("coords.undeclared", ("coords.undeclared",), check_undeclared),
    ValidatorSpec("coords.out_of_bounds", ("coords.out_of_bounds",), check_out_of_bounds),
    ValidatorSpec("coords.mismatch", ("coords.mismatch",), check_mismatch),
    ValidatorSpec("coords.crop_misses_object", ("coords.crop_misses_object",), check_crop_misses_object),
)
