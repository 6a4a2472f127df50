"""What agents hold: a live backend behind a recorder, or a replay of the recording that needs no model.

Requests are numbered per (run, agent) (:class:`~testbed.events.RunEventBuffer`),
so several agents of one run may ask concurrently and their records still line
up with a replay's, whatever order the scheduler picked.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from testbed._errors import TestbedError
from testbed.events import LLMEvent, RunEventBuffer
from testbed.llm._types import LLMBackend, LLMError, LLMFailure, LLMReply, LLMRequest

OK = "ok"
"""The outcome of a request that got a reply."""

_FAILURES = frozenset(failure.value for failure in LLMFailure)

REPLAY_BACKEND = "replay"
"""The backend named in a replay's event for a request that has no recorded counterpart."""


class RecordingLLM(RunEventBuffer[LLMEvent]):
    """Passes each request to ``backend`` and records it, with its reply or its failure, as an LLMEvent."""

    def __init__(self, backend: LLMBackend) -> None:
        super().__init__()
        self.backend = backend

    async def complete(self, request: LLMRequest, *, run: int, agent: str) -> LLMReply:
        """Answer ``request`` for ``agent`` in ``run`` through the backend, recording it.

        Raises:
            LLMError: the backend's failure, recorded and re-raised.
        """
        seq = self.number(run, agent)
        start = time.perf_counter()
        try:
            reply = await self.backend.complete(request)
        except LLMError as error:
            self.keep(
                _event(
                    run,
                    agent,
                    seq,
                    request,
                    backend=self.backend.name,
                    model=self.backend.model,
                    started=start,
                    outcome=error.failure.value,
                    error=error.detail,
                )
            )
            raise
        self.keep(
            _event(
                run,
                agent,
                seq,
                request,
                backend=self.backend.name,
                model=reply.model,
                started=start,
                outcome=OK,
                reply=reply.text,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
            )
        )
        return reply


class ReplayLLM(RunEventBuffer[LLMEvent]):
    """Answers each request with the recorded reply (or failure) at the same (run, agent, seq); no model runs.

    Each request is recorded again as it was actually made, so a replay whose
    agent asked something different shows up as an event whose ``request``
    differs from the recording's.
    """

    def __init__(self, events: Iterable[LLMEvent]) -> None:
        """
        Raises:
            TestbedError: two events share a (run, agent, seq), or an event's outcome is unknown.
        """
        super().__init__()
        self._recorded: dict[tuple[int, str, int], LLMEvent] = {}
        for event in events:
            key = (event.run, event.agent, event.seq)
            where = f"run {event.run} agent {event.agent!r} request {event.seq}"
            if key in self._recorded:
                raise TestbedError(f"replay: {where} is recorded twice")
            if event.outcome == OK:
                if event.reply is None:
                    raise TestbedError(f"replay: {where} succeeded but has no recorded reply")
            elif event.outcome not in _FAILURES:
                raise TestbedError(f"replay: {where} has unknown outcome {event.outcome!r}")
            self._recorded[key] = event

    async def complete(self, request: LLMRequest, *, run: int, agent: str) -> LLMReply:
        """The recorded reply to the ``agent``'s next request in ``run``.

        Raises:
            LLMError: the recorded failure, or BACKEND_ERROR when nothing was recorded at this position.
        """
        seq = self.number(run, agent)
        recorded = self._recorded.get((run, agent, seq))
        if recorded is None:
            detail = f"replay: no recorded reply for run {run} agent {agent} request {seq}"
            self.keep(
                _event(
                    run,
                    agent,
                    seq,
                    request,
                    backend=REPLAY_BACKEND,
                    model="",
                    started=None,
                    outcome=LLMFailure.BACKEND_ERROR.value,
                    error=detail,
                )
            )
            raise LLMError(LLMFailure.BACKEND_ERROR, detail)
        self.keep(
            recorded.model_copy(update={"time": time.time(), "request": request.as_record()}),
        )
        if recorded.outcome != OK:
            raise LLMError(LLMFailure(recorded.outcome), recorded.error or "")
        assert recorded.reply is not None  # checked in __init__
        return LLMReply(
            text=recorded.reply,
            model=recorded.model,
            prompt_tokens=recorded.prompt_tokens,
            completion_tokens=recorded.completion_tokens,
            duration_s=recorded.duration_s,
        )


def _event(
    run: int,
    agent: str,
    seq: int,
    request: LLMRequest,
    *,
    backend: str,
    model: str,
    started: float | None,
    outcome: str,
    reply: str | None = None,
    error: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> LLMEvent:
    """The record of one request; ``started`` is its ``perf_counter`` start (None: it took no time)."""
    return LLMEvent(
        time=time.time(),
        run=run,
        agent=agent,
        seq=seq,
        backend=backend,
        model=model,
        request=request.as_record(),
        outcome=outcome,
        reply=reply,
        error=error,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        duration_s=0.0 if started is None else time.perf_counter() - started,
    )
