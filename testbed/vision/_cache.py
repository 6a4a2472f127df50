"""The cache of inference results: a :class:`~testbed._lru.BoundedCache` keyed by what an inference depends on."""

from __future__ import annotations

from testbed._lru import BoundedCache, CacheStats, V

__all__ = ["CacheStats", "InferenceCache"]


class InferenceCache(BoundedCache[V]):
    """Keys are ``(weights hash, image hash, parameters)``, so two processes or runs asking for the same
    inference agree on the key."""
