"""The one runner behind recording and replaying: servers from a resolver, the agent, run after run.

Recording and offline replay differ only in what they pass in: the server
resolver (live servers or recordings), the fault hook (inject, or only decide
again), the scene of each run (drawn, or read back), the agent's model
clients, deadlines, and what happens to each run's events.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from testbed._gc import kept_objects_unscanned
from testbed.agent import ModelEvents
from testbed.defenses import DefenseGuard
from testbed.events import EventLog, FaultEvent, MessageEvent, externalize
from testbed.faults import FaultPlan
from testbed.orchestrator._agents import build_agent
from testbed.orchestrator._pool import ServerPool
from testbed.orchestrator._resolvers import ServerResolver
from testbed.orchestrator._run import DeadlineOverride, RunOutcome, TaskChecker, execute_run
from testbed.scenario import Scenario
from testbed.scenes import Scene
from testbed.transport import Hook, current_call

__all__ = ["KILL_AT_VARIABLE", "FaultHookFactory", "Runner", "crash_point", "execute_runs"]

KILL_AT_VARIABLE = "TESTBED_TEST_KILL_AT"
"""Test only: names the creation step (``sandbox``, ``servers``, ``blobs``, ``header``) at which
:func:`crash_point` SIGKILLs the process, so tests can check that every step is crash safe; or
``worker-run-N``: a worker process SIGKILLs itself on the first attempt of run N."""


def crash_point(step: str) -> None:
    """Test only: SIGKILL this process here when ``TESTBED_TEST_KILL_AT`` names ``step``; otherwise nothing."""
    if os.environ.get(KILL_AT_VARIABLE) == step:
        os.kill(os.getpid(), signal.SIGKILL)


FaultHookFactory = Callable[[FaultPlan, str, ServerPool, list[FaultEvent]], Callable[[], Hook]]
"""Makes, for one alias, the factory of its connections' fault hooks."""

SceneOf = Callable[[int], tuple[Scene, bytes | None]]
"""A run's scene, with its PNG bytes when they are already encoded (replay reads them back)."""


@dataclass(frozen=True)
class Runner:
    """What a recording or a replay passes to :func:`execute_runs`."""

    resolve: ServerResolver
    fault_hook: FaultHookFactory
    scene_of: SceneOf
    models: ModelEvents
    check_task: TaskChecker
    log_dir: Path
    """Where the event log (and its blobs) is written."""
    sandbox: Path
    """The only folder servers touch; one subfolder per run."""
    servers_dir: Path
    """Where the servers' stderr logs go."""
    device: str
    deadline_override: DeadlineOverride | None = None
    blobs_dir: Path | None = None
    """Where blobs go when not under ``log_dir`` (a worker process writes into its experiment's blob store)."""
    shown_sandbox: Path | None = None
    """Where the agent is told the sandbox is, when not at ``sandbox``: replay shows the recorded paths."""


async def execute_runs(
    scenario: Scenario,
    runner: Runner,
    runs: Iterable[int],
    *,
    on_start: Callable[[ServerPool, EventLog, list[MessageEvent]], None],
    on_run: Callable[[int, RunOutcome, EventLog], None],
    on_finish: Callable[[EventLog], None] | None = None,
) -> None:
    """Start the scenario's servers, then execute ``runs`` one after another.

    Args:
        scenario: the resolved scenario.
        runner: what differs between recording and replay.
        runs: the run indices to execute, in order.
        on_start: called once the servers answered, with their handshake messages (externalized); a log
            that does not exist yet must be created here (:meth:`EventLog.create`).
        on_run: called with each run's outcome as soon as it is complete.
        on_finish: called after the last run, with the log still open.

    Raises:
        TestbedError: a server cannot be resolved or started.
    """
    plan = FaultPlan(list(scenario.faults), seed=scenario.seed)
    fault_events: list[FaultEvent] = []
    pool = ServerPool(out_dir=runner.servers_dir, sandbox=runner.sandbox, device=runner.device)
    pool.defenses = DefenseGuard(scenario.defenses, scenario.agent.grants)
    for spec in runner.resolve(scenario).values():
        hook = runner.fault_hook(plan, spec.alias, pool, fault_events) if plan.faults else None
        pool.add(spec, fault_hook=hook)
    runner.sandbox.mkdir(parents=True, exist_ok=True)
    crash_point("sandbox")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(pool)
        await pool.start_all()
        stack.enter_context(kept_objects_unscanned())  # modules, servers and their loaded models
        crash_point("servers")
        log = EventLog(runner.log_dir, blobs_dir=runner.blobs_dir)
        stack.callback(log.close)
        crash_point("blobs")
        handshake = [
            event.model_copy(update={"message": externalize(event.message, log.blobs)})
            for recorder in pool.recorders.values()
            for event in recorder.take(None)
        ]
        on_start(pool, log, handshake)
        agent = build_agent(scenario, runner.models)
        for run in runs:
            token = current_call.set(None)  # each run starts outside any call
            try:
                scene, png = runner.scene_of(run)
                outcome = await execute_run(
                    run,
                    scene=scene,
                    scene_png=png,
                    agent=agent,
                    pool=pool,
                    sandbox=runner.sandbox,
                    blobs=log.blobs,
                    default_deadline_s=scenario.deadline_s,
                    check_task=runner.check_task,
                    fault_events=fault_events,
                    deadline_override=runner.deadline_override,
                    model_events=runner.models.take_run,
                    shown_sandbox=runner.shown_sandbox,
                )
            finally:
                current_call.reset(token)
            log.blobs.sync()  # before a writer in another process can record the run
            on_run(run, outcome, log)
        if on_finish is not None:
            on_finish(log)
