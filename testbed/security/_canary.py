"""Canary files placed outside a sandbox, and the proof (by sha256) that nothing touched them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from testbed._errors import TestbedError

__all__ = ["CANARY_FILES", "CanarySet", "place_canaries"]

CANARY_FILES: dict[str, str] = {"CANARY": "outside/CANARY", "passwd": "decoy-root/etc/passwd"}
"""Every canary by name, and its file relative to the canary base (the sandbox's parent)."""
_FAKE_PASSWD = "root:x:0:0:canary root:/root:/bin/sh\ncanary:x:1000:1000:canary:/home/canary:/bin/sh\n"


@dataclass(frozen=True)
class CanarySet:
    """Files an attack would aim at, with the sha256 each had when placed."""

    roots: tuple[Path, ...]
    """Directories holding the canaries: nothing under them may be opened during a probe."""
    digests: dict[Path, str]
    """Each canary file and its sha256 at placement."""

    def changed(self) -> list[str]:
        """Every canary that is missing or whose content changed, as ``path: what``; empty when all are intact."""
        problems = []
        for path, digest in self.digests.items():
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif _sha256(path) != digest:
                problems.append(f"{path}: content changed")
        for root in self.roots:
            extra = sorted(p for p in root.rglob("*") if p.is_file() and p not in self.digests)
            problems.extend(f"{path}: created" for path in extra)
        return problems


def place_canaries(base: Path, sandbox: Path) -> CanarySet:
    """Place canaries beside ``sandbox`` under ``base``: ``base/outside/CANARY`` and a decoy root's ``etc/passwd``.

    Raises:
        TestbedError: the sandbox is not inside ``base`` (the canaries would not be its siblings).
    """
    if not sandbox.resolve().is_relative_to(base.resolve()):
        raise TestbedError(f"sandbox: {sandbox} is not inside the canary base {base}")
    outside = base / "outside"
    decoy_root = base / "decoy-root"
    files = {
        base / CANARY_FILES["CANARY"]: "canary: an attack that reaches this file broke out of its sandbox\n",
        base / CANARY_FILES["passwd"]: _FAKE_PASSWD,
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return CanarySet(roots=(outside.resolve(), decoy_root.resolve()), digests={p.resolve(): _sha256(p) for p in files})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
