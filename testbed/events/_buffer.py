"""Per-run buffers for the events a model client records (LLM replies, similarities), numbered per agent."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class _Numbered(Protocol):
    @property
    def run(self) -> int: ...

    @property
    def agent(self) -> str: ...

    @property
    def seq(self) -> int: ...


E = TypeVar("E", bound=_Numbered)


class RunEventBuffer(Generic[E]):
    """Numbers each agent's requests within a run and keeps the run's events until taken.

    Requests are numbered per (run, agent) in the order the agent makes them, so several
    agents of one run may ask concurrently and a replay still finds each answer.
    """

    def __init__(self) -> None:
        self._next_seq: dict[tuple[int, str], int] = {}
        self._events: dict[int, list[E]] = {}

    def number(self, run: int, agent: str) -> int:
        """The next position of ``agent``'s requests in ``run``."""
        # No await between reading and writing: anyio tasks of one thread cannot interleave here.
        seq = self._next_seq.get((run, agent), 0)
        self._next_seq[(run, agent)] = seq + 1
        return seq

    def keep(self, event: E) -> None:
        """Hold ``event`` until its run is taken."""
        self._events.setdefault(event.run, []).append(event)

    def take_run(self, run: int) -> list[E]:
        """The run's events sorted by (agent, seq), removed from the buffer."""
        self._next_seq = {key: seq for key, seq in self._next_seq.items() if key[0] != run}
        return sorted(self._events.pop(run, []), key=lambda event: (event.agent, event.seq))
