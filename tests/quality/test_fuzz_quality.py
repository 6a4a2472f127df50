"""The fuzzing goal at scale: every registered server, many seeded calls, no generic internal error, no
unhelpful error, no crash and no hang.

The goal is 10,000 calls per server (``TESTBED_FUZZ_CALLS=10000``). CI makes
:data:`CI_CALLS`: a call costs about 9 ms on two busy cores (160,000 calls over
16 servers took 1,443 s of fuzzing), so the full size would add about 25
minutes, and 1,000 calls about two and a half.
"""

from __future__ import annotations

import os

import pytest

from testbed.fuzz import ServerTally, fuzz_server
from testbed.registry import registry
from tests._helpers import UNTYPED_OUTPUT_SERVERS

CI_CALLS = 1_000
"""Calls per server when ``TESTBED_FUZZ_CALLS`` is unset."""
CALLS = int(os.environ.get("TESTBED_FUZZ_CALLS", CI_CALLS))
SEED = int(os.environ.get("TESTBED_FUZZ_SEED", 1))
"""Not the regular suite's seed (0), so the two tiers send different calls."""


def failures_of(tally: ServerTally) -> list[str]:
    return [
        f"{failure.outcome.value}: {failure.tool}: {failure.message} [{failure.cause}] <- {failure.arguments}"
        for failure in tally.failures
    ]


@pytest.mark.parametrize("name", [name for name in registry().servers if name not in UNTYPED_OUTPUT_SERVERS])
def test_no_server_fails_under_many_seeded_malformed_calls(name: str) -> None:
    tally = fuzz_server(name, calls=CALLS, seed=SEED)

    assert tally.calls == CALLS
    assert tally.failed == 0, failures_of(tally)
