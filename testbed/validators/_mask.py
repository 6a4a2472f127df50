"""Mask-image consistency validators: masks on the wrong grid, outside their boxes, or read in another encoding.

Masks are decoded through the truth manifest of the tool that returned them
(its true encoding and resolution), never through what it declares.

Model-resolution grid rule (``mask.size_mismatch``): the truth manifest does
not record the model's input size, so a model-resolution mask is accepted when
its grid is a letterbox of the image as Ultralytics builds one: both sides a
multiple of the stride (32) and the scaled image filling one side (1 px). All
masks of one result must share one grid.

Edge rule (``mask.encoding_mismatch``): a mask edge is a workflow edge into a
consumer's true ``mask`` argument whose source path is its producer's true
``mask`` path (``[*]`` matching any index), so the value is the producer's
masks in the producer's true convention: encoding, polygon normalization and
resolution, the three things a declared mask adapter converts. As for boxes
(``coords.mismatch``), there are two reading points: a declared mask adapter
reads the producer's value in its ``from`` convention, and the consumer reads
the value sent (the adapter's ``to`` convention, else the producer's) in its
true convention. A difference at either is a mismatch, whether or not the
consumer then refused the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from testbed.contracts import inserted_mask_conversions
from testbed.conventions import (
    ImageSize,
    MaskEncoding,
    MaskPayloadError,
    MaskResolution,
    coco_rle_runs,
    decode_counts_many,
    decode_masks,
    on_pixels,
    on_pixels_within,
    pixels_in_windows,
    to_canonical,
)
from testbed.events import CallEvent, CallOutcomeKind
from testbed.imaging import decode_base64_image
from testbed.protocol import SemanticRole, ToolTruth
from testbed.tasks import unletterbox_masks
from testbed.validators._coords import canonical_result, image_size, returned_boxes, tool_truth
from testbed.validators._model import RunRecord, ValidatorSpec, Violation
from testbed.validators._workflow import payload_value, run_edges
from testbed.workflow import BindingError, Edge, MaskAdapter, MaskConvention

STRIDE = 32
"""The letterbox stride of a model-resolution grid."""
OUTSIDE_BOX_FRACTION = 0.02
"""Fraction of a mask's pixels that may lie outside its box."""
BOX_TOLERANCE_PX = 1
"""Pixels the box is grown by before counting mask pixels outside it."""

_READ_ERRORS = (BindingError, ValueError, TypeError, KeyError, IndexError)


def _violation(record: RunRecord, vid: str, at: int, call: CallEvent, detail: str) -> Violation:
    return Violation(vid, record.started.run, call.server, call.node, call.item, detail, (at,))


def _mask_calls(record: RunRecord) -> Iterator[tuple[int, CallEvent, ToolTruth, Any]]:
    """Successful calls whose truth returns masks, with the mask payload at the truth path (internalized)."""
    return iter(record.memo("mask.calls", lambda: tuple(_find_mask_calls(record))))


def _find_mask_calls(record: RunRecord) -> Iterator[tuple[int, CallEvent, ToolTruth, Any]]:
    for at, call in record.call_events():
        truth = tool_truth(record, call)
        if truth is None or truth.mask_encoding is None or SemanticRole.MASK not in truth.paths:
            continue
        if call.outcome is not CallOutcomeKind.OK:
            continue
        try:
            payload = payload_value(record, call, truth.paths[SemanticRole.MASK])
        except _READ_ERRORS:
            continue
        yield at, call, truth, payload


def _png_grids(payload: Any) -> list[ImageSize]:
    grids = []
    for item in payload if isinstance(payload, list) else []:
        if isinstance(item, str):
            image = decode_base64_image(item, what="mask")
            grids.append(ImageSize(width=int(image.shape[1]), height=int(image.shape[0])))
    return grids


def _sized_grids(payload: Any) -> list[ImageSize]:
    """Grids written in ``size: [H, W]`` fields (coco_rle items, a label_map)."""
    items = [payload] if isinstance(payload, dict) else payload if isinstance(payload, list) else []
    grids = []
    for item in items:
        size = item.get("size") if isinstance(item, dict) else None
        if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
            grids.append(_grid(size[1], size[0]))
    return grids


def _grid(width: int, height: int) -> ImageSize:
    """``ImageSize(width=width, height=height)``; one shared (immutable) object per plain size."""
    if type(width) is not int or type(height) is not int:
        return ImageSize(width=width, height=height)  # a bool, an int subclass: as ImageSize reads it
    found = _GRIDS.get((width, height))
    if found is None:
        if len(_GRIDS) >= 1024:
            _GRIDS.clear()
        found = _GRIDS[(width, height)] = ImageSize(width=width, height=height)
    return found


_GRIDS: dict[tuple[int, int], ImageSize] = {}


def mask_grids(payload: Any, encoding: MaskEncoding) -> list[ImageSize]:
    """The grid each mask of a payload is written on, where the encoding states it (polygons do not)."""
    if encoding is MaskEncoding.PNG_BASE64:
        return _png_grids(payload)
    if encoding in (MaskEncoding.COCO_RLE, MaskEncoding.LABEL_MAP):
        return _sized_grids(payload)
    return []


def is_letterbox(grid: ImageSize, size: ImageSize) -> bool:
    """Whether ``grid`` is a stride-aligned letterbox of an image of ``size``."""
    if grid.width % STRIDE or grid.height % STRIDE:
        return False
    gain = min(grid.width / size.width, grid.height / size.height)
    return abs(round(size.width * gain) - grid.width) <= 1 or abs(round(size.height * gain) - grid.height) <= 1


def _grids_of(record: RunRecord, payload: Any, encoding: MaskEncoding) -> list[ImageSize]:
    """:func:`mask_grids`, once per payload object of the run (a PNG grid is known only by decoding it)."""
    cache: dict[tuple[int, MaskEncoding], tuple[Any, list[ImageSize]]] = record.memo("mask.grids", dict)
    found = cache.get((id(payload), encoding))
    if found is not None and found[0] is payload:
        return found[1]
    grids = mask_grids(payload, encoding)  # raising as it does, every time
    cache[(id(payload), encoding)] = (payload, grids)
    return grids


def check_size_mismatch(record: RunRecord) -> Iterator[Violation]:
    """``mask.size_mismatch``: a mask grid other than the image's (image resolution) or not a letterbox (model)."""
    size = image_size(record)
    for at, call, truth, payload in _mask_calls(record):
        assert truth.mask_encoding is not None
        try:
            grids = _grids_of(record, payload, truth.mask_encoding)
        except _READ_ERRORS:
            continue
        if not grids:
            continue
        distinct = sorted({(g.width, g.height) for g in grids})
        where = f"{call.tool} {truth.mask_encoding.value} masks"
        if len(distinct) > 1:
            yield _violation(record, "mask.size_mismatch", at, call, f"{where} on several grids {distinct}")
            continue
        grid = grids[0]
        if truth.mask_resolution is MaskResolution.MODEL:
            if not is_letterbox(grid, size):
                yield _violation(
                    record,
                    "mask.size_mismatch",
                    at,
                    call,
                    f"{where} on a {grid.width}x{grid.height} grid, not a stride-{STRIDE} letterbox of the"
                    f" {size.width}x{size.height} image",
                )
        elif grid != size:
            yield _violation(
                record,
                "mask.size_mismatch",
                at,
                call,
                f"{where} are {grid.width}x{grid.height}, the image is {size.width}x{size.height}",
            )


def check_outside_box(record: RunRecord) -> Iterator[Violation]:
    """``mask.outside_box``: more than 2% of a mask's pixels outside its own box (both read in true conventions)."""
    size = image_size(record)
    for (at, call, truth, payload), batched in zip(_mask_calls(record), outside_counts(record), strict=True):
        counted: _Counted | None = batched
        if counted is None:
            counted = _count_one_call(record, call, truth, payload, size)
            if counted is None:
                continue
        canonical, counts = counted
        for index, ((total, within), box) in enumerate(zip(counts, canonical, strict=True)):
            if total == 0:
                continue
            fraction = (total - within) / total
            if fraction > OUTSIDE_BOX_FRACTION:
                yield _violation(
                    record,
                    "mask.outside_box",
                    at,
                    call,
                    f"{call.tool} mask {index}: {fraction:.0%} of {total} pixels outside its box"
                    f" {box.round(1).tolist()} ({truth.box_convention})",
                )
                break


_Counted = tuple[np.ndarray, Iterable[tuple[int, int]]]
"""A mask call's boxes (canonical), and per mask its pixels and those inside its box."""


def _count_one_call(
    record: RunRecord, call: CallEvent, truth: ToolTruth, payload: Any, size: ImageSize
) -> _Counted | None:
    """:data:`_Counted` for one mask call, each mask counted when asked (``None``: the call is not checked)."""
    if truth.box_convention is None or truth.mask_encoding is None or SemanticRole.BOUNDING_BOX not in truth.paths:
        return None
    try:
        boxes = returned_boxes(record, call, truth.paths[SemanticRole.BOUNDING_BOX])
        masks = _counted_at_image(record, payload, truth, size)
    except (MaskPayloadError, *_READ_ERRORS):
        return None  # unreadable masks are mask.size_mismatch's (or schema's) business
    if boxes is None or len(boxes) != len(masks):
        return None
    canonical = to_canonical(boxes, truth.box_convention, size)
    return canonical, _counts_one_by_one(masks, canonical)


def outside_counts(record: RunRecord) -> tuple[tuple[np.ndarray, list[tuple[int, int]]] | None, ...]:
    """Per call of :func:`_mask_calls`: :data:`_Counted` where its masks are image-resolution ``coco_rle`` read
    without error (all counted at once), else ``None`` (count it one mask at a time). Shared: read-only."""
    return record.memo(_OUTSIDE_COUNTS, lambda: _count_outside_of_runs([record])[0])


def count_outside_of_runs(records: Sequence[RunRecord]) -> None:
    """Compute :func:`outside_counts` of many runs in one numpy pass over all their run-length masks."""
    for record, counted in zip(records, _count_outside_of_runs(records), strict=True):
        record.remember(_OUTSIDE_COUNTS, counted)


_OUTSIDE_COUNTS = "mask.outside_counts"


@dataclass
class _Gathered:
    """Run-length masks of many calls, laid out for :func:`decode_counts_many`."""

    counts: list[str] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)


def _count_outside_of_runs(
    records: Sequence[RunRecord],
) -> list[tuple[tuple[np.ndarray, list[tuple[int, int]]] | None, ...]]:
    gathered = _Gathered()
    plans: list[list[tuple[np.ndarray, int] | None]] = []
    for record in records:
        calls = _mask_calls_or_none(record)
        try:
            plans.append([_gather(record, call, truth, payload, gathered) for _, call, truth, payload in calls])
        except Exception:  # the validator meets it again, one call at a time, and reports it
            plans.append([None] * len(calls))
    try:
        counted = _count_gathered(gathered) if gathered.counts else None
    except Exception:  # counted one mask at a time instead, where any error is reported on its own run
        counted = None
    if counted is None and len(records) > 1 and gathered.counts:
        return [_count_outside_of_runs([record])[0] for record in records]  # an unreadable mask spoils only its run
    return [
        tuple(
            None if entry is None or counted is None else (entry[0], counted[entry[1] : entry[1] + len(entry[0])])
            for entry in plan
        )
        for plan in plans
    ]


def _mask_calls_or_none(record: RunRecord) -> tuple[tuple[int, CallEvent, ToolTruth, Any], ...]:
    """:func:`_mask_calls`, none where finding them raises (the validator then raises it itself)."""
    try:
        return tuple(_mask_calls(record))
    except Exception:
        return ()


def _gather(
    record: RunRecord, call: CallEvent, truth: ToolTruth, payload: Any, gathered: _Gathered
) -> tuple[np.ndarray, int] | None:
    """Queue a mask call's run-length masks and boxes (where nothing in them can raise); where they start."""
    if truth.box_convention is None or truth.mask_encoding is not MaskEncoding.COCO_RLE:
        return None
    if truth.mask_resolution is MaskResolution.MODEL or SemanticRole.BOUNDING_BOX not in truth.paths:
        return None
    size = image_size(record)
    if not isinstance(payload, list) or not payload or size.width <= 0 or size.height <= 0:
        return None
    written = [size.height, size.width]
    strings = []
    for item in payload:
        if not isinstance(item, dict) or not isinstance(counts := item.get("counts"), str):
            return None
        grid = item.get("size")
        if type(grid) is not list or grid != written or type(grid[0]) is not int or type(grid[1]) is not int:
            return None  # as coco_rle_runs reads it (equal to ``written``, it holds two numbers)
        strings.append(counts)
    try:
        boxes = returned_boxes(record, call, truth.paths[SemanticRole.BOUNDING_BOX])
        if boxes is None or len(boxes) != len(payload):
            return None
        canonical = canonical_result(record, call, truth, boxes)  # to_canonical(boxes, truth.box_convention, size)
    except Exception:
        return None
    if not np.abs(canonical).max() < _EXACT:  # every coordinate finite (a NaN is no maximum below it) and exact
        return None
    start = len(gathered.counts)
    gathered.counts.extend(strings)
    gathered.heights.extend([size.height] * len(strings))
    gathered.widths.extend([size.width] * len(strings))
    gathered.boxes.append(canonical)
    return canonical, start


_EXACT = float(2**52)
"""Box coordinates below this are read by ``np.floor``/``np.ceil`` into int64 exactly as by ``int()``."""


def _count_gathered(gathered: _Gathered) -> list[tuple[int, int]] | None:
    heights = np.array(gathered.heights, dtype=np.int64)
    widths = np.array(gathered.widths, dtype=np.int64)
    columns = decode_counts_many(gathered.counts, (heights * widths).tolist())
    if columns is None:
        return None
    boxes = np.concatenate(gathered.boxes)
    x1 = np.maximum(0, np.floor(boxes[:, 0]).astype(np.int64) - BOX_TOLERANCE_PX)
    y1 = np.maximum(0, np.floor(boxes[:, 1]).astype(np.int64) - BOX_TOLERANCE_PX)
    x2 = np.ceil(boxes[:, 2]).astype(np.int64) + BOX_TOLERANCE_PX
    y2 = np.ceil(boxes[:, 3]).astype(np.int64) + BOX_TOLERANCE_PX
    holds = (x2 > 0) & (y2 > 0)
    windows = np.where(holds[:, None], np.stack([y1, y2, x1, x2], axis=1), 0)
    totals, within = pixels_in_windows(columns, heights, widths, windows)
    return list(zip(totals.tolist(), within.tolist(), strict=True))


_Window = tuple[tuple[int, int], tuple[int, int]]


def _window(box: np.ndarray) -> _Window | None:
    """Rows, then columns, of a canonical box grown by :data:`BOX_TOLERANCE_PX` (``None``: it holds no pixel)."""
    x1, y1 = max(0, int(np.floor(box[0])) - BOX_TOLERANCE_PX), max(0, int(np.floor(box[1])) - BOX_TOLERANCE_PX)
    x2, y2 = int(np.ceil(box[2])) + BOX_TOLERANCE_PX, int(np.ceil(box[3])) + BOX_TOLERANCE_PX
    return ((y1, max(y1, y2)), (x1, max(x1, x2))) if x2 > 0 and y2 > 0 else None


def _counts_one_by_one(masks: list[_PixelCounts], canonical: np.ndarray) -> Iterator[tuple[int, int]]:
    for mask, box in zip(masks, canonical, strict=True):
        total = mask.total()
        if total == 0:
            yield 0, 0
            continue
        window = _window(box)
        yield total, mask.within(*window) if window is not None else 0


class _PixelCounts(Protocol):
    """A mask's pixel count, and its count in a window (rows, then columns, clipped as slicing clips them)."""

    def total(self) -> int: ...

    def within(self, rows: tuple[int, int], columns: tuple[int, int]) -> int: ...


@dataclass(frozen=True)
class _DecodedMask:
    """A decoded mask's pixel counts."""

    mask: np.ndarray

    def total(self) -> int:
        return int(np.count_nonzero(self.mask))  # boolean masks: the pixel count, without sum's conversion to int

    def within(self, rows: tuple[int, int], columns: tuple[int, int]) -> int:
        return int(np.count_nonzero(self.mask[rows[0] : rows[1], columns[0] : columns[1]]))


@dataclass(frozen=True)
class _RunLengthMask:
    """A ``coco_rle`` mask's pixel counts read from its run lengths: those of its decoded mask, exactly."""

    runs: list[int]
    height: int

    def total(self) -> int:
        return on_pixels(self.runs)

    def within(self, rows: tuple[int, int], columns: tuple[int, int]) -> int:
        return on_pixels_within(self.runs, self.height, rows, columns)


def _counted_at_image(record: RunRecord, payload: Any, truth: ToolTruth, size: ImageSize) -> list[_PixelCounts]:
    """The masks of :func:`_decode_at_image`, as pixel counts; image-resolution ``coco_rle`` masks that decode
    without error are counted from their run lengths, not decoded."""
    if truth.mask_encoding is MaskEncoding.COCO_RLE and truth.mask_resolution is not MaskResolution.MODEL:
        runs = coco_rle_runs(payload, size)
        if runs is not None:
            return [_RunLengthMask(one, size.height) for one in runs]
    return [_DecodedMask(mask) for mask in _decode_at_image(record, payload, truth, size)]


def _decode_at_image(record: RunRecord, payload: Any, truth: ToolTruth, size: ImageSize) -> np.ndarray:
    assert truth.mask_encoding is not None
    if truth.mask_resolution is MaskResolution.MODEL:
        grids = _grids_of(record, payload, truth.mask_encoding)
        if not grids:
            raise ValueError("model grid unknown")
        decoded = decode_masks(payload, truth.mask_encoding, grids[0], normalized_polygons=truth.normalized_polygons)
        return unletterbox_masks(decoded, size)
    return decode_masks(payload, truth.mask_encoding, size, normalized_polygons=truth.normalized_polygons)


def mask_convention(truth: ToolTruth) -> MaskConvention | None:
    """The convention of the masks a tool truly returns or reads (``None`` when it handles no masks)."""
    if truth.mask_encoding is None:
        return None
    return _normalized(
        MaskConvention(
            encoding=truth.mask_encoding,
            resolution=truth.mask_resolution or MaskResolution.IMAGE,
            normalized_polygons=truth.normalized_polygons,
        )
    )


def _normalized(convention: MaskConvention) -> MaskConvention:
    """The convention with ``normalized_polygons`` cleared where the encoding is not ``polygon`` (it means nothing)."""
    if convention.encoding is MaskEncoding.POLYGON or not convention.normalized_polygons:
        return convention
    return convention.model_copy(update={"normalized_polygons": False})


def _top(argument: str) -> str:
    """The top-level argument of an argument path (``options`` of ``options.masks[0]``)."""
    return argument.split(".", 1)[0].split("[", 1)[0]


def _matches_path(source_path: str, truth_path: str) -> bool:
    """Whether an edge's source path addresses the truth path (``[*]`` in the truth path matches any index)."""
    pattern = r"\[(?:\*|\d+)\]".join(re.escape(part) for part in truth_path.split("[*]"))
    return re.fullmatch(pattern, source_path) is not None


@dataclass(frozen=True)
class MaskEdge:
    """One mask value crossing one workflow edge into one call."""

    edge: Edge
    consumer_at: int
    consumer: CallEvent
    consumer_convention: MaskConvention
    """How the consumer truly reads masks."""
    producer_at: int
    producer: CallEvent
    producer_convention: MaskConvention
    """How the producer truly wrote the value."""


def mask_edges(record: RunRecord) -> Iterator[MaskEdge]:
    """Every mask-carrying edge instance of the run: a call sent a producer's true masks to its true mask argument.

    The producer is the source node's call (item 0) that succeeded; the consumer's call may have failed.
    """
    edges = run_edges(record)
    for at, call in record.call_events():
        truth = tool_truth(record, call)
        consumer_convention = mask_convention(truth) if truth is not None else None
        if truth is None or consumer_convention is None or SemanticRole.MASK not in truth.inputs:
            continue
        argument = truth.inputs[SemanticRole.MASK]
        if argument not in call.arguments:
            continue
        for feed in edges.feeds(call, argument):
            edge, produced = feed.edge, (feed.producer_at, feed.producer)
            producer_truth = tool_truth(record, produced[1])
            producer_convention = mask_convention(producer_truth) if producer_truth is not None else None
            if producer_truth is None or producer_convention is None or SemanticRole.MASK not in producer_truth.paths:
                continue
            if not _matches_path(edge.source_path, producer_truth.paths[SemanticRole.MASK]):
                continue
            yield MaskEdge(edge, at, call, consumer_convention, produced[0], produced[1], producer_convention)


def check_encoding_mismatch(record: RunRecord) -> Iterator[Violation]:
    """``mask.encoding_mismatch``: masks crossing an edge in a convention other than the one read on the other side.

    Readers, in order: a declared mask adapter, which reads the producer's value in its ``from`` convention;
    then the consumer, which reads the value as sent (in the adapter's ``to`` convention, else still in the
    producer's) in its own true convention. One violation per consumer call and edge, at the first reader
    that disagrees.
    """
    for found in mask_edges(record):
        readers: list[tuple[str, MaskConvention, MaskConvention]] = []
        sent = found.producer_convention
        inserted = inserted_mask_conversions(found.consumer.adapters).get(_top(found.edge.target_arg))
        if isinstance(found.edge.adapter, MaskAdapter):
            adapter = found.edge.adapter
            readers.append((f"the adapter ({adapter})", sent, _normalized(adapter.from_)))
            sent = _normalized(adapter.to)
        elif inserted is not None:  # a runtime contract converted the value on this call (recorded on it)
            source, target = inserted
            readers.append((f"the contract's adapter (mask {source} -> {target})", sent, _normalized(source)))
            sent = _normalized(target)
        readers.append((found.consumer.tool, sent, found.consumer_convention))
        for reader, actual, expected in readers:
            if actual != expected:
                yield Violation(
                    "mask.encoding_mismatch",
                    record.started.run,
                    found.consumer.server,
                    found.consumer.node,
                    found.consumer.item,
                    f"edge {found.edge.source_node}.{found.edge.source_path} -> {found.edge.target_node}."
                    f"{found.edge.target_arg}: value is {actual} but {reader} reads {expected}",
                    tuple(sorted({found.producer_at, found.consumer_at})),
                )
                break


VALIDATORS = (
    ValidatorSpec("mask.size_mismatch", ("mask.size_mismatch",), check_size_mismatch),
    ValidatorSpec("mask.outside_box", ("mask.outside_box",), check_outside_box),
    ValidatorSpec("mask.encoding_mismatch", ("mask.encoding_mismatch",), check_encoding_mismatch),
)
