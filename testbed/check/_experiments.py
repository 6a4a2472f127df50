"""The experiments of an accuracy measurement: run here one after another, or spread over worker processes.

Every experiment of a measurement runs the same seeded scenes, so each process computes the scenes'
inferences once and keeps them (:func:`scenes_kept_in_the_inference_cache`).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass

from testbed._errors import TestbedError
from testbed.check._runner import RunResult, run_and_validate
from testbed.scenario import Scenario
from testbed.vision import shared_inference_cache

Runner = Callable[[str, Scenario], RunResult]
"""Runs and validates one named experiment of an accuracy measurement."""


@dataclass(frozen=True)
class Experiment:
    """One experiment of a measurement."""

    name: str
    """``baseline``, ``baseline-short`` or the fault kind: what the runner is given, and the result's key."""
    variant: Scenario
    line: str
    """The progress line."""
    short_deadline: bool = False
    """Whether its calls have the measurement's short deadline (so a call that computes an inference may pass it)."""


_cache_lock = threading.Lock()
_cache_holders = 0
_cache_entries_before = 0


@contextmanager
def scenes_kept_in_the_inference_cache() -> Iterator[None]:
    """While the block runs, the shared inference cache is bounded by its bytes only, not by its entry count.

    An accuracy measurement runs the same scenes once per experiment, about two inferences a run (detection
    and segmentation). From about 128 runs on, the cache's default entry bound evicted each scene's results
    before the next experiment asked for them (one pass after another is the worst case for a
    least-recently-used cache), so every experiment computed every inference again. The byte bound still holds.
    A cache with caching turned off (no entries) stays off. The entry bound is put back when the last
    overlapping block ends; entries beyond it go at the cache's next insertion.
    """
    global _cache_holders, _cache_entries_before
    cache = shared_inference_cache()
    with _cache_lock:
        if _cache_holders == 0:
            _cache_entries_before = cache.max_entries
            if cache.max_entries > 0:
                cache.max_entries = sys.maxsize
        _cache_holders += 1
    try:
        yield
    finally:
        with _cache_lock:
            _cache_holders -= 1
            if _cache_holders == 0:
                cache.max_entries = _cache_entries_before


def default_runner(device: str) -> Runner:
    """Run and validate each experiment into a temporary directory (it pickles, for worker processes)."""
    return functools.partial(_run_and_validate, device)


def _run_and_validate(device: str, _name: str, variant: Scenario) -> RunResult:
    return run_and_validate(variant, device=device)


def run_experiments(
    experiments: Sequence[Experiment],
    run: Runner,
    *,
    warm_up: Scenario,
    device: str,
    workers: int = 1,
    progress: Callable[[str], None] | None = None,
) -> Iterator[tuple[Experiment, RunResult]]:
    """Run and validate each experiment, yielding it with its result: here in the given order, or in
    ``workers`` processes as each one finishes.

    Here, ``progress`` gets each experiment's line before it runs; in workers, as each one finishes.
    A worker, before its first short-deadline experiment, runs ``warm_up`` (the fault-free runs with their
    own deadlines; its result is dropped) unless it ran the ``baseline`` experiment already: so no call under
    the short deadline computes an inference, as none does here, where the baseline runs first.

    Raises:
        TestbedError: ``workers`` is below 1, or ``run`` does not pickle while ``workers`` is above 1;
            and whatever an experiment raises.
    """
    if workers < 1:
        raise TestbedError(f"workers must be at least 1, not {workers}")
    if workers == 1:
        with scenes_kept_in_the_inference_cache():
            for experiment in experiments:
                if progress is not None:
                    progress(experiment.line)
                yield experiment, run(experiment.name, experiment.variant)
        return
    try:
        pickle.dumps(run)
    except (pickle.PicklingError, AttributeError, TypeError) as error:  # how a local or lambda refuses
        raise TestbedError(
            f"with {workers} workers the accuracy runner must pickle (a module-level function): {error}"
        ) from error
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(max(1, _cpus() // workers),),
    ) as pool:
        pending: dict[Future[RunResult], Experiment] = {
            pool.submit(_run_in_worker, run, experiment, warm_up, device): experiment for experiment in experiments
        }
        try:
            for future in as_completed(pending):
                experiment = pending.pop(future)
                result = future.result()
                if progress is not None:
                    progress(experiment.line)
                yield experiment, result
        finally:  # an experiment failed, or the caller stopped: the ones not started yet never start
            for future in pending:
                future.cancel()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_scenes_inferred = False
"""In a worker: whether the fault-free runs ran in this process, so its cache holds every scene's inferences."""


def _start_worker(threads: int) -> None:
    """A worker process: its share of the CPUs for the models, and every scene kept in its inference cache."""
    import torch

    torch.set_num_threads(threads)
    cache = shared_inference_cache()
    if cache.max_entries > 0:
        cache.max_entries = sys.maxsize  # the process ends with the measurement


def _run_in_worker(run: Runner, experiment: Experiment, warm_up: Scenario, device: str) -> RunResult:
    global _scenes_inferred
    if experiment.short_deadline and not _scenes_inferred:
        run_and_validate(warm_up, device=device)
        _scenes_inferred = True
    result = run(experiment.name, experiment.variant)
    _scenes_inferred = _scenes_inferred or experiment.name == "baseline"
    return result
