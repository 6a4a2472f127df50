"""The quality tier: validators find the faults they should, at high recall (``pytest -m quality``)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quality: validator recall over many injected faults (slow)")
