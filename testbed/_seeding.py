"""Seed derivation: every generator is derived from one experiment seed.

Never use module-level ``random`` or ``np.random`` functions; derive a
generator from the experiment seed and a key naming its purpose instead.
"""

from __future__ import annotations

import hashlib

import numpy as np

SeedKey = int | str


def _key_to_int(key: SeedKey) -> int:
    if isinstance(key, int):
        if key < 0:
            raise ValueError(f"seed keys must be non-negative, got {key}")
        return key
    # Stable across processes (unlike hash()), so string keys give the same stream everywhere.
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def derive_seed_sequence(seed: int, *keys: SeedKey) -> np.random.SeedSequence:
    """Return the seed sequence for ``seed`` and a path of keys, e.g. ``(seed, "scene", run)``."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return np.random.SeedSequence(seed, spawn_key=tuple(_key_to_int(k) for k in keys))


def derive_rng(seed: int, *keys: SeedKey) -> np.random.Generator:
    """Return a numpy generator derived from ``seed`` and ``keys``."""
    return np.random.default_rng(derive_seed_sequence(seed, *keys))


def derive_int_seed(seed: int, *keys: SeedKey) -> int:
    """Return a 32-bit integer seed derived from ``seed`` and ``keys`` (for libraries that take ints)."""
    return int(derive_seed_sequence(seed, *keys).generate_state(1, dtype=np.uint32)[0])
