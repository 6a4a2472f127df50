"""Convention checks without ground truth (issue 15, item 4): recall on faulted runs, flags on clean runs.

Real photographs carry no labels, so ``coords.mismatch`` never fires on them. This runs scripted experiments
(in process) over real photographs: the Ultralytics sample images and a folder of other photographs the
installed packages ship (matplotlib's ``grace_hopper.jpg``, scikit-learn's ``china.jpg`` and
``flower.jpg``), each also cut into its left and top halves (``--no-crops``: the photographs alone), or
``--folder DIR`` instead. The shipped models are trained on synthetic shapes; on photographs they still
return boxes, deterministically, and that is all the evidence needs: a fault transforms the server's output,
and the checks must find it from the boxes alone, with no labels.

Conditions (every photograph is one run of each):

- **clean**: ``detect-xyxy`` called twice on the image (``detect``, ``detect_again``) and ``segment-rle`` once
  (its mask boxes); ``detect-xyxy -> crop`` (the parametric cropper, same convention); ``detect-xyxy``,
  ``detect-cxcywh`` and ``detect-yxyx`` (three conventions, each read in its own) and ``segment-rle``.
- **flip_convention** to each of several conventions, and **change_units** to normalized and per-mille, on
  every ``detect-xyxy`` call, and on ``detect_again`` only (the convention changes mid-run).
- **incompatible pairs**: ``detect-xyxy -> crop-xywh`` and ``detect-xyxy -> crop-handle`` (normalized) with no
  adapter.

A faulted run counts as caught when any ground-truth-free ID fires in it (:data:`GT_FREE_IDS`); a clean run
counts as flagged when any does. Goal: recall >= 0.95 on faulted runs, 0 flags on clean runs.

A second table splits the findings by evidence kind (the ``[no ground truth: KIND, ...]`` tag), with a row for
pseudo ground truth: ``coords.pseudo_mismatch`` against a reference model (``--reference``, the shipped
detector by default; ``--reference none`` leaves it out). It is reported on its own, not in the goal, since it
is only as good as the reference model.

    .venv/bin/python benchmarks/gt_free.py [--folder DIR] [--no-crops] [--device cpu] [--reference PATH|none]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import cv2
import yaml
from rich.console import Console
from rich.table import Table

from testbed.events import BLOBS_DIR, BlobStore, read_events
from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario
from testbed.scenes import packaged_images
from testbed.validators import VALIDATORS, split_runs, validate_runs
from testbed.validators._coords_pseudo import REFERENCE_DETECTOR_ENV
from testbed.vision import shipped_weights

GT_FREE_IDS = (
    "coords.inconsistent_convention",
    "coords.producers_disagree",
    "coords.implausible_boxes",
    "coords.edge_disagrees",
)
GOAL_RECALL = 0.95
FLIPS = ("xywh/pixel", "cxcywh/pixel", "xyxy/pixel/yx", "xyxy/normalized", "xywh/pixel/xy/bottom_left")
UNITS = ("normalized", "per_mille")


def own_photographs() -> list[Path]:
    """Photographs the installed packages ship besides Ultralytics' (those present)."""
    found = []
    for package, relative in (
        ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
        ("sklearn", "datasets/images/china.jpg"),
        ("sklearn", "datasets/images/flower.jpg"),
    ):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            path = Path(spec.origin).parent / relative
            if path.exists():
                found.append(path)
    return found


def photo_folder(target: Path, sources: Sequence[Path], *, crops: bool) -> int:
    """Write the photographs (and their left and top halves) to ``target``; how many images."""
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for source in sources:
        image = cv2.imread(str(source))
        if image is None:
            continue
        height, width = image.shape[:2]
        parts = {"": image}
        if crops:
            parts |= {"-left": image[:, : width // 2], "-top": image[: height // 2]}
        for suffix, part in parts.items():
            cv2.imwrite(str(target / f"{source.stem}{suffix}.png"), part)
            count += 1
    return count


@dataclass(frozen=True)
class Condition:
    name: str
    fault_kind: str
    """``clean``, ``flip_convention``, ``change_units`` or ``incompatible``."""
    servers: dict[str, Any]
    nodes: list[dict[str, Any]]
    faults: list[dict[str, Any]]


def _detect_segment(faults: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    servers = {"det": {"server": "detect-xyxy"}, "seg": {"server": "segment-rle"}}
    nodes = [
        {"id": "detect", "call": "det.detect", "args": {"image": "$scene.image"}},
        {"id": "detect_again", "call": "det.detect", "args": {"image": "$scene.image"}},
        {"id": "segment", "call": "seg.segment", "args": {"image": "$scene.image"}},
    ]
    return servers, nodes


def _crop(cropper: str, call: str, args: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    servers = {"det": {"server": "detect-xyxy"}, "crop": {"server": cropper}}
    nodes: list[dict[str, Any]] = [{"id": "detect", "call": "det.detect", "args": {"image": "$scene.image"}}]
    nodes += [{"id": "put", "call": "crop.put_image", "args": {"image_b64": "$scene.image"}}] if "put" in args else []
    crop_args = {key: value for key, value in args.items() if key != "put"}
    nodes.append({"id": "crop", "call": call, "for_each": "$detect.detections", "args": crop_args})
    return servers, nodes


def conditions() -> list[Condition]:
    found = []
    servers, nodes = _detect_segment([])
    found.append(Condition("clean: detect x2 + segment", "clean", servers, nodes, []))
    servers, nodes = _crop("crop", "crop.crop", {"image": "$scene.image", "box": "$item.bbox"})
    found.append(Condition("clean: detect -> crop", "clean", servers, nodes, []))
    servers = {
        "xyxy": {"server": "detect-xyxy"},
        "cxcywh": {"server": "detect-cxcywh"},
        "yxyx": {"server": "detect-yxyx"},
        "seg": {"server": "segment-rle"},
    }
    nodes = [
        {"id": "xyxy", "call": "xyxy.detect", "args": {"image": "$scene.image"}},
        {"id": "cxcywh", "call": "cxcywh.detect_objects", "args": {"image_base64": "$scene.image"}},
        {"id": "yxyx", "call": "yxyx.locate_objects", "args": {"image_b64": "$scene.image"}},
        {"id": "segment", "call": "seg.segment", "args": {"image": "$scene.image"}},
    ]
    found.append(Condition("clean: 3 detectors in 3 conventions + segment", "clean", servers, nodes, []))
    target = {"server": "det", "tool": "detect", "role": "bounding_box"}
    for to in FLIPS:
        for only in (None, ["detect_again"]):
            fault: dict[str, Any] = {"kind": "flip_convention", "to": to, "target": target}
            where = "every call" if only is None else "detect_again"
            if only is not None:
                fault["nodes"] = only
            servers, nodes = _detect_segment([fault])
            found.append(Condition(f"flip to {to} ({where})", "flip_convention", servers, nodes, [fault]))
    for units in UNITS:
        for only in (None, ["detect_again"]):
            fault = {"kind": "change_units", "to_units": units, "target": target}
            where = "every call" if only is None else "detect_again"
            if only is not None:
                fault["nodes"] = only
            servers, nodes = _detect_segment([fault])
            found.append(Condition(f"units to {units} ({where})", "change_units", servers, nodes, [fault]))
    servers, nodes = _crop("crop-xywh", "crop.crop", {"image": "$scene.image", "box": "$item.bbox"})
    found.append(Condition("detect-xyxy -> crop-xywh", "incompatible", servers, nodes, []))
    servers, nodes = _crop(
        "crop-handle", "crop.crop_image", {"put": True, "handle": "$put.handle", "box": "$item.bbox"}
    )
    found.append(Condition("detect-xyxy -> crop-handle", "incompatible", servers, nodes, []))
    return found


def scenario_document(condition: Condition, folder: Path, runs: int) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "gt-free",
        "version": 1,
        "description": condition.name,
        "seed": 0,
        "runs": runs,
        "scene": {"images": {"folder": str(folder)}},
        "servers": condition.servers,
        "task": {"kind": "none"},
        "agent": {"kind": "scripted", "workflow": {"nodes": condition.nodes}},
    }
    if condition.faults:
        document["faults"] = condition.faults
    return document


@dataclass(frozen=True)
class Outcome:
    condition: Condition
    runs: int
    flagged: int
    ids: Counter[str]
    by_evidence: dict[str, set[int]]
    """Evidence kind -> the runs it flagged."""


_EVIDENCE = re.compile(r"^\[no ground truth: ([^,(]+?)(?: from [^,]*)?, confidence")


def evidence_kind(detail: str) -> str:
    """The evidence kind a ground-truth-free finding's detail names (``pseudo ground truth``, not its weights)."""
    match = _EVIDENCE.match(detail)
    return match.group(1).strip() if match else "?"


def measure_condition(condition: Condition, folder: Path, runs: int, work: Path, device: str) -> Outcome:
    path = work / f"{abs(hash(condition.name))}.yaml"
    path.write_text(yaml.safe_dump(scenario_document(condition, folder, runs)))
    out = work / path.stem
    scenario = load_scenario(path)

    async def main() -> None:
        await run_experiment(scenario, out_dir=out, scenario_path=path, transport="inprocess", device=device)

    anyio.run(main)
    records = split_runs(read_events(out).events, BlobStore(out / BLOBS_DIR))
    result = validate_runs(records, VALIDATORS)
    if result.failures:
        raise RuntimeError(f"{condition.name}: validator failures {result.failures}")
    flagged_runs = {v.run for v in result.violations if v.id in GT_FREE_IDS}
    ids = Counter(v.id for v in result.violations if v.id in GT_FREE_IDS)
    by_evidence: dict[str, set[int]] = {}
    for violation in result.violations:
        if violation.id in (*GT_FREE_IDS, "coords.pseudo_mismatch") and violation.run is not None:
            by_evidence.setdefault(evidence_kind(violation.detail), set()).add(violation.run)
    return Outcome(condition, len(records), len(flagged_runs), ids, by_evidence)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--folder", type=Path, default=None, help="photographs to use instead of the default set")
    parser.add_argument("--no-crops", action="store_true", help="the photographs alone, not their halves too")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", default=None, help="reference weights for pseudo ground truth, or 'none'")
    args = parser.parse_args(argv)
    if args.reference != "none":
        os.environ[REFERENCE_DETECTOR_ENV] = str(args.reference or shipped_weights("detect"))
    console = Console()
    with tempfile.TemporaryDirectory(prefix="gt-free-") as temporary:
        work = Path(temporary)
        sources = (
            sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if args.folder is not None
            else [*packaged_images().values(), *own_photographs()]
        )
        folder = work / "photos"
        runs = photo_folder(folder, sources, crops=not args.no_crops)
        console.print(f"{runs} images from {len(sources)} photographs: {', '.join(p.name for p in sources)}")
        outcomes = [measure_condition(c, folder, runs, work, args.device) for c in conditions()]
    table = Table(title="ground-truth-free convention checks on real photographs")
    for column in ("condition", "fault kind", "runs", "flagged", "rate", "IDs"):
        table.add_column(column)
    for outcome in outcomes:
        rate = outcome.flagged / outcome.runs if outcome.runs else float("nan")
        ids = ", ".join(f"{key.removeprefix('coords.')} {count}" for key, count in sorted(outcome.ids.items()))
        table.add_row(
            outcome.condition.name,
            outcome.condition.fault_kind,
            str(outcome.runs),
            str(outcome.flagged),
            f"{rate:.2f}",
            ids,
        )
    console.print(table)
    summary = Table(title="per fault kind")
    for column in ("fault kind", "runs", "flagged", "recall / flag rate"):
        summary.add_column(column)
    passed = True
    for kind in ("flip_convention", "change_units", "incompatible", "clean"):
        mine = [o for o in outcomes if o.condition.fault_kind == kind]
        runs_total = sum(o.runs for o in mine)
        flagged = sum(o.flagged for o in mine)
        rate = flagged / runs_total if runs_total else float("nan")
        summary.add_row(kind, str(runs_total), str(flagged), f"{rate:.3f}")
        passed &= (flagged == 0) if kind == "clean" else rate >= GOAL_RECALL
    console.print(summary)
    console.print(_evidence_table(outcomes))
    console.print(f"goal (recall >= {GOAL_RECALL} faulted, 0 flags clean): {'met' if passed else 'NOT met'}")
    return 0 if passed else 1


def _evidence_table(outcomes: Sequence[Outcome]) -> Table:
    kinds = ("flip_convention", "change_units", "incompatible", "clean")
    table = Table(title="runs flagged per evidence kind (recall on faulted kinds, flag rate on clean)")
    table.add_column("evidence")
    for kind in kinds:
        table.add_column(kind)
    evidence = sorted({name for outcome in outcomes for name in outcome.by_evidence})
    for name in evidence:
        cells = []
        for kind in kinds:
            mine = [o for o in outcomes if o.condition.fault_kind == kind]
            total = sum(o.runs for o in mine)
            flagged = sum(len(o.by_evidence.get(name, ())) for o in mine)
            cells.append(f"{flagged}/{total} ({flagged / total:.2f})" if total else "-")
        table.add_row(name, *cells)
    return table


if __name__ == "__main__":
    sys.exit(main())
