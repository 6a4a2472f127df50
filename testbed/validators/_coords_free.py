"""Coordinate evidence without ground truth: runs on images that carry no labels (real photographs).

The ground-truth checks (``coords.mismatch``, ``coords.crop_misses_object``)
need objects to match boxes against; on an unlabelled image they never fire.
These checks find a convention fault from the boxes themselves, and emit IDs
of their own (never a ground-truth ID), each with its evidence kind and a
confidence in its detail (``[no ground truth: KIND, confidence C]``). They
apply only to runs without ground truth: where labels exist, the
ground-truth checks are the better evidence and these stay silent.

Every box a tool returns is read in its true convention (its truth manifest).

- **Consistency** (``coords.inconsistent_convention``): two calls of one
  server's tool on the same image should return much the same boxes. When the
  later call's boxes, read in the tool's convention, agree with the earlier
  call's far less than when read in some other convention, the convention
  changed between the calls.
- **Agreement** (``coords.producers_disagree``): two box producers of one run
  (two detectors, a detector and a segmenter's mask boxes) see the same image.
  The same rule, between different servers.
- **Consistency across runs** (``coords.inconsistent_convention`` again, evidence kind
  ``consistency across runs``): the same workflow step (server, tool, node, item)
  on the same image in several runs should return much the same boxes. A run
  whose boxes agree with most earlier runs' only when read in another
  convention is flagged: the convention changed mid-experiment. Earlier runs,
  in run order, set the convention, so the check is deterministic and a
  resumed experiment gives the same findings. A function of all the runs
  (:func:`check_across_runs`), not a per-run validator.
- **Plausibility** (``coords.implausible_boxes``): over all the boxes one call
  returned, most read off the image or far smaller than any object (sides
  under 1% of the image: coordinates in other units), while another
  convention reads every one on the image at a plausible size.
- **Edges** (``coords.edge_disagrees``): the consumer of a box reads it as a
  different box (IoU < 0.5) than its producer meant it.

Agreement of a box set with another: the fraction of its boxes that lie on the
image and overlap some box of the other at IoU >= :data:`MATCH_IOU`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from testbed.conventions import BoxConvention, box_iou, to_canonical
from testbed.events import CallEvent, CallOutcomeKind
from testbed.protocol import SemanticRole
from testbed.validators._coords import (
    _READ_ERRORS,
    CONVENTIONS,
    MATCH_IOU,
    Boxes,
    box_edges,
    convention_index,
    image_size,
    inside,
    read_boxes,
    returned_boxes,
    tool_truth,
)
from testbed.validators._model import RunRecord, ValidatorSpec, Violation
from testbed.workflow import BindingError

__all__ = [
    "AGREEMENT_GAIN",
    "MIN_AGREEMENT",
    "VALIDATORS",
    "Produced",
    "agreement",
    "check_across_runs",
    "produced_boxes",
]

MIN_AGREEMENT: Final = 0.3
"""The other reading must make at least this fraction of the boxes agree."""
AGREEMENT_GAIN: Final = 0.25
"""...and at least this much more than the true convention's reading (a clear winner, not noise)."""
MIN_BOXES: Final = 1
"""Fewer boxes than this on either side say too little to judge agreement or plausibility."""
TINY_SIDE: Final = 0.01
"""A box whose width or height is under this fraction of the image's is implausibly small."""
IMPLAUSIBLE_SHARE: Final = 0.5
"""Plausibility flags a call when at least this share of its boxes is implausible in its convention."""


@dataclass(frozen=True)
class Produced:
    """The boxes one call returned, and its true convention."""

    at: int
    call: CallEvent
    convention: BoxConvention
    boxes: Boxes
    """As returned, ``(N, 4)``."""


def _no_ground_truth(record: RunRecord) -> bool:
    return not record.started.ground_truth


def produced_boxes(record: RunRecord) -> tuple[Produced, ...]:
    """Every successful call's returned boxes (tools whose truth has a ``bounding_box`` path), in call order."""

    def compute() -> tuple[Produced, ...]:
        found: list[Produced] = []
        for at, call in record.call_events():
            truth = tool_truth(record, call)
            if truth is None or truth.box_convention is None or call.outcome is not CallOutcomeKind.OK:
                continue
            if SemanticRole.BOUNDING_BOX not in truth.paths:
                continue
            try:
                boxes = returned_boxes(record, call, truth.paths[SemanticRole.BOUNDING_BOX])
            except (BindingError, *_READ_ERRORS):
                continue
            if boxes is not None:
                found.append(Produced(at, call, truth.box_convention, boxes))
        return tuple(found)

    return record.memo("coords_free.produced", compute)


def agreement(record: RunRecord, boxes: Boxes, others: Boxes) -> NDArray[np.float64]:
    """Per convention of :data:`CONVENTIONS`: the fraction of ``boxes`` that, read in it, agree with ``others``
    (canonical)."""
    readings = read_boxes(boxes, image_size(record), others)
    agrees = readings.inside & (readings.ious.max(axis=2) >= MATCH_IOU)
    result: NDArray[np.float64] = agrees.mean(axis=1)
    return result


def _tag(kind: str, confidence: float) -> str:
    return f"[no ground truth: {kind}, confidence {confidence:.2f}]"


def _disagreement(record: RunRecord, later: Produced, earlier: Produced) -> tuple[BoxConvention, float, float] | None:
    """The convention that reads ``later`` in agreement with ``earlier`` far better than its own, if any:
    ``(convention, its agreement, the own convention's agreement)``."""
    if len(later.boxes) < MIN_BOXES or len(earlier.boxes) < MIN_BOXES:
        return None
    size = image_size(record)
    reference = to_canonical(earlier.boxes, earlier.convention, size)
    reference = reference[inside(reference, size)]
    if len(reference) < MIN_BOXES:
        return None
    shares = agreement(record, later.boxes, reference)
    own = float(shares[convention_index(later.convention)])
    best = int(np.argmax(shares))
    if shares[best] >= MIN_AGREEMENT and shares[best] - own >= AGREEMENT_GAIN:
        return CONVENTIONS[best], float(shares[best]), own
    return None


def check_consistency(record: RunRecord) -> Iterator[Violation]:
    """``coords.inconsistent_convention`` and ``coords.producers_disagree``: a call whose boxes agree with an
    earlier call's (same image) only when read in another convention than its own.

    One violation per later call, against the first earlier call it disagrees with; the same server and tool
    give ``inconsistent_convention``, another producer ``producers_disagree``.
    """
    if not _no_ground_truth(record):
        return
    produced = produced_boxes(record)
    for index, later in enumerate(produced):
        for earlier in produced[:index]:
            if later.call.item != earlier.call.item:
                continue
            changed, other = later, earlier
            found = _disagreement(record, later, earlier)
            if found is None:  # the earlier call may be the changed one
                changed, other = earlier, later
                found = _disagreement(record, earlier, later)
            if found is None:
                continue
            yield _disagreeing(record, changed, other, *found)
            break


def _disagreeing(
    record: RunRecord, changed: Produced, other: Produced, convention: BoxConvention, share: float, own: float
) -> Violation:
    same = (changed.call.server, changed.call.tool) == (other.call.server, other.call.tool)
    vid = "coords.inconsistent_convention" if same else "coords.producers_disagree"
    kind = "consistency across calls" if same else "agreement between producers"
    return Violation(
        id=vid,
        run=record.started.run,
        server=changed.call.server,
        node=changed.call.node,
        item=changed.call.item,
        detail=f"{_tag(kind, share)} {changed.call.server}.{changed.call.tool} read as {changed.convention} agrees "
        f"with {other.call.server}.{other.call.tool} on {own:.0%} of its boxes, read as {convention} on {share:.0%}",
        evidence=tuple(sorted((changed.at, other.at))),
    )


_Step = tuple[str, str, str, str | None, int | None]
"""What makes two runs' calls comparable: the image blob, server, tool, node and item."""


def check_across_runs(records: Sequence[RunRecord]) -> list[Violation]:
    """``coords.inconsistent_convention`` across runs: a call whose boxes agree with the same step's boxes on the
    same image in earlier runs (without ground truth) only when read in another convention than its own, for
    more than half of those earlier runs. One violation per such call."""
    earlier: dict[_Step, list[Produced]] = {}
    found: list[Violation] = []
    for record in sorted(records, key=lambda r: r.started.run):
        if not _no_ground_truth(record):
            continue
        produced = produced_boxes(record)
        for later in produced:
            step = _step(record, later)
            verdicts = [_disagreement(record, later, before) for before in earlier.get(step, ())]
            against = [verdict for verdict in verdicts if verdict is not None]
            if against and 2 * len(against) > len(verdicts):
                found.append(_changed_across_runs(record, later, against, len(verdicts)))
        for call in produced:  # after the run: its calls join the experiment's evidence for later runs only
            earlier.setdefault(_step(record, call), []).append(call)
    return found


def _step(record: RunRecord, call: Produced) -> _Step:
    return (record.started.image_blob, call.call.server, call.call.tool, call.call.node, call.call.item)


def _changed_across_runs(
    record: RunRecord, later: Produced, against: list[tuple[BoxConvention, float, float]], compared: int
) -> Violation:
    convention, share, own = max(against, key=lambda verdict: verdict[1] - verdict[2])
    return Violation(
        id="coords.inconsistent_convention",
        run=record.started.run,
        server=later.call.server,
        node=later.call.node,
        item=later.call.item,
        detail=f"{_tag('consistency across runs', share)} {later.call.server}.{later.call.tool} read as "
        f"{later.convention} disagrees with {len(against)} of {compared} earlier runs on the same image; it agrees "
        f"with them on {own:.0%} of its boxes, read as {convention} on {share:.0%}",
        evidence=(later.at,),
    )


def check_plausibility(record: RunRecord) -> Iterator[Violation]:
    """``coords.implausible_boxes``: most of a call's boxes, in its convention, lie off the image or are far
    smaller than an object could be, while another convention reads all of them on the image at a plausible
    size. Needs :data:`MIN_BOXES` boxes."""
    if not _no_ground_truth(record):
        return
    size = image_size(record)
    for found in produced_boxes(record):
        if len(found.boxes) < MIN_BOXES:
            continue
        readings = read_boxes(found.boxes, size, np.zeros((0, 4), dtype=np.float64))
        plausible = _plausible(readings.canonical, readings.inside, size.width, size.height)  # (K, N)
        own_index = convention_index(found.convention)
        implausible = 1.0 - float(plausible[own_index].mean())
        alternatives = [k for k in range(len(CONVENTIONS)) if k != own_index and plausible[k].all()]
        if implausible < IMPLAUSIBLE_SHARE or not alternatives:
            continue
        names = ", ".join(str(CONVENTIONS[k]) for k in alternatives[:3])
        more = f" (+{len(alternatives) - 3} more)" if len(alternatives) > 3 else ""
        yield Violation(
            id="coords.implausible_boxes",
            run=record.started.run,
            server=found.call.server,
            node=found.call.node,
            item=found.call.item,
            detail=f"{_tag('image bounds and size over many boxes', implausible)} {found.call.tool}: "
            f"{implausible:.0%} of {len(found.boxes)} boxes read as {found.convention} lie off the "
            f"{size.width}x{size.height} image or are under {TINY_SIDE:.0%} of it; all are plausible as {names}{more}",
            evidence=(found.at,),
        )


def _plausible(canonical: Boxes, on_image: NDArray[np.bool_], width: int, height: int) -> NDArray[np.bool_]:
    widths = (canonical[..., 2] - canonical[..., 0]) / width
    heights = (canonical[..., 3] - canonical[..., 1]) / height
    result: NDArray[np.bool_] = on_image & (widths >= TINY_SIDE) & (heights >= TINY_SIDE)
    return result


def check_edges(record: RunRecord) -> Iterator[Violation]:
    """``coords.edge_disagrees``: a box crossing an edge that its consumer reads as another box than its producer
    meant (canonical IoU < 0.5, or off the image only in the consumer's reading). One per consumer call."""
    if not _no_ground_truth(record):
        return
    size = image_size(record)
    for found in box_edges(record):
        consumer = found.consumer_truth.box_convention
        producer = found.producer_truth.box_convention if found.producer_truth is not None else None
        if consumer is None or producer is None:
            continue
        meant = to_canonical(found.source, producer, size)
        read = to_canonical(found.sent, consumer, size)
        valid = inside(meant, size)
        if not valid.any():
            continue
        ious = np.diag(box_iou(meant, read)) if len(meant) else np.zeros(0)
        misread = valid & ((ious < MATCH_IOU) | ~inside(read, size))
        share = float(misread.sum()) / float(valid.sum())
        if not misread.any():
            continue
        yield Violation(
            id="coords.edge_disagrees",
            run=record.started.run,
            server=found.consumer.server,
            node=found.consumer.node,
            item=found.consumer.item,
            detail=f"{_tag('producer and consumer readings', share)} edge {found.edge.source_node}."
            f"{found.edge.source_path} -> {found.edge.target_node}.{found.edge.target_arg}: {int(misread.sum())} of "
            f"{int(valid.sum())} boxes meant as {producer} are read by {found.consumer.tool} as {consumer} into "
            "other boxes",
            evidence=(found.producer_at, found.consumer_at),
        )


VALIDATORS = (
    ValidatorSpec(
        "coords.consistency", ("coords.inconsistent_convention", "coords.producers_disagree"), check_consistency
    ),
    ValidatorSpec("coords.implausible_boxes", ("coords.implausible_boxes",), check_plausibility),
    ValidatorSpec("coords.edge_disagrees", ("coords.edge_disagrees",), check_edges),
)
