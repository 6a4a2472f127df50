"""Which faults apply to which call: a pure function of the scenario's faults, the seed and the call site.

Every decision is a Bernoulli draw from ``derive_rng(seed, "fault", run, node, item, index)``,
so the same scenario and seed inject the same faults whatever the timing or
concurrency of the calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

from testbed._seeding import derive_rng
from testbed.conventions import ImageSize
from testbed.faults._model import FaultSpec, RugPullFault
from testbed.protocol import ToolTruth

__all__ = ["LISTING_ITEM", "LISTING_NODE", "CallSite", "FaultPlan", "current_site"]

LISTING_NODE: Final = "@list"
"""The node of the ``tools/list`` the orchestrator makes at the start of each run (rug pulls apply there)."""
LISTING_ITEM: Final = 0
"""The item of that listing."""


@dataclass(frozen=True)
class CallSite:
    """One tool call, as the fault plan sees it."""

    run: int
    """The run."""
    node: str
    """The workflow node making the call (:data:`LISTING_NODE` for a run's ``tools/list``)."""
    item: int
    """The call's index within its node (the ``for_each`` element), 0 otherwise."""
    server: str
    """The server alias the call goes to."""
    tool: str | None
    """The tool called (``None`` for a listing)."""
    image_size: ImageSize | None = None
    """The size of the run's image (box units, origins and image-resolution masks need it)."""
    truth: ToolTruth | None = None
    """What the tool actually does, for testbed servers; ``None`` for third-party servers."""


current_site: ContextVar[CallSite | None] = ContextVar("current_site", default=None)
"""Set by the orchestrator around each tool call, together with ``testbed.transport.current_call``."""


class FaultPlan:
    """A scenario's faults with the seed that decides, per call site, which of them apply."""

    def __init__(self, faults: Sequence[FaultSpec], *, seed: int) -> None:
        """Args:
        faults: the scenario's faults, in order (a fault's index is its position here).
        seed: the experiment seed.
        """
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.faults: tuple[FaultSpec, ...] = tuple(faults)
        self.seed = seed

    def faults_for(self, site: CallSite) -> list[tuple[int, FaultSpec]]:
        """The faults that apply to one tool call, as ``(index, fault)`` in list order.

        A fault applies when it targets the site's server (and tool, if it names one),
        its schedule includes the site's run and node, and a draw with its probability
        succeeds. Rug pulls never apply to tool calls (see :meth:`listing_faults`).
        """
        chosen: list[tuple[int, FaultSpec]] = []
        for index, fault in enumerate(self.faults):
            if isinstance(fault, RugPullFault):
                continue
            target = fault.target
            if target.server != site.server or (target.tool is not None and target.tool != site.tool):
                continue
            if fault.scheduled(run=site.run, node=site.node) and self._draw(
                fault, site.run, site.node, site.item, index
            ):
                chosen.append((index, fault))
        return chosen

    def listing_faults(self, run: int, *, server: str | None = None) -> list[tuple[int, RugPullFault]]:
        """The rug pulls that apply to the ``tools/list`` made at the start of ``run``.

        Args:
            run: the run.
            server: only faults targeting this alias; ``None`` for every server.
        """
        chosen: list[tuple[int, RugPullFault]] = []
        for index, fault in enumerate(self.faults):
            if not isinstance(fault, RugPullFault):
                continue
            if server is not None and fault.target.server != server:
                continue
            if fault.scheduled(run=run, node=LISTING_NODE) and self._draw(
                fault, run, LISTING_NODE, LISTING_ITEM, index
            ):
                chosen.append((index, fault))
        return chosen

    def _draw(self, fault: FaultSpec, run: int, node: str, item: int, index: int) -> bool:
        if fault.probability >= 1.0:
            return True
        if fault.probability <= 0.0:
            return False
        draw = derive_rng(self.seed, "fault", run, node, item, index).random()
        return bool(draw < fault.probability)
