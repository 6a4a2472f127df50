"""A reference model's boxes as pseudo ground truth, on runs without ground truth.

Set ``TESTBED_REFERENCE_DETECTOR`` to any Ultralytics detection or
segmentation weights (a local path) to turn this check on; unset, it finds
nothing, so scenarios and their expected violations are unchanged. The
reference model runs on the run's scene (through the shared inference cache),
and its boxes of the classes it shares with the server's returned labels are
the pseudo ground truth. When a call's boxes, read in their tool's convention,
agree with the pseudo boxes far less than read in another convention (the rule
of :func:`~testbed.validators._coords_free.agreement`), the call is
``coords.pseudo_mismatch``. Its detail names the reference weights and their
hash, since the finding is only as good as that model.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np

from testbed._errors import WeightsError
from testbed.imaging import load_image
from testbed.protocol import SemanticRole
from testbed.validators._coords import _READ_ERRORS, CONVENTIONS, Boxes, convention_index, tool_truth
from testbed.validators._coords_free import AGREEMENT_GAIN, MIN_AGREEMENT, Produced, agreement, produced_boxes
from testbed.validators._model import RunRecord, ValidatorSpec, Violation
from testbed.validators._workflow import read_at
from testbed.vision import VisionModel, shared_inference_cache
from testbed.workflow import BindingError

__all__ = ["REFERENCE_DETECTOR_ENV", "VALIDATORS", "check_pseudo_ground_truth", "pseudo_boxes"]

REFERENCE_DETECTOR_ENV: Final = "TESTBED_REFERENCE_DETECTOR"
"""The environment variable naming the reference weights; unset, the check is off."""


@functools.cache
def _reference(path: str) -> VisionModel:
    return VisionModel(path, device="cpu", cache=shared_inference_cache())


def _reference_path() -> str | None:
    value = os.environ.get(REFERENCE_DETECTOR_ENV, "").strip()
    return value or None


def pseudo_boxes(record: RunRecord, model: VisionModel) -> tuple[Boxes, tuple[str, ...]]:
    """The reference model's canonical boxes on the run's scene, and their class names."""

    def compute() -> tuple[Boxes, tuple[str, ...]]:
        path = record.blobs.path(record.started.image_blob)
        if path is None:
            raise WeightsError(f"run {record.started.run}: scene image blob {record.started.image_blob} is missing")
        result = model.predict(load_image(path))
        return result.boxes_xyxy, tuple(result.label(i) for i in range(len(result)))

    return record.memo(("coords_pseudo.boxes", model.weights_sha256), compute)


def _labels(record: RunRecord, found: Produced) -> tuple[str, ...] | None:
    """The call's label per box, when its tool declares where they are and there is one per box."""
    truth = tool_truth(record, found.call)
    if truth is None or SemanticRole.CLASS_LABEL not in truth.paths:
        return None
    try:
        value = read_at(record.internalize(found.call.payload), truth.paths[SemanticRole.CLASS_LABEL])
    except (BindingError, *_READ_ERRORS):
        return None
    if not isinstance(value, list) or len(value) != len(found.boxes):
        return None
    return tuple(str(label) for label in value)


def check_pseudo_ground_truth(record: RunRecord) -> Iterator[Violation]:
    """``coords.pseudo_mismatch``: a call whose boxes agree with the reference model's (shared classes) far better
    in another convention than in its own. Off unless :data:`REFERENCE_DETECTOR_ENV` is set."""
    weights = _reference_path()
    if weights is None or record.started.ground_truth:
        return
    model = _reference(weights)
    reference, classes = pseudo_boxes(record, model)
    for found in produced_boxes(record):
        labels = _labels(record, found)
        boxes, pseudo = found.boxes, reference
        if labels is not None:
            shared = set(labels) & set(classes)
            if not shared:
                continue
            boxes = found.boxes[np.array([label in shared for label in labels], dtype=bool)]
            pseudo = reference[np.array([name in shared for name in classes], dtype=bool)]
        if len(boxes) == 0 or len(pseudo) == 0:
            continue
        shares = agreement(record, boxes, pseudo)
        own = float(shares[convention_index(found.convention)])
        best = int(np.argmax(shares))
        if shares[best] < MIN_AGREEMENT or shares[best] - own < AGREEMENT_GAIN:
            continue
        yield Violation(
            id="coords.pseudo_mismatch",
            run=record.started.run,
            server=found.call.server,
            node=found.call.node,
            item=found.call.item,
            detail=f"[no ground truth: pseudo ground truth from {Path(weights).name} "
            f"(sha256 {model.weights_sha256[:12]}), confidence {float(shares[best]):.2f}] {found.call.tool} read as "
            f"{found.convention} matches {own:.0%} of {len(boxes)} boxes to the reference model's "
            f"{len(pseudo)}, read as {CONVENTIONS[best]} {float(shares[best]):.0%}",
            evidence=(found.at,),
        )


VALIDATORS = (ValidatorSpec("coords.pseudo_mismatch", ("coords.pseudo_mismatch",), check_pseudo_ground_truth),)
