"""Scoped memory: each handle is bound to the run and agent it was issued to, and lives ``memory_ttl_s``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HandleScopes", "Issue"]


@dataclass(frozen=True)
class Issue:
    """Who a handle was issued to, and when (on the run's logical clock)."""

    run: int
    agent: str
    clock: float
    by: str
    """The ``alias.tool`` that returned it."""


class HandleScopes:
    """The handles issued in the current run; :meth:`collect` forgets them all when the run ends."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._issued: dict[str, Issue] = {}

    def collect(self) -> None:
        """Garbage-collect every handle: a handle never outlives its run."""
        self._issued.clear()

    def issue(self, handle: str, issue: Issue) -> None:
        self._issued.setdefault(handle, issue)

    def refusal(self, handle: str, *, run: int, agent: str, clock: float) -> str | None:
        """Why ``handle`` may not be sent now, or ``None`` when it may (an expired handle is collected)."""
        issue = self._issued.get(handle)
        if issue is None or issue.run != run:
            return f"handle {handle[:60]!r} was not issued in run {run} (or was collected)"
        if issue.agent != agent:
            return f"handle {handle[:60]!r} was issued to agent {issue.agent or 'main'!r}, not {agent or 'main'!r}"
        if clock - issue.clock > self._ttl_s:
            del self._issued[handle]
            return (
                f"handle {handle[:60]!r} from {issue.by} expired: issued at t={issue.clock:g}s, "
                f"used at t={clock:g}s, lifetime {self._ttl_s:g}s"
            )
        return None
