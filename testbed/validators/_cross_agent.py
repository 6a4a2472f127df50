"""``memory.cross_agent``: a handle one agent created, read by another (multi-agent runs).

Calls record the agent that made them (a worker's name; empty for a single
agent). A use is attributed to the issue of the same handle on the same
server; when both name an agent and the names differ, the read crosses agents,
which a server that does not scope memory per agent cannot refuse.
"""

from __future__ import annotations

from collections.abc import Iterator

from testbed.validators._memory import Issued, handle_uses, issued_handles
from testbed.validators._model import RunRecord, ValidatorSpec, Violation


def check_cross_agent(record: RunRecord) -> Iterator[Violation]:
    """``memory.cross_agent``: every use of a handle by an agent other than the one whose call returned it."""
    origins: dict[tuple[str, str], Issued] = {}
    for issued in issued_handles(record):
        origins.setdefault((issued.call.server, issued.handle), issued)
    for use in handle_uses(record):
        origin = origins.get((use.call.server, use.handle))
        if origin is None or not origin.call.agent or not use.call.agent or origin.call.agent == use.call.agent:
            continue
        yield Violation(
            id="memory.cross_agent",
            run=record.started.run,
            server=use.call.server,
            node=use.call.node,
            item=use.call.item,
            detail=(
                f"agent {use.call.agent!r} read handle {use.handle!r} that agent {origin.call.agent!r} created "
                f"(node {origin.call.node!r})"
            ),
            evidence=tuple(sorted({origin.at, use.at})),
        )


VALIDATORS = (ValidatorSpec("memory.cross_agent", ("memory.cross_agent",), check_cross_agent),)
