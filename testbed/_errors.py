"""User-facing errors: each carries one line that names what was wrong."""

from __future__ import annotations


class TestbedError(Exception):
    """An error caused by user input or environment, reported as one clear line.

    The CLI prints ``str(error)`` without a traceback and exits non-zero.
    """

    __test__ = False  # not a pytest test class, despite the name


class InvalidImageError(TestbedError):
    """An image file or payload that cannot be decoded."""


class UnsupportedEncodingError(TestbedError):
    """A mask encoding or convention value that the testbed does not know."""


class WeightsError(TestbedError):
    """Missing, unreadable or corrupt model weights."""


class DeviceError(TestbedError):
    """An unknown or unavailable compute device."""
