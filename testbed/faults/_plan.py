"""Which faults apply to which call: a pure function of the scenario's faults, the seed and the call site.

Every decision is a Bernoulli draw from ``derive_rng(seed, "fault", run, node, item, index)``,
so the same scenario and seed inject the same faults whatever the timing or
concurrency of the calls.
"""

from __future__ import annotations

from collections.abc import Sequence

from testbed._seeding import derive_rng
from testbed.faults._model import FaultSpec, RugPullFault
from testbed.transport import LISTING_ITEM, LISTING_NODE, CallSite

__all__ = ["FaultPlan"]


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
