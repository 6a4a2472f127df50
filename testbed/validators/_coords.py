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
The box edges of many runs are read in one batch (:func:`read_edges_of_runs`),
each distinct box of a run once (a detection crosses several edges), and an
IoU only where the box could locate an object: the two edge checks compare an
IoU with 0.5 and nothing else, and any IoU that reaches it is computed as ever.
"""

from __future__ import annotations

import math
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
from testbed.validators._workflow import Feed, payload_value, run_edges
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
    size: ImageSize | None = record._memo.get("coords.image_size")
    if size is None:
        size = record.memo(
            "coords.image_size", lambda: ImageSize(width=record.started.width, height=record.started.height)
        )
    return size


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
    if boxes.size == 0 or boxes.size % 4:
        return None
    if type(value) is list and _PLAIN_NUMBERS.issuperset(map(type, value)):  # one box, or a flat list
        if not all(map(math.isfinite, value)):  # its numbers as converted: no array of flags to make
            return None
    elif not np.isfinite(boxes).all():
        return None
    return boxes.reshape(-1, 4)


_PLAIN_NUMBERS = frozenset({int, float})


def returned_boxes(record: RunRecord, call: CallEvent, path: str) -> Boxes | None:
    """``as_boxes`` of what ``call`` returned at ``path``, once per run, call and path (shared: read-only).

    Raises:
        BindingError, ValueError, TypeError, KeyError, IndexError: as reading the path raises, every time.
    """
    key = ("coords.returned_boxes", id(call), path)
    found = record._memo.get(key, _NOT_LOOKED_UP)
    if found is _NOT_LOOKED_UP:
        found = record.memo(key, lambda: _boxes_at(record, call, path))
    return found  # type: ignore[no-any-return]


def _boxes_at(record: RunRecord, call: CallEvent, path: str) -> Boxes | None:
    """``as_boxes(payload_value(record, call, path))``, converted once with :func:`_source_boxes`'s rows."""
    value = payload_value(record, call, path)
    rows = box_rows(record, call, path)
    return rows if rows is not None else as_boxes(value)


def box_rows(record: RunRecord, call: CallEvent, path: str) -> Boxes | None:
    """``as_boxes`` of what ``call`` returned at ``path`` where that is a list of rows of 4 finite numbers (its
    row ``i`` is then ``as_boxes`` of item ``i``), else ``None``; once per run, call and path (read-only).

    Raises:
        BindingError, ValueError, TypeError, KeyError, IndexError: as reading the path raises, every time.
    """
    return record.memo(("coords.source_rows", id(call), path), lambda: _box_rows(payload_value(record, call, path)))


def sent_boxes(record: RunRecord, call: CallEvent, argument: str) -> Boxes | None:
    """``as_boxes`` of what ``call`` was sent as ``argument``, once per run, call and argument (shared: read-only)."""
    known: dict[tuple[int, str], tuple[CallEvent, Boxes | None]] | None = record._memo.get(_SENT)
    if known is None:
        known = record.memo(_SENT, dict)
    found = known.get((id(call), argument))
    if found is not None and found[0] is call:
        return found[1]
    boxes = as_boxes(record.internalize(call.arguments.get(argument)))
    known[(id(call), argument)] = (call, boxes)
    return boxes


_SENT = "coords.sent_boxes"


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
    """The position of ``convention`` in :data:`CONVENTIONS` (looked up once per convention object: they are
    frozen, and the few a recording holds are read again and again)."""
    found = _INDEX_OF.get(id(convention))
    if found is not None and found[0] is convention:
        return found[1]
    index = _CONVENTION_AT[(convention.format, convention.units, convention.axis_order, convention.origin)]
    if len(_INDEX_OF) >= 1024:
        _INDEX_OF.clear()
    _INDEX_OF[id(convention)] = (convention, index)
    return index


_INDEX_OF: dict[int, tuple[BoxConvention, int]] = {}


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

    def canonical_in(self, at: int) -> Boxes:
        """Every box read in ``CONVENTIONS[at]``, canonical (``(N, 4)``)."""
        rows: Boxes = self.canonical[at]
        return rows


class _Picked:
    """:class:`Readings` of some boxes of a batch (by their positions in it), read from the batch when asked."""

    __slots__ = ("_batch", "_positions", "best")

    def __init__(self, batch: _Batch, positions: list[int]) -> None:
        self._batch = batch
        self._positions = positions
        everything = batch.best
        self.best: tuple[Reading | None, ...] = tuple([everything[at] for at in positions])

    def reads_as(self, index: int, convention: BoxConvention, gt_index: int) -> float:
        """:meth:`Readings.reads_as` where the batch holds that IoU: always at or above :data:`MATCH_IOU`, and a
        value below it wherever the IoU is below it (a batch read ``located_only`` holds 0 there)."""
        k, at = convention_index(convention), self._positions[index]
        return float(self._batch.ious[k, at, gt_index]) if self._batch.inside[k, at] else 0.0

    def canonical_as(self, index: int, convention: BoxConvention) -> Boxes:
        """:meth:`Readings.canonical_as`."""
        row: Boxes = self._batch.canonical[convention_index(convention), self._positions[index]]
        return row

    def canonical_in(self, at: int) -> Boxes:
        """:meth:`Readings.canonical_in`."""
        rows: Boxes = self._batch.canonical[at, self._positions]
        return rows


BoxReadings = Readings | _Picked
"""Readings of some boxes: their own arrays, or their rows of a batch's."""


def read_boxes(boxes: Boxes, size: ImageSize, truth_boxes: Boxes) -> Readings:
    """Read ``(N, 4)`` boxes in every convention and infer each one's (:func:`infer_convention` for every row)."""
    return read_boxes_of_runs([(boxes, truth_boxes)], size)[0]


def read_boxes_of_runs(parts: Sequence[tuple[Boxes, Boxes]], size: ImageSize) -> list[Readings]:
    """:func:`read_boxes` for several ``(boxes, truth_boxes)`` pairs on images of one size, in one batch.

    Each box meets its own pair's truth boxes, padded with zero boxes to the longest: a zero box meets no box,
    so its IoU is 0 and the first highest IoU stays a real object's. Entry by entry the floating-point
    operations are those of one pair alone, so each result equals ``read_boxes`` of its pair bit for bit.
    """
    batch = _read_batch(parts, size)
    counts = [batch.canonical.shape[1]] if len(parts) == 1 else [len(boxes) for boxes, _ in parts]
    readings = []
    start = 0
    for count, (_, truth) in zip(counts, parts, strict=True):
        readings.append(batch.rows(start, start + count, len(truth)))
        start += count
    return readings


@dataclass(frozen=True)
class _Batch:
    """:class:`Readings` of every box of a batch, the ``ious`` padded to the batch's most objects."""

    canonical: Boxes
    inside: NDArray[np.bool_]
    ious: Boxes
    best: list[Reading | None]

    def rows(self, start: int, end: int, objects: int) -> Readings:
        """The readings of boxes ``start`` to ``end`` (meeting ``objects`` truth boxes)."""
        rows = slice(start, end)
        return Readings(
            self.canonical[:, rows], self.inside[:, rows], self.ious[:, rows, :objects], tuple(self.best[rows])
        )


def _read_batch(parts: Sequence[tuple[Boxes, Boxes]], size: ImageSize, *, located_only: bool = False) -> _Batch:
    """:class:`Readings` of every box of ``parts`` (each meeting its own part's truth boxes) as one batch.

    With ``located_only``, an IoU is computed only where the box, so read, could locate an object (IoU >= 0.5
    with one): elsewhere ``ious`` holds 0, where the IoU is below :data:`MATCH_IOU` all the same (see
    :func:`_could_locate`); every entry at or above it, and ``best``, are as without.
    """
    stacked = parts[0][0] if len(parts) == 1 else np.concatenate([boxes for boxes, _ in parts] or [np.zeros((0, 4))])
    x1, y1, x2, y2 = columns = canonical_columns(stacked, CONVENTIONS, size)  # each (K, N), as to_canonical_many
    canonical = np.stack(columns, axis=-1)
    tolerance = BOUNDS_TOLERANCE_PX
    within = (x1 >= -tolerance) & (y1 >= -tolerance) & (x2 <= size.width + tolerance) & (y2 <= size.height + tolerance)
    in_image: NDArray[np.bool_] = (x2 > x1) & (y2 > y1) & within
    widest = max((len(truth) for _, truth in parts), default=0)
    total = canonical.shape[1]
    truth_of_box = np.zeros((total, widest, 4), dtype=np.float64)
    has_truth = np.zeros(total, dtype=bool)
    counts = [total] if len(parts) == 1 else [len(boxes) for boxes, _ in parts]
    start = 0
    for count, (_, truth) in zip(counts, parts, strict=True):
        truth_of_box[start : start + count, : len(truth)] = truth
        has_truth[start : start + count] = len(truth) > 0
        start += count
    # IoUs only where they are read (a box off the image reads as 0); each entry the same operations as ever
    kept = np.nonzero(in_image & has_truth)
    first = [column[kept] for column in columns]
    if located_only and len(kept[0]):
        objects = np.repeat(np.array([len(truth) for _, truth in parts], dtype=np.intp), counts)
        could = _could_locate(first, truth_of_box, objects, kept[1])
        kept = (kept[0][could], kept[1][could])
        first = [column[could] for column in first]
    ious = np.zeros((*in_image.shape, widest), dtype=np.float64)
    top = np.zeros(in_image.shape, dtype=np.intp)  # (K, N): np.argmax of each row of ious (0 for a row of zeros)
    top_iou = np.zeros(in_image.shape, dtype=np.float64)
    kept_ious = _ious_per_box(first, truth_of_box, kept[1])
    ious[kept] = kept_ious
    if widest and len(kept_ious):
        kept_top = kept_ious.argmax(axis=1)  # each row as ious[k, n] holds it: the first highest
        top[kept] = kept_top
        top_iou[kept] = kept_ious[np.arange(len(kept_top)), kept_top]
    candidates = in_image & (top_iou >= MATCH_IOU) & has_truth
    return _Batch(canonical, in_image, ious, _best_readings(candidates, top, top_iou))


def _best_readings(candidates: NDArray[np.bool_], top: NDArray[np.intp], top_iou: Boxes) -> list[Reading | None]:
    """Per box, :func:`infer_convention`'s reading: of the conventions reading it as a located object
    (``candidates``, ``(K, N)``), in order, the first whose IoU no later one exceeds by more than 1e-9 (a later
    one that does takes its place, and so on)."""
    best: list[Reading | None] = [None] * candidates.shape[1]
    boxes_at, conventions_at = np.nonzero(candidates.T)  # by box, then the conventions in order
    if not len(boxes_at):
        return best
    ious, tops = top_iou.T[boxes_at, conventions_at], top.T[boxes_at, conventions_at]
    opens = np.flatnonzero(np.concatenate(([True], boxes_at[1:] != boxes_at[:-1])))  # each box's first
    group = np.repeat(np.arange(len(opens)), np.diff(np.append(opens, len(boxes_at))))
    exceeds = ious > (ious[opens] + 1e-9)[group]  # as infer_convention compares each with the one it holds
    scanned = np.zeros(len(opens), dtype=bool)
    scanned[group[exceeds]] = True
    for box, at, iou, index in zip(
        boxes_at[opens[~scanned]].tolist(),
        conventions_at[opens[~scanned]].tolist(),
        ious[opens[~scanned]].tolist(),
        tops[opens[~scanned]].tolist(),
        strict=True,
    ):
        best[box] = Reading(CONVENTIONS[at], index, iou)  # no later convention reads it better: the first stays
    chosen: dict[int, tuple[float, int, int]] = {}
    rows = np.flatnonzero(scanned[group])
    for box, at, iou, index in zip(
        boxes_at[rows].tolist(), conventions_at[rows].tolist(), ious[rows].tolist(), tops[rows].tolist(), strict=True
    ):
        current = chosen.get(box)
        if current is None or iou > current[0] + 1e-9:  # as infer_convention: ties keep the earlier
            chosen[box] = (iou, at, index)
    for box, (iou, at, index) in chosen.items():
        best[box] = Reading(CONVENTIONS[at], index, iou)
    return best


_LOCATE_AREAS = 2.5
"""A box whose area differs from every object's by more than this factor (either way) locates none of them: its
IoU with each is at most the ratio of the smaller area to the larger, 0.4 (rounding adds a few ulps), below 0.5."""


def _could_locate(
    first: Sequence[Boxes], truth: Boxes, objects: NDArray[np.intp], owner: NDArray[np.intp]
) -> NDArray[np.bool_]:
    """Per canonical box ``p`` (``first[0][p] .. first[3][p]``) meeting box ``owner[p]``'s truth boxes (the first
    ``objects[owner[p]]`` of ``truth[owner[p]]``, ``(N, M, 4)``): ``False`` where its IoU with every one of them
    is surely below :data:`MATCH_IOU`, being outside the rectangle that holds them all (no overlap: IoU 0) or of
    an area too unlike theirs (:data:`_LOCATE_AREAS`). Truth boxes that are not all finite rule nothing out."""
    real = np.arange(truth.shape[1]) < objects[:, None]  # (N, M): not padding
    tx1, ty1, tx2, ty2 = (truth[..., i] for i in range(4))
    area = np.maximum(tx2 - tx1, 0.0) * np.maximum(ty2 - ty1, 0.0)  # as _ious_per_box computes each object's
    finite = np.logical_and.reduce(np.isfinite(truth).reshape(len(truth), -1), axis=1)  # per box: its objects'
    plain = finite[:, None] & real
    rules = plain.any(axis=1) & (plain.sum(axis=1) == objects)  # every object finite, and some object
    hx1 = np.where(plain, tx1, np.inf).min(axis=1)
    hy1 = np.where(plain, ty1, np.inf).min(axis=1)
    hx2 = np.where(plain, tx2, -np.inf).max(axis=1)
    hy2 = np.where(plain, ty2, -np.inf).max(axis=1)
    smallest = np.where(plain, area, np.inf).min(axis=1)
    largest = np.where(plain, area, -np.inf).max(axis=1)
    x1, y1, x2, y2 = first
    box_area = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    at = owner
    overlaps = (x2 > hx1[at]) & (x1 < hx2[at]) & (y2 > hy1[at]) & (y1 < hy2[at])
    alike = (box_area * _LOCATE_AREAS >= smallest[at]) & (box_area <= largest[at] * _LOCATE_AREAS)
    could: NDArray[np.bool_] = ~rules[at] | (overlaps & alike)
    return could


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
    known: dict[tuple[str, str], ToolTruth | None] | None = record._memo.get(_TOOL_TRUTHS)
    if known is None:
        known = record.memo(_TOOL_TRUTHS, dict)
    key = (call.server, call.tool)
    found = known.get(key, _NOT_LOOKED_UP)
    if found is _NOT_LOOKED_UP:
        found = known[key] = _tool_truth(record, call)
    return found  # type: ignore[no-any-return]


def _tool_truth(record: RunRecord, call: CallEvent) -> ToolTruth | None:
    truth = record.truth(call.server)
    if truth is None:
        return None
    try:
        return truth.tool(call.tool)
    except KeyError:
        return None


_TOOL_TRUTHS = "coords.tool_truths"
_NOT_LOOKED_UP: Any = object()


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
    edges = run_edges(record)
    for at, call in record.call_events():
        truth = tool_truth(record, call)
        if truth is None:
            continue
        argument = _box_input(truth)
        if argument is None:
            continue
        sent = sent_boxes(record, call, argument)
        if sent is None:
            continue
        for feed in edges.feeds_into(call.node, argument):
            try:
                source = _source_boxes(record, feed, call.item)
            except (BindingError, *_READ_ERRORS):
                continue
            if source is None or len(source) != len(sent):
                continue
            producer_truth = tool_truth(record, feed.producer)
            yield BoxEdge(feed.edge, at, call, truth, feed.producer_at, feed.producer, producer_truth, source, sent)


def _box_input(truth: ToolTruth) -> str | None:
    """The argument a tool truly reads boxes from, where it has a box convention (``None``: it has none, or
    reads no boxes); once per truth object (frozen, shared by the runs of an experiment)."""
    found = _BOX_INPUTS.get(id(truth))
    if found is not None and found[0] is truth:
        return found[1]
    argument = None
    if truth.box_convention is not None and SemanticRole.BOUNDING_BOX in truth.inputs:
        argument = truth.inputs[SemanticRole.BOUNDING_BOX]
    if len(_BOX_INPUTS) >= 1024:
        _BOX_INPUTS.clear()
    _BOX_INPUTS[id(truth)] = (truth, argument)
    return argument


_BOX_INPUTS: dict[int, tuple[ToolTruth, str | None]] = {}


def _source_boxes(record: RunRecord, feed: Feed, item: int | None) -> Boxes | None:
    """``as_boxes(feed.source_value(record, item))``, raising as it raises; a value of boxes (``(N, 4)`` numbers)
    is converted once for every item it feeds (row ``item`` of it, the same numbers as the item alone)."""
    read: dict[int, tuple[Feed, Any, Boxes | None, bool]] | None = record._memo.get(_FEEDS_READ)
    if read is None:
        read = record.memo(_FEEDS_READ, dict)
    found = read.get(id(feed))
    if found is None or found[0] is not feed:  # the value and its rows read once per run and feed (raising as
        value = feed.whole_value(record)  # reading raises, every time)
        rows = box_rows(record, feed.producer, feed.edge.source_path)
        found = read[id(feed)] = (feed, value, rows, feed.picks_item)  # holding the feed keeps its id its own
    _, value, rows, picks_item = found
    if not picks_item:
        return rows if rows is not None else as_boxes(value)
    if rows is not None and type(item) is int and 0 <= item < len(rows):
        return rows[item : item + 1]
    return as_boxes(value[item])


_FEEDS_READ = "coords.feeds_read"


def _box_rows(value: object) -> Boxes | None:
    """``as_boxes(value)`` where ``value`` is a list of rows of 4 finite numbers (its row ``i`` is then
    ``as_boxes(value[i])``), else ``None``."""
    if type(value) is not list or not value:
        return None
    try:
        boxes = np.array(value, dtype=np.float64)
    except Exception:  # an item that is no box is converted (and fails) on its own
        return None
    if boxes.shape != (len(value), 4) or not np.isfinite(boxes).all():
        return None
    return boxes


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
    for at, call in record.call_events():
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
        values: Iterable[BoxValue] = off_image_values(record)
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


def off_image_values(record: RunRecord) -> tuple[BoxValue, ...]:
    """Every box value of the run's calls whose tool has a box convention, in call order (argument, then result),
    that has a box off the image (the others are no violation).

    Shared: read-only. :func:`read_values_of_runs` computes many runs' in one batch.
    """
    return record.memo(_OFF_IMAGE_VALUES, lambda: _off_image_values(record))


def read_values_of_runs(records: Sequence[RunRecord]) -> None:
    """Compute :func:`off_image_values` of many runs with one conversion per image size and convention (row by
    row the same floating-point operations as each value alone)."""
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
    off: dict[tuple[int, int, int], Iterator[tuple[NDArray[np.bool_], Boxes, bool]]] = {}
    try:
        for key, (size, convention, parts) in groups.items():
            canonical = to_canonical(np.concatenate(parts), convention, size)
            bad = ~inside(canonical, size)
            lengths = [len(part) for part in parts]  # none empty: as_boxes reads no empty value
            starts = np.cumsum([0, *lengths[:-1]])
            flagged = np.logical_or.reduceat(bad, starts).tolist()  # per value: any box off the image
            off[key] = zip(_pieces(bad, lengths), _pieces(canonical, lengths), flagged, strict=True)
    except Exception:  # each run then reads (and raises) on its own
        return
    for record, read in found:
        size = image_size(record)
        values = []
        for at, call, convention, where, boxes in read:
            bad, canonical, any_off = next(off[_group(size, convention)])
            if any_off:
                values.append(BoxValue(at, call, convention, where, boxes, bad))
            if where == "result":
                record.remember((_CANONICAL_RESULT, id(call)), canonical)
        record.remember(_OFF_IMAGE_VALUES, tuple(values))


def canonical_result(record: RunRecord, call: CallEvent, truth: ToolTruth, boxes: Boxes) -> Boxes:
    """``to_canonical(boxes, truth.box_convention, image_size(record))`` of the boxes ``call`` returned
    (:func:`returned_boxes` at ``truth``'s box path, ``truth`` the call's :func:`tool_truth`), once per run and call
    (:func:`read_values_of_runs` converts many runs' at once). Shared: read-only.

    Raises:
        ValueError: as ``to_canonical`` raises, every time.
    """
    assert truth.box_convention is not None
    convention = truth.box_convention
    return record.memo((_CANONICAL_RESULT, id(call)), lambda: to_canonical(boxes, convention, image_size(record)))


_CANONICAL_RESULT = "coords.canonical_result"


def _pieces(array: NDArray[Any], lengths: list[int]) -> Iterator[NDArray[Any]]:
    """``array`` cut into consecutive pieces of ``lengths`` (as ``np.split`` at their running sums)."""
    start = 0
    for length in lengths:
        yield array[start : start + length]
        start += length


def _group(size: ImageSize, convention: BoxConvention) -> tuple[int, int, int]:
    """Equal for equal sizes and conventions (hashing the models themselves is slower)."""
    return size.width, size.height, convention_index(convention)


_OFF_IMAGE_VALUES = "coords.off_image_values"


def _off_image_values(record: RunRecord) -> tuple[BoxValue, ...]:
    return tuple(value for value in _each_value(record) if value.off_image.any())


def _each_value(record: RunRecord) -> Iterator[BoxValue]:
    size = image_size(record)
    for at, call, convention, where, boxes in _read_values(record):
        yield BoxValue(at, call, convention, where, boxes, ~inside(to_canonical(boxes, convention, size), size))


def _read_values(record: RunRecord) -> Iterator[tuple[int, CallEvent, BoxConvention, str, Boxes]]:
    for at, call in record.call_events():
        truth = tool_truth(record, call)
        if truth is None or truth.box_convention is None:
            continue
        if SemanticRole.BOUNDING_BOX in truth.inputs:
            sent = sent_boxes(record, call, truth.inputs[SemanticRole.BOUNDING_BOX])
            if sent is not None:
                yield at, call, truth.box_convention, "argument", sent
        if SemanticRole.BOUNDING_BOX in truth.paths and call.outcome is CallOutcomeKind.OK:
            try:
                returned = returned_boxes(record, call, truth.paths[SemanticRole.BOUNDING_BOX])
            except (BindingError, *_READ_ERRORS):
                returned = None
            if returned is not None:
                yield at, call, truth.box_convention, "result", returned


def edge_readings(record: RunRecord) -> tuple[tuple[BoxReadings, BoxReadings], ...]:
    """Per box edge of :func:`box_edges` (in order): its source boxes and its sent boxes read in every convention.

    All boxes of the run are read in one batch, once per run (:func:`read_edges_of_runs` reads several runs').
    """
    return record.memo(_EDGE_READINGS, lambda: _edge_readings(record, None))


def read_edges_of_runs(records: Sequence[RunRecord]) -> None:
    """Compute :func:`edge_readings` of many runs in one batch per image size (each as it alone would be).

    Each run's boxes are read once per distinct value (bit for bit: a box read once reads as each of its
    copies would, the same operations on the same numbers), most boxes crossing several edges (a detection
    sent on to a segmenter and to each crop). A run whose box edges cannot be read is left to compute (and
    raise) on its own when a validator asks.
    """
    by_size: dict[ImageSize, list[tuple[RunRecord, tuple[BoxEdge, ...], Boxes, list[int]]]] = {}
    for record in records:
        try:
            edges = tuple(box_edges(record))
        except Exception:  # the validators that read the edges report it, each on its own
            continue
        if edges:
            stacked = np.concatenate([part for found in edges for part in (found.source, found.sent)])
            distinct, where = _distinct_rows(stacked)
            by_size.setdefault(image_size(record), []).append((record, edges, distinct, where))
    for size, group in by_size.items():
        for start in range(0, len(group), _RUNS_PER_BATCH):
            chunk = group[start : start + _RUNS_PER_BATCH]
            try:
                parts = [(distinct, gt_boxes(record)) for record, _, distinct, _ in chunk]
                batch = _read_batch(parts, size, located_only=True)  # the edge checks read no IoU below 0.5
            except Exception:  # each run then reads (and raises) on its own
                continue
            offset = 0
            for record, edges, distinct, where in chunk:
                record.remember(_EDGE_READINGS, _split_edges(edges, batch, [offset + at for at in where]))
                offset += len(distinct)


def _distinct_rows(stacked: Boxes) -> tuple[Boxes, list[int]]:
    """The distinct rows of ``stacked`` (bit for bit), in order of first appearance, and where each row is."""
    data = np.ascontiguousarray(stacked).tobytes()
    width = 4 * stacked.itemsize
    first: dict[bytes, int] = {}
    where: list[int] = []
    keep: list[int] = []
    for row, at in enumerate(range(0, len(data), width)):
        key = data[at : at + width]
        found = first.get(key)
        if found is None:
            found = first[key] = len(keep)
            keep.append(row)
        where.append(found)
    return (stacked, where) if len(keep) == len(where) else (stacked[keep], where)


def _split_edges(
    edges: tuple[BoxEdge, ...], batch: _Batch, positions: list[int]
) -> tuple[tuple[_Picked, _Picked], ...]:
    """Per edge, its source and sent boxes' readings, read from ``batch`` where ``positions`` place them (the
    edges' boxes in order, as :func:`read_edges_of_runs` stacks them)."""
    result = []
    start = 0
    for found in edges:
        middle = start + len(found.source)
        end = middle + len(found.sent)
        result.append((_Picked(batch, positions[start:middle]), _Picked(batch, positions[middle:end])))
        start = end
    return tuple(result)


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
        readers: list[tuple[BoxAdapter | str, BoxReadings, BoxConvention]] = []
        if isinstance(found.edge.adapter, BoxAdapter):
            readers.append((found.edge.adapter, source, found.edge.adapter.from_))
        assert found.consumer_truth.box_convention is not None
        readers.append((found.consumer.tool, sent, found.consumer_truth.box_convention))
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


def _first_mismatch(readers: Sequence[tuple[BoxAdapter | str, BoxReadings, BoxConvention]]) -> str | None:
    """The first reading point (an adapter, or the consuming tool by name) at which a box reads as another object
    than it locates, said as the violation says it."""
    for reader, readings, expected in readers:
        for index, reading in enumerate(readings.best):
            if reading is None:
                continue  # model error: the box locates no object under any convention
            if readings.reads_as(index, expected, reading.gt_index) < MATCH_IOU:
                name = f"adapter ({reader})" if isinstance(reader, BoxAdapter) else f"{reader}"
                return f"value is {reading.convention} but {name} reads {expected}"
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
        crops = sent.canonical_in(convention_index(found.consumer_truth.box_convention))  # as to_canonical reads them
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
