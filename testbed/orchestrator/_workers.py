"""Parallel runs: workers, each with its own servers and models, and one writer.

:func:`run_in_workers` is the writer's side, whatever runs the workers: it hands
the runs out one at a time, collects each finished run's events and calls
``on_run`` for them in run-index order, so the log reads the same whatever the
number of workers. A run is recorded only when its events reached the writer,
so it is never recorded twice; a worker that dies mid-run has that run retried
once in a fresh worker.

Where the workers run is an :class:`Executor`'s business. :class:`LocalProcesses`
(the default) starts processes with the ``spawn`` context; each builds its own
:class:`Runner` (its own server pool, models loaded once), tells the writer its
servers and handshake, then executes the runs it is handed. Blobs and sandbox
files go straight to the experiment directory (content-addressed blobs written
atomically, one sandbox folder per run). Workers die with the parent
(``PR_SET_PDEATHSIG`` on Linux, and a check of the parent between runs), so a
killed experiment leaves no orphan behind. Each worker's models get an equal
share of the CPUs this process may use.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, Protocol

import anyio

from testbed._errors import TestbedError
from testbed.events import MessageEvent, ServerRecord
from testbed.orchestrator._pool import ServerPool
from testbed.orchestrator._run import RunOutcome
from testbed.orchestrator._runner import KILL_AT_VARIABLE, Runner, crash_point, execute_runs
from testbed.scenario import Scenario

__all__ = [
    "RUNS_PER_DEFAULT_WORKER",
    "WORKERS_DIR",
    "Died",
    "Done",
    "Executor",
    "Failed",
    "LocalProcesses",
    "Ready",
    "RunnerFactory",
    "ServerDescriber",
    "Task",
    "WorkerMessage",
    "WorkerPool",
    "WorkerSetup",
    "available_cpus",
    "describe_error",
    "limit_threads",
    "run_in_workers",
    "serve_runs",
]

WORKERS_DIR = "workers"
"""Each worker's scratch folder (its servers' logs) lies under this folder of the experiment directory."""
RUNS_PER_DEFAULT_WORKER = 50
"""Runs that justify one more local worker by default: each worker process pays several seconds to import
and load its models, which a short experiment never earns back."""
_POLL_S = 0.2
_GRACE_S = 1.0
_JOIN_S = 30.0

RunnerFactory = Callable[[Path], Runner]
"""Builds a worker's runner from its scratch folder; must pickle (a module-level function or a partial of one)."""
ServerDescriber = Callable[[ServerPool], list[ServerRecord]]
"""What the header records of a started pool's servers; must pickle."""
Task = tuple[int, int]
"""A run handed to a worker: (run index, attempt), the attempt counting from 0."""


def available_cpus() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker is started with; it must pickle."""

    scenario: Scenario
    make_runner: RunnerFactory
    describe: ServerDescriber
    scratch: Path
    """Under it, each worker's scratch folder ``worker-N``."""
    device: str
    """The resolved compute device of the servers' models."""


@dataclass(frozen=True)
class Ready:
    """A worker's servers answered."""

    worker: int
    servers: list[ServerRecord]
    handshake: list[MessageEvent]


@dataclass(frozen=True)
class Done:
    """A worker finished a run."""

    worker: int
    run: int
    outcome: RunOutcome


@dataclass(frozen=True)
class Failed:
    """A worker raised: its servers could not start, or a run failed."""

    worker: int
    error: str


@dataclass(frozen=True)
class Died:
    """A worker is gone without a word (killed, crashed)."""

    worker: int
    reason: str
    """How it went, e.g. ``exited (code -9)``."""


WorkerMessage = Ready | Done | Failed | Died


class WorkerPool(Protocol):
    """Workers started by an executor, addressed by index (dense, from 0)."""

    def start(self, worker: int) -> None:
        """Start worker ``worker``; it answers :class:`Ready` (or :class:`Failed`, :class:`Died`)."""

    def assign(self, worker: int, task: Task | None) -> None:
        """Hand ``task`` to an idle worker; None tells it to finish."""

    def receive(self, timeout: float) -> WorkerMessage | None:
        """The next word from any worker, or None when there was none within ``timeout`` seconds."""

    def close(self, busy: Collection[int]) -> None:
        """Let idle workers finish, end the ``busy`` ones, and make sure every one is gone."""


class Executor(Protocol):
    """Where workers run: processes on this machine, or elsewhere (a Ray cluster)."""

    def default_workers(self, runs_left: int) -> int:
        """How many workers to start when none were asked for."""

    def pool(self, setup: WorkerSetup, workers: int) -> WorkerPool:
        """A pool for ``workers`` workers; none is started yet."""


@dataclass
class _Slot:
    """What the writer knows of one worker."""

    current: int | None = None
    ready: bool = False
    dead: bool = False


def run_in_workers(
    setup: WorkerSetup,
    runs: list[int],
    *,
    workers: int,
    on_ready: Callable[[list[ServerRecord], list[MessageEvent]], None],
    on_run: Callable[[int, RunOutcome], None],
    on_progress: Callable[[int], None] | None = None,
    executor: Executor | None = None,
) -> None:
    """Execute ``runs`` in ``workers`` workers; call ``on_run`` for each in run-index order.

    Args:
        setup: what each worker builds its runner from.
        runs: the run indices to execute.
        workers: how many workers (at least 1).
        on_ready: called once, when the first worker's servers answered, before any ``on_run``.
        on_run: called with each run's outcome, in run-index order.
        on_progress: called with the number of runs finished so far (in any order).
        executor: where the workers run (default: :class:`LocalProcesses`).

    Raises:
        TestbedError: a worker failed (its servers could not start, a run raised), or one run's worker died twice.
    """
    pool = (executor or LocalProcesses()).pool(setup, workers)
    slots: dict[int, _Slot] = {}
    pending = sorted(runs)
    order = list(pending)
    finished: dict[int, RunOutcome] = {}
    recorded: set[int] = set()
    attempts: dict[int, int] = {}
    written = 0
    announced = False

    def spawn(first: int | None = None) -> None:
        index = len(slots)
        slots[index] = _Slot()
        pool.start(index)
        if first is not None:
            assign(index, first)

    def assign(worker: int, run: int | None) -> None:
        slots[worker].current = run
        pool.assign(worker, None if run is None else (run, attempts.get(run, 0)))

    def bury(worker: int, reason: str) -> None:
        slot = slots[worker]
        slot.dead = True
        run = slot.current
        if run is None:
            if not slot.ready:
                raise TestbedError(f"worker {worker} {reason} before its servers started")
            if pending:
                spawn()
            return
        attempts[run] = attempts.get(run, 0) + 1
        if attempts[run] > 1:
            raise TestbedError(f"run {run}: its worker died twice ({reason}); giving up")
        spawn(first=run)

    try:
        for _ in range(workers):
            spawn()
        while written < len(order):
            message = pool.receive(_POLL_S)
            if message is None or slots[message.worker].dead:
                continue  # nothing yet, or a late word from a worker given up for dead: its run is being retried
            slot = slots[message.worker]
            if isinstance(message, Died):
                bury(message.worker, message.reason)
            elif isinstance(message, Failed):
                raise TestbedError(f"worker {message.worker}: {message.error}")
            elif isinstance(message, Ready):
                slot.ready = True
                if not announced:
                    announced = True
                    on_ready(message.servers, message.handshake)
                if slot.current is None:
                    assign(message.worker, pending.pop(0) if pending else None)
            elif message.run == slot.current and message.run not in finished and message.run not in recorded:
                finished[message.run] = message.outcome
                if on_progress is not None:
                    on_progress(len(finished) + written)
                assign(message.worker, pending.pop(0) if pending else None)
                while written < len(order) and order[written] in finished:
                    run = order[written]
                    on_run(run, finished.pop(run))
                    recorded.add(run)
                    written += 1
    finally:
        pool.close(busy={index for index, slot in slots.items() if not slot.dead and slot.current is not None})


async def serve_runs(
    setup: WorkerSetup,
    worker: int,
    next_task: Callable[[], Task | None],
    send: Callable[[WorkerMessage], None],
) -> None:
    """A worker's life, wherever it runs: start the servers, then execute the tasks ``next_task`` gives until None.

    Sends :class:`Ready` once the servers answered and :class:`Done` after each run.
    """
    if not os.environ.get(KILL_AT_VARIABLE, "").startswith("worker-"):
        os.environ.pop(KILL_AT_VARIABLE, None)  # the creation steps are the writer's to crash at, not a worker's

    def runs() -> Iterator[int]:
        while (task := next_task()) is not None:
            run, attempt = task
            if attempt == 0:
                crash_point(f"worker-run-{run}")  # test only: a worker that dies mid-run
            yield run

    def on_start(pool: ServerPool, log: object, handshake: list[MessageEvent]) -> None:
        send(Ready(worker=worker, servers=setup.describe(pool), handshake=handshake))

    def on_run(run: int, outcome: RunOutcome, log: object) -> None:
        send(Done(worker=worker, run=run, outcome=outcome))

    scratch = setup.scratch / f"worker-{worker}"
    scratch.mkdir(parents=True, exist_ok=True)
    await execute_runs(setup.scenario, setup.make_runner(scratch), runs(), on_start=on_start, on_run=on_run)


def describe_error(error: BaseException) -> str:
    """One line for a worker's failure: a testbed error's own message, else the exception's kind and message."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return str(error) if isinstance(error, TestbedError) else f"{error.__class__.__name__}: {error}"


def limit_threads(threads: int) -> None:
    """Give this worker's models ``threads`` CPU threads, its share, so workers do not oversubscribe the machine."""
    import torch

    torch.set_num_threads(threads)


class LocalProcesses:
    """Workers as processes on this machine (``spawn``), talking to the writer through queues."""

    def default_workers(self, runs_left: int) -> int:
        """The CPUs this process may use, but no more than one per :data:`RUNS_PER_DEFAULT_WORKER` runs left."""
        return min(available_cpus(), runs_left // RUNS_PER_DEFAULT_WORKER)

    def pool(self, setup: WorkerSetup, workers: int) -> _ProcessPool:
        return _ProcessPool(setup, threads=max(1, available_cpus() // workers))


@dataclass
class _Process:
    process: SpawnProcess
    tasks: Any  # multiprocessing.Queue[Task | None]
    reported: bool = False
    gone: float | None = None
    """When the pool first saw the process gone (its last messages may still be in the queue)."""


@dataclass
class _ProcessPool:
    setup: WorkerSetup
    threads: int
    context: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))
    processes: dict[int, _Process] = field(default_factory=dict)
    results: Any = None  # multiprocessing.Queue[WorkerMessage]

    def __post_init__(self) -> None:
        self.results = self.context.Queue()

    def start(self, worker: int) -> None:
        tasks: Any = self.context.Queue()
        process = self.context.Process(
            target=_worker_main,
            args=(self.setup, worker, tasks, self.results, os.getpid(), self.threads),
            name=f"testbed-worker-{worker}",
            daemon=True,
        )
        process.start()
        self.processes[worker] = _Process(process=process, tasks=tasks)

    def assign(self, worker: int, task: Task | None) -> None:
        self.processes[worker].tasks.put(task)

    def receive(self, timeout: float) -> WorkerMessage | None:
        for index, worker in self.processes.items():
            if worker.reported or worker.process.is_alive():
                continue
            if worker.gone is None:
                worker.gone = time.monotonic()  # read what it sent before it went, then report it
            elif time.monotonic() - worker.gone > _GRACE_S:
                worker.reported = True
                return Died(worker=index, reason=f"exited (code {worker.process.exitcode})")
        try:
            message: WorkerMessage = self.results.get(timeout=timeout)
        except queue.Empty:
            return None
        return message

    def close(self, busy: Collection[int]) -> None:
        for index, worker in self.processes.items():
            if worker.process.is_alive() and index not in busy:
                with contextlib.suppress(Exception):
                    worker.tasks.put(None)
        for index, worker in self.processes.items():
            worker.process.join(timeout=0 if index in busy else _JOIN_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.tasks.close()
            worker.tasks.cancel_join_thread()
        self.results.close()
        self.results.cancel_join_thread()


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this process when its parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(setup: WorkerSetup, worker: int, tasks: Any, results: Any, parent: int, threads: int) -> None:
    """A worker process: start the servers, then execute the runs the parent hands over until told to stop."""
    _die_with_parent()
    limit_threads(threads)
    if os.getppid() != parent:
        return  # the parent died before the death signal was armed
    try:
        anyio.run(serve_runs, setup, worker, lambda: _next_task(tasks, parent), results.put)
    except BaseException as error:  # every failure goes to the parent, which raises it
        results.put(Failed(worker=worker, error=describe_error(error)))


def _next_task(tasks: Any, parent: int) -> Task | None:
    while True:
        try:
            task: Task | None = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return None  # the parent is gone: nobody would record what we run
            continue
        return task
