"""Protocol-native visual memory: a context store of versioned, namespaced, run-contained entries.

Servers whose profile says ``memory: {scope: context}`` keep the images they are
given here instead of in ad-hoc handle stores, and the masks and crops they make
(roles ``image``, ``mask``, ``crop``), and hand back a
``context://run/agent/role/key/vN`` reference that later calls (the
orchestrator's bindings, or an agent) pass on. Each entry records which call
produced it and from which inputs (its provenance), expires on the run's
logical clock when it has a TTL, and is readable from its own run only. A GC
drops expired entries. The store is the testbed's; :mod:`servers.parametric`
exposes it over MCP resources (a template per entry version, and a
``resources/updated`` event for each new version).
"""

from testbed.memory._model import (
    CONTEXT_URI_SCHEME,
    NO_AGENT,
    Entry,
    EntryRef,
    MemoryAccessError,
    Namespace,
    Provenance,
    is_context_uri,
)
from testbed.memory._store import ContextStore, Listener

__all__ = [
    "CONTEXT_URI_SCHEME",
    "NO_AGENT",
    "ContextStore",
    "Entry",
    "EntryRef",
    "Listener",
    "MemoryAccessError",
    "Namespace",
    "Provenance",
    "is_context_uri",
]
