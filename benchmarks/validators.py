"""Validation speed: ms per run of every registered validator over the v1 suite's scripted scenarios,
against the pre-issue-11 code path timed on the same runs in the same process.

Every scripted scenario of ``scenarios/v1`` is recorded in process (or reused from ``--dir``), its events are
read, and its runs are validated as ``testbed report`` and replay validate them (``validate_runs`` over
freshly cut runs; the events are read again for every repetition, so nothing cached on the events' objects
carries over). The best of ``--repeat`` repetitions is reported, for each code path:

- **now**: the validators as they are.
- **baseline**: the same validators on the pre-issue-11 code path, rebuilt here from the current code by
  switching its issue-11 machinery off: the two box-matching checks read one box in one convention at a
  time (:func:`infer_convention` and :func:`reads_as`, the per-box reference kept below, verbatim), nothing
  derived from a run, a server record, an experiment, a workflow or a schema is cached (``RunRecord.memo``,
  truth manifests, listings, what an experiment's runs share, workflow edges, payload paths, compiled JSON
  Schemas, mask grids), blob references are resolved by copying the whole value and reading each blob anew
  (no reader shared by the runs, no listing of the blob folder), every
  JSON Schema check runs jsonschema (no fast proof of validity, no check of arguments or results before
  their blobs are read), every mask is decoded to be counted (no counting from ``coco_rle`` run lengths, one
  run or all runs at once),
  and an image argument is read whole to look at its first bytes.

Both paths must find exactly the same violations and failures, or the benchmark fails: it doubles as a check
that the fast paths are exact. Goal: at most 2 ms/run now (issue 11), which against this baseline's
~14 ms/run on the 2-core reference machine is a speed-up of 7x (:data:`GOAL_SPEEDUP`); the quality tier
fails below half of it.

    .venv/bin/python benchmarks/validators.py [--runs 20] [--dir DIR] [--repeat 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from jsonschema import Draft202012Validator
from rich.console import Console
from rich.table import Table

from testbed.conventions import to_canonical
from testbed.events import BLOBS_DIR, BlobStore, Event, ExperimentFinished, internalize, read_events
from testbed.orchestrator import run_experiment
from testbed.protocol import ServerTruth
from testbed.scenario import load_scenario
from testbed.validators import (
    RunRecord,
    ValidatorSpec,
    Violation,
    _apply,
    _connection,
    _coords,
    _mask,
    _memory,
    _model,
    _payload,
    _schema,
    _workflow,
    registered_validators,
    split_runs,
    validate_runs,
)
from testbed.workflow import BoxAdapter, build_graph, graph_edges, read_path

SUITE = Path(__file__).resolve().parent.parent / "scenarios" / "v1"
GOAL_MS = 2.0
"""Issue 11: validation at most 2 ms per run on average over the v1 suite."""
GOAL_SPEEDUP = 7.0
"""The same goal as a ratio: the baseline takes ~14 ms/run over the suite on the 2-core reference machine."""


@dataclass(frozen=True)
class Measurement:
    runs: int
    """Runs validated per repetition (every scenario's together)."""
    experiments: int
    baseline_ms: float
    """Best ms/run of the pre-issue-11 code path."""
    ms: float
    """Best ms/run of the validators as they are."""

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.ms


def scripted_scenarios() -> list[Path]:
    """The v1 scenarios whose agent is scripted, by name."""
    return [path for path in sorted(SUITE.glob("*.yaml")) if load_scenario(path).agent.kind == "scripted"]


def record(directory: Path, runs: int, device: str = "cpu") -> list[Path]:
    """Record every scripted v1 scenario (``runs`` runs each, in process) under ``directory``, reusing any
    experiment already finished there; returns the experiment directories."""
    experiments = []
    for path in scripted_scenarios():
        out = directory / path.stem
        experiments.append(out)
        if (out / "events.jsonl").exists() and isinstance(read_events(out).events[-1], ExperimentFinished):
            continue
        scenario = load_scenario(path).model_copy(update={"runs": runs})

        async def main(scenario: Any = scenario, out: Path = out, path: Path = path) -> None:
            await run_experiment(scenario, out_dir=out, scenario_path=path, transport="inprocess", device=device)

        anyio.run(main)
    return experiments


Found = tuple[tuple[Violation, ...], tuple[Any, ...]]


def _validate_all(experiments: Sequence[Path], validators: Sequence[ValidatorSpec]) -> tuple[float, int, list[Found]]:
    """Seconds spent validating every experiment (events read outside the clock), runs, and what was found."""
    seconds, runs, found = 0.0, 0, []
    for directory in experiments:
        events: list[Event] = read_events(directory).events
        blobs = BlobStore(directory / BLOBS_DIR)
        started = time.perf_counter()
        result = validate_runs(split_runs(events, blobs), validators)
        seconds += time.perf_counter() - started
        runs += len(result.runs)
        found.append((result.violations, result.failures))
    return seconds, runs, found


def measure(runs: int = 20, directory: Path | None = None, repeat: int = 3, device: str = "cpu") -> Measurement:
    """Record (or reuse) the suite under ``directory`` (a temporary folder when ``None``) and time both paths.

    Raises:
        AssertionError: the two code paths found different violations or failures.
    """
    with ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="testbed-validators-bench-")))
        experiments = record(directory, runs, device)
        validators = registered_validators()
        baseline_validators = _baseline_validators(validators)
        now: list[float] = []
        before: list[float] = []
        for _ in range(repeat):
            seconds, count, found = _validate_all(experiments, validators)
            now.append(seconds)
            with _pre_issue_11():
                seconds, count, reference = _validate_all(experiments, baseline_validators)
            before.append(seconds)
            for directory_, (violations, failures), (expected, expected_failures) in zip(
                experiments, found, reference, strict=True
            ):
                assert violations == expected, f"{directory_.name}: violations differ from the baseline's"
                assert failures == expected_failures, f"{directory_.name}: failures differ from the baseline's"
        return Measurement(
            runs=count,
            experiments=len(experiments),
            baseline_ms=min(before) * 1000 / count,
            ms=min(now) * 1000 / count,
        )


# --- the pre-issue-11 code path ---------------------------------------------------------------------------


def _reference_mismatch(record: RunRecord) -> Iterator[Violation]:
    """``coords.mismatch`` as before issue 11: every box inferred on its own, one convention at a time."""
    size = _coords.image_size(record)
    truth_boxes = _coords.gt_boxes(record)
    for found in _coords.box_edges(record):
        readers: list[tuple[str, Any, Any]] = []
        if isinstance(found.edge.adapter, BoxAdapter):
            readers.append((f"adapter ({found.edge.adapter})", found.source, found.edge.adapter.from_))
        assert found.consumer_truth.box_convention is not None
        readers.append((f"{found.consumer.tool}", found.sent, found.consumer_truth.box_convention))
        detail = None
        for reader, boxes, expected in readers:
            for box in boxes:
                reading = _coords.infer_convention(box, size, truth_boxes)
                if reading is None:
                    continue
                if _coords.reads_as(box, expected, size, truth_boxes, reading.gt_index) < _coords.MATCH_IOU:
                    detail = f"value is {reading.convention} but {reader} reads {expected}"
                    break
            if detail is not None:
                break
        if detail is not None:
            yield _coords._violation(
                record,
                "coords.mismatch",
                found.consumer,
                f"edge {found.edge.source_node}.{found.edge.source_path} -> {found.edge.target_node}."
                f"{found.edge.target_arg}: {detail}",
                found.producer_at,
                found.consumer_at,
            )


def _reference_crop_misses_object(record: RunRecord) -> Iterator[Violation]:
    """``coords.crop_misses_object`` as before issue 11: every source box inferred on its own."""
    size = _coords.image_size(record)
    truth_boxes = _coords.gt_boxes(record)
    for found in _coords.box_edges(record):
        server = record.truth(found.consumer.server)
        if server is None or server.kind != "cropping" or found.consumer_truth.box_convention is None:
            continue
        crops = to_canonical(found.sent, found.consumer_truth.box_convention, size)
        for source, crop in zip(found.source, crops, strict=True):
            reading = _coords.infer_convention(source, size, truth_boxes)
            if reading is None:
                continue
            target = truth_boxes[reading.gt_index]
            coverage = _coords._coverage(crop, target)
            located = _coords._coverage(to_canonical(source.reshape(1, 4), reading.convention, size)[0], target)
            if coverage < _coords.CROP_COVERAGE * located:
                yield _coords._violation(
                    record,
                    "coords.crop_misses_object",
                    found.consumer,
                    f"crop {crop.round(1).tolist()} holds {coverage:.0%} of "
                    f"{record.started.ground_truth[reading.gt_index].class_name} {target.tolist()}",
                    found.producer_at,
                    found.consumer_at,
                )
                break


_REFERENCE_CHECKS: dict[str, Callable[[RunRecord], Iterator[Violation]]] = {
    "coords.mismatch": _reference_mismatch,
    "coords.crop_misses_object": _reference_crop_misses_object,
}


def _baseline_validators(validators: Sequence[ValidatorSpec]) -> list[ValidatorSpec]:
    replaced = [
        ValidatorSpec(spec.name, spec.emits, _REFERENCE_CHECKS[spec.name]) if spec.name in _REFERENCE_CHECKS else spec
        for spec in validators
    ]
    assert sum(spec.name in _REFERENCE_CHECKS for spec in validators) == len(_REFERENCE_CHECKS)
    return replaced


@contextmanager
def _pre_issue_11() -> Iterator[None]:
    """Switch off every cache and fast path issue 11 added (see the module docstring)."""

    def uncached(self: RunRecord, key: Any, compute: Callable[[], Any]) -> Any:
        return compute()

    def copied(self: RunRecord, value: Any) -> Any:
        return internalize(value, self.blobs)

    def edges(workflow: Any) -> list[Any]:
        return graph_edges(build_graph(workflow))

    patches: list[tuple[Any, str, Any]] = [
        (RunRecord, "memo", uncached),
        (RunRecord, "internalize", copied),
        (_model, "parsed_truth", lambda record: ServerTruth.model_validate(record.truth)),
        (_model, "per_server", lambda record, blobs, key, compute: compute()),
        (_model, "per_experiment", lambda record, key, compute: compute()),
        (_workflow, "edges_of", edges),
        (_connection, "edges_of", edges),
        (_schema, "_compiled_entry", lambda schema: (schema, Draft202012Validator(schema), None, None)),
        (_schema, "_readable", lambda record, raw: record.internalize(raw)),
        (_mask, "_grids_of", lambda record, payload, encoding: _mask.mask_grids(payload, encoding)),
        (_mask, "coco_rle_runs", lambda payload, size: None),
        (_mask, "_gather", lambda record, call, truth, payload, gathered: None),
        (_payload, "_stored_image_head", lambda record, arguments, argument: None),
        (_schema, "_readable_keys", lambda record, raw: False),
        (_apply, "share_blob_readers", lambda records: None),
        *((module, "read_at", read_path) for module in (_workflow, _memory)),
    ]
    saved = []
    for owner, name, replacement in patches:
        assert hasattr(owner, name), f"{owner.__name__}.{name} is gone: update the baseline"
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per scenario when recording")
    parser.add_argument("--dir", type=Path, default=None, help="record here, or reuse what is recorded here")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    result = measure(args.runs, args.dir, args.repeat, args.device)
    table = Table(title=f"validation of {result.runs} runs ({result.experiments} scripted v1 scenarios), best of "
                  f"{args.repeat}")  # fmt: skip
    for column in ("code path", "ms/run", "speed-up"):
        table.add_column(column, justify="right" if column != "code path" else "left")
    table.add_row("baseline (pre-issue-11 code path)", f"{result.baseline_ms:.2f}", "1x")
    goal = f"{result.speedup:.1f}x (goal >= {GOAL_SPEEDUP:g}x, <= {GOAL_MS:g} ms/run)"
    table.add_row("now", f"{result.ms:.2f}", goal)
    Console().print(table)


if __name__ == "__main__":
    main()
