"""Deliberately vulnerable servers, one threat vector of the paper's security audit each (names ``vuln-*``).

They are attack targets, not reference servers: each does what its module says an attacker can make
it do, and stays contained while doing it. Everything touches only the server's sandbox; anything
"executed" is parsed and recorded in the sandbox's ledger (``security-ledger.jsonl``), never run; a
path that escapes the sandbox is recorded and served from a decoy inside it. ``probes`` lists the
attack on every tool; ``tests/test_containment.py`` runs them all under an audit hook.
"""

import importlib

MODULES = (
    "injection",
    "schema_bypass",
    "rce",
    "privilege",
    "stale_memory",
    "leakage",
    "provenance",
    "coercion",
    "inbox",
)
"""Every vulnerable server's module; importing one registers it."""

for _module in MODULES:
    importlib.import_module(f"servers.vulnerable.{_module}")

__all__ = ["MODULES"]
