"""Parallel runs on one machine: worker processes, each with its own servers and models, one writer.

Each worker is a process started with the ``spawn`` context. It builds its own
:class:`Runner` (its own server pool, models loaded once), tells the parent its
servers and handshake, then executes the runs the parent hands it one at a time,
sending each finished run's events back. Blobs and sandbox files go straight to
the experiment directory (content-addressed blobs written atomically, one sandbox
folder per run); ``events.jsonl`` is written by the parent alone, run by run in
run-index order, so the log reads the same whatever the number of workers.

A worker that dies mid-run has that run retried once in a fresh worker; a run is
recorded only when its events reached the parent, so it is never recorded twice.
Workers die with the parent (``PR_SET_PDEATHSIG`` on Linux, and a check of the
parent between runs), so a killed experiment leaves no orphan behind. Each
worker's models get an equal share of the CPUs this process may use.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import anyio

from testbed._errors import TestbedError
from testbed.events import MessageEvent, ServerRecord
from testbed.orchestrator._pool import ServerPool
from testbed.orchestrator._run import RunOutcome
from testbed.orchestrator._runner import KILL_AT_VARIABLE, Runner, crash_point, execute_runs
from testbed.scenario import Scenario

__all__ = ["WORKERS_DIR", "RunnerFactory", "ServerDescriber", "available_cpus", "run_in_workers"]

WORKERS_DIR = "workers"
"""Each worker's scratch folder (its servers' logs) lies under this folder of the experiment directory."""
_POLL_S = 0.2
_GRACE_S = 1.0
_JOIN_S = 30.0

RunnerFactory = Callable[[Path], Runner]
"""Builds a worker's runner from its scratch folder; must pickle (a module-level function or a partial of one)."""
ServerDescriber = Callable[[ServerPool], list[ServerRecord]]
"""What the header records of a started pool's servers; must pickle."""


def available_cpus() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _Ready:
    worker: int
    servers: list[ServerRecord]
    handshake: list[MessageEvent]


@dataclass(frozen=True)
class _Done:
    worker: int
    run: int
    outcome: RunOutcome


@dataclass(frozen=True)
class _Failed:
    worker: int
    error: str


@dataclass
class _Worker:
    index: int
    process: SpawnProcess
    tasks: Any  # multiprocessing.Queue[tuple[int, int] | None]
    current: int | None = None
    ready: bool = False
    dead: bool = False
    gone: float | None = None
    """When the parent first saw the process gone (its last messages may still be in the queue)."""


def run_in_workers(
    scenario: Scenario,
    make_runner: RunnerFactory,
    describe: ServerDescriber,
    runs: list[int],
    *,
    workers: int,
    scratch: Path,
    on_ready: Callable[[list[ServerRecord], list[MessageEvent]], None],
    on_run: Callable[[int, RunOutcome], None],
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Execute ``runs`` in ``workers`` processes; call ``on_run`` for each in run-index order.

    Args:
        scenario: the resolved scenario.
        make_runner: builds each worker's runner from its scratch folder.
        describe: records a started pool's servers (for the header).
        runs: the run indices to execute.
        workers: how many worker processes (at least 1).
        scratch: under it, each worker's scratch folder.
        on_ready: called once, when the first worker's servers answered, before any ``on_run``.
        on_run: called with each run's outcome, in run-index order.
        on_progress: called with the number of runs finished so far (in any order).

    Raises:
        TestbedError: a worker failed (its servers could not start, a run raised), or one run's worker died twice.
    """
    context = multiprocessing.get_context("spawn")
    threads = max(1, available_cpus() // workers)  # each worker's share of the CPUs, for its models
    results: Any = context.Queue()
    pool: dict[int, _Worker] = {}
    pending = sorted(runs)
    order = list(pending)
    finished: dict[int, RunOutcome] = {}
    recorded: set[int] = set()
    attempts: dict[int, int] = {}
    written = 0
    announced = False

    def spawn(first: int | None = None) -> _Worker:
        index = len(pool)  # a worker enters the pool once started: indices stay dense
        tasks: Any = context.Queue()
        folder = scratch / f"worker-{index}"
        process = context.Process(
            target=_worker_main,
            args=(scenario, make_runner, describe, index, folder, tasks, results, os.getpid(), threads),
            name=f"testbed-worker-{index}",
            daemon=True,
        )
        worker = _Worker(index=index, process=process, tasks=tasks)
        process.start()
        pool[index] = worker
        if first is not None:
            assign(worker, first)
        return worker

    def assign(worker: _Worker, run: int | None) -> None:
        worker.current = run
        if run is None:
            worker.tasks.put(None)
            return
        worker.tasks.put((run, attempts.get(run, 0)))

    def next_run() -> int | None:
        return pending.pop(0) if pending else None

    def bury(worker: _Worker) -> None:
        worker.dead = True
        code = worker.process.exitcode
        run = worker.current
        if run is None:
            if not worker.ready:
                raise TestbedError(f"worker {worker.index} exited (code {code}) before its servers started")
            if pending:
                spawn()
            return
        attempts[run] = attempts.get(run, 0) + 1
        if attempts[run] > 1:
            raise TestbedError(f"run {run}: its worker died twice (exit code {code}); giving up")
        spawn(first=run)

    try:
        for _ in range(workers):
            spawn()
        while written < len(order):
            for worker in list(pool.values()):
                if worker.dead or worker.process.is_alive():
                    continue
                if worker.gone is None:
                    worker.gone = time.monotonic()  # read what it sent before it went, then bury it
                elif time.monotonic() - worker.gone > _GRACE_S:
                    bury(worker)
            try:
                message = results.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            worker = pool[message.worker]
            if worker.dead:
                continue  # a late word from a worker already given up for dead: its run is being retried
            if isinstance(message, _Failed):
                raise TestbedError(f"worker {worker.index}: {message.error}")
            if isinstance(message, _Ready):
                worker.ready = True
                if not announced:
                    announced = True
                    on_ready(message.servers, message.handshake)
                if worker.current is None:
                    assign(worker, next_run())
                continue
            if message.run != worker.current or message.run in finished or message.run in recorded:
                continue
            finished[message.run] = message.outcome
            if on_progress is not None:
                on_progress(len(finished) + len(recorded))
            assign(worker, next_run())
            while written < len(order) and order[written] in finished:
                run = order[written]
                on_run(run, finished.pop(run))
                recorded.add(run)
                written += 1
    finally:
        _stop(pool.values())
        results.close()
        results.cancel_join_thread()


def _stop(workers: Any) -> None:
    """Ask idle workers to finish, then make sure every one is gone."""
    for worker in workers:
        if worker.process.is_alive() and worker.current is None:
            with contextlib.suppress(Exception):
                worker.tasks.put(None)
    for worker in workers:
        worker.process.join(timeout=_JOIN_S if worker.current is None else 0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.tasks.close()
        worker.tasks.cancel_join_thread()


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this process when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(
    scenario: Scenario,
    make_runner: RunnerFactory,
    describe: ServerDescriber,
    index: int,
    scratch: Path,
    tasks: Any,
    results: Any,
    parent: int,
    threads: int,
) -> None:
    """A worker process: start the servers, then execute the runs the parent hands over until told to stop.

    Its models use ``threads`` CPU threads, its share of the machine, so workers do not oversubscribe it.
    """
    _die_with_parent()
    _limit_threads(threads)
    if os.getppid() != parent:
        return  # the parent died before the death signal was armed
    if not os.environ.get(KILL_AT_VARIABLE, "").startswith("worker-"):
        os.environ.pop(KILL_AT_VARIABLE, None)  # the creation steps are the parent's to crash at, not ours
    try:
        anyio.run(_work, scenario, make_runner, describe, index, scratch, tasks, results, parent)
    except BaseException as error:  # every failure goes to the parent, which raises it
        results.put(_Failed(worker=index, error=_describe_error(error)))


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _describe_error(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return str(error) if isinstance(error, TestbedError) else f"{error.__class__.__name__}: {error}"


async def _work(
    scenario: Scenario,
    make_runner: RunnerFactory,
    describe: ServerDescriber,
    index: int,
    scratch: Path,
    tasks: Any,
    results: Any,
    parent: int,
) -> None:
    def runs() -> Iterator[int]:
        while True:
            task = _next_task(tasks, parent)
            if task is None:
                return
            run, attempt = task
            if attempt == 0:
                crash_point(f"worker-run-{run}")  # test only: a worker that dies mid-run
            yield run

    def on_start(pool: ServerPool, log: object, handshake: list[MessageEvent]) -> None:
        results.put(_Ready(worker=index, servers=describe(pool), handshake=handshake))

    def on_run(run: int, outcome: RunOutcome, log: object) -> None:
        results.put(_Done(worker=index, run=run, outcome=outcome))

    scratch.mkdir(parents=True, exist_ok=True)
    await execute_runs(scenario, make_runner(scratch), runs(), on_start=on_start, on_run=on_run)


def _next_task(tasks: Any, parent: int) -> tuple[int, int] | None:
    while True:
        try:
            task: tuple[int, int] | None = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return None  # the parent is gone: nobody would record what we run
            continue
        return task
