"""Runs on a Ray cluster: ``testbed run --executor ray [--address ADDR]``.

Each worker is a Ray actor that holds its own :class:`Runner`: its servers, its
models loaded once, with a fractional ``num_gpus`` where the servers' device is
CUDA. Each run is a Ray task on one of those actors. The driver alone writes the
experiment directory, through the same :func:`run_in_workers` as local worker
processes: one writer, run by run in run-index order, a dead actor's run retried
once in a fresh actor.

Actors write blobs and sandbox files straight into the experiment directory, as
local workers do. On a cluster of several machines that directory must therefore
lie on a filesystem every node shares, at the same path: an actor works in the
driver's working directory and refuses to start on a node where the experiment
directory is not there. Ray is imported only here, and only when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Collection
from types import ModuleType, TracebackType
from typing import Any

import anyio

from testbed._errors import TestbedError
from testbed.orchestrator._runner import KILL_AT_VARIABLE
from testbed.orchestrator._workers import (
    Died,
    Failed,
    Ready,
    Task,
    WorkerMessage,
    WorkerSetup,
    describe_error,
    limit_threads,
    serve_runs,
)

__all__ = ["INSTALL_HINT", "RayExecutor", "import_ray"]

INSTALL_HINT = "pip install 'mcp-vision-testbed[ray]'"
_PROBE_S = 5.0
"""How long the address may take to accept a connection; ``ray.init`` itself would retry far longer."""
_GCS_S = 20.0
"""How long a listening address may take to answer as Ray's GCS (else ``ray.init`` retries for minutes)."""
_OBJECT_STORE_BYTES = 200 * 1024**2
"""A local cluster's object store: runs return only their events (blobs go to disk), so little is needed."""
_CPUS_PER_WORKER = 1
_JOIN_S = 30.0


def import_ray() -> ModuleType:
    """Ray, or a one-line error saying how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise TestbedError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class RayExecutor:
    """Workers as Ray actors; a context manager that connects (or starts a local cluster) and disconnects.

    Connecting fails within a bounded time, before anything is written, where nothing answers at ``address``.
    A Ray connection that already exists in this process is used as it is, and left open.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        """``address``: an existing cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``), or None to start a
        local one with ``num_cpus`` CPUs (None: all of this machine's)."""
        self.address = address
        self.num_cpus = num_cpus
        self._ray: ModuleType | None = None
        self._owned = False
        self._wants_token = False

    def __enter__(self) -> RayExecutor:
        ray = import_ray()
        if self.address is not None:
            _probe(self.address)
            self._wants_token = _probe_gcs(ray, self.address)
            if self._wants_token and os.environ.get("RAY_AUTH_MODE") != "token":
                raise TestbedError(self._token_hint())  # ray.init would retry without a token for half a minute
        if not ray.is_initialized():
            self._init(ray)
            self._owned = True
        self._ray = ray
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._owned and self._ray is not None:
            self._ray.shutdown()
        self._owned = False

    def _init(self, ray: ModuleType) -> None:
        try:
            if self.address is None:
                ray.init(
                    address="local",  # a new cluster, even where `ray start` left one running on this machine
                    num_cpus=self.num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    object_store_memory=_OBJECT_STORE_BYTES,
                )
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as error:  # Ray raises many kinds; each is one line for the user
            raise TestbedError(self._init_failure(error)) from None

    def _init_failure(self, error: Exception) -> str:
        if self.address is None:
            return f"cannot start a local Ray cluster ({_first_line(error)})"
        if self._wants_token:
            return self._token_hint()
        return f"--address {self.address}: cannot connect to a Ray cluster there ({_first_line(error)})"

    def _token_hint(self) -> str:
        return (
            f"--address {self.address}: the Ray cluster there asks for its token; give it as to any Ray driver "
            "(RAY_AUTH_MODE=token, and ~/.ray/auth_token or RAY_AUTH_TOKEN)"
        )

    def _connected(self) -> ModuleType:
        if self._ray is None:
            raise TestbedError("RayExecutor is used outside its `with` block: it is not connected")
        return self._ray

    def default_workers(self, runs_left: int) -> int:
        """One worker per CPU of the cluster."""
        return max(1, int(self._connected().cluster_resources().get("CPU", 1)))

    def pool(self, setup: WorkerSetup, workers: int) -> _ActorPool:
        ray = self._connected()
        options: dict[str, Any] = {"num_cpus": _CPUS_PER_WORKER, "max_restarts": 0}
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if setup.device.startswith("cuda") and gpus > 0:
            options["num_gpus"] = math.floor(min(1.0, gpus / workers) * 10_000) / 10_000  # Ray's resolution
        crash_at = os.environ.get(KILL_AT_VARIABLE, "")
        if crash_at.startswith("worker-"):  # test only: the run at which an actor kills itself
            options["runtime_env"] = {"env_vars": {KILL_AT_VARIABLE: crash_at}}
        return _ActorPool(ray, setup, options)


def _probe(address: str) -> None:
    """Fail fast where nothing accepts connections at ``address``."""
    if address == "auto":
        return  # the cluster this machine belongs to, found by Ray itself
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        raise TestbedError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_S):
            pass
    except OSError as error:
        reason = error.strerror or error.__class__.__name__
        raise TestbedError(
            f"--address {address}: no Ray cluster answers there ({reason}); start one with `ray start --head`, "
            "or leave --address out for a local one"
        ) from None


def _probe_gcs(ray: ModuleType, address: str) -> bool:
    """Fail within :data:`_GCS_S` where what listens at a ``HOST:PORT`` address is not Ray's GCS.

    The probe runs in a thread left behind on a timeout: Ray's client retries inside C++ and cannot be interrupted.

    Returns:
        Whether the GCS asked for the cluster's authentication token.
    """
    if address == "auto" or address.startswith("ray://"):
        return False  # found by Ray itself; a Ray Client server, not the GCS
    failure: list[BaseException] = []
    wants_token: list[bool] = []

    def probe() -> None:
        try:
            ray._raylet.GcsClient(address=address)
        except ray.exceptions.AuthenticationError:
            wants_token.append(True)  # Ray's GCS answered; ray.init brings the token, if this machine has it
        except Exception as error:
            failure.append(error)

    thread = threading.Thread(target=probe, name="testbed-ray-probe", daemon=True)
    thread.start()
    thread.join(_GCS_S)
    if thread.is_alive():
        raise TestbedError(
            f"--address {address}: something listens there, but no Ray cluster answered within {_GCS_S:.0f} s"
        )
    if failure:
        raise TestbedError(f"--address {address}: no Ray cluster answers there ({_first_line(failure[0])})")
    return bool(wants_token)


class _ActorPool:
    """Workers as Ray actors; each task handed out is an actor method call whose result the pool waits on."""

    def __init__(self, ray: ModuleType, setup: WorkerSetup, options: dict[str, Any]) -> None:
        self._ray = ray
        self._setup = setup
        self._actor_class = ray.remote(_ActorWorker).options(**options)
        self._actors: dict[int, Any] = {}
        self._waiting: dict[Any, int] = {}  # an unanswered call -> the worker it went to
        self._stopping: dict[int, Any] = {}
        self._ready: set[int] = set()
        """Workers whose servers answered (others may still wait for a place on the cluster)."""

    def start(self, worker: int) -> None:
        actor = self._actor_class.remote(self._setup, worker, os.getcwd(), _CPUS_PER_WORKER)
        self._actors[worker] = actor
        self._waiting[actor.ready.remote()] = worker

    def assign(self, worker: int, task: Task | None) -> None:
        actor = self._actors[worker]
        if task is None:
            self._stopping[worker] = actor.stop.remote()
        else:
            self._waiting[actor.run.remote(task)] = worker

    def receive(self, timeout: float) -> WorkerMessage | None:
        if not self._waiting:
            time.sleep(timeout)
            return None
        answered, _ = self._ray.wait(list(self._waiting), num_returns=1, timeout=timeout)
        if not answered:
            return None
        worker = self._waiting.pop(answered[0])
        try:
            message: WorkerMessage = self._ray.get(answered[0])
        except self._ray.exceptions.RayActorError as error:
            return Died(worker=worker, reason=f"died ({error.__class__.__name__})")
        except self._ray.exceptions.RayError as error:
            return Failed(worker=worker, error=_first_line(error))
        if isinstance(message, Ready):
            self._ready.add(worker)
        return message

    def close(self, busy: Collection[int]) -> None:
        for worker in self._ready - set(busy) - set(self._stopping):
            self._stopping[worker] = self._actors[worker].stop.remote()
        if self._stopping:
            self._ray.wait(list(self._stopping.values()), num_returns=len(self._stopping), timeout=_JOIN_S)
        for actor in self._actors.values():
            self._ray.kill(actor)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__


class _ActorWorker:
    """One worker as a Ray actor: a thread runs its servers and runs, so that they live across method calls."""

    def __init__(self, setup: WorkerSetup, worker: int, cwd: str, threads: int) -> None:
        self._tasks: queue.Queue[Task | None] = queue.Queue()
        self._messages: queue.Queue[WorkerMessage] = queue.Queue()
        self._thread = threading.Thread(
            target=self._serve, args=(setup, worker, cwd, threads), name=f"testbed-worker-{worker}", daemon=True
        )
        self._thread.start()

    def _serve(self, setup: WorkerSetup, worker: int, cwd: str, threads: int) -> None:
        try:
            _enter(cwd, setup)
            limit_threads(threads)
            anyio.run(serve_runs, setup, worker, self._tasks.get, self._messages.put)
        except BaseException as error:  # every failure goes to the driver, which raises it
            self._messages.put(Failed(worker=worker, error=describe_error(error)))

    def ready(self) -> WorkerMessage:
        """The servers answered (:class:`Ready`), or could not start (:class:`Failed`)."""
        return self._messages.get()

    def run(self, task: Task) -> WorkerMessage:
        """Execute one run: its :class:`Done`, or :class:`Failed`."""
        self._tasks.put(task)
        return self._messages.get()

    def stop(self) -> None:
        """Stop the servers once the current run is over."""
        self._tasks.put(None)
        self._thread.join(timeout=_JOIN_S)


def _enter(cwd: str, setup: WorkerSetup) -> None:
    """Work where the driver works; the experiment directory must be there (a shared filesystem)."""
    experiment = setup.scratch.parent
    with contextlib.suppress(OSError):  # checked below: the experiment directory is relative to it
        os.chdir(cwd)
    if not experiment.is_dir():
        raise TestbedError(
            f"{experiment.resolve()}: not on Ray node {socket.gethostname()}; on a cluster the experiment directory "
            "must lie on a filesystem every node shares, at the same path"
        )
