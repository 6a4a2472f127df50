"""The installed versions of the packages an experiment's results depend on, for its manifest."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_versions"]


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Python's version and each package's, or "not installed"."""
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
