"""Shared fixtures. The testbed's cache folder is a fresh temporary one for each test session."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Before anything imports Ultralytics: its configuration folder must be ours, never ~/.config.
os.environ.setdefault("TESTBED_HOME", tempfile.mkdtemp(prefix="testbed-home-"))


class NetworkAttempts:
    """Non-loopback network use seen while the guard was active."""

    def __init__(self) -> None:
        self.attempts: list[str] = []


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def network_guard(monkeypatch: pytest.MonkeyPatch) -> NetworkAttempts:
    """Record, and refuse, every attempt to reach a non-loopback address (connect, sendto, DNS).

    Attempts are recorded as well as refused because libraries often swallow
    the error; the test asserts ``guard.attempts == []`` afterwards.
    """
    seen = NetworkAttempts()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_local(address):
            seen.attempts.append(f"connect {address}")
            raise OSError("network access is forbidden in this test")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_local(address):
            seen.attempts.append(f"connect_ex {address}")
            return 111
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: bytes, *args: Any) -> int:
        address = args[-1]
        if not _is_local(address):
            seen.attempts.append(f"sendto {address}")
            raise OSError("network access is forbidden in this test")
        return real_sendto(self, data, *args)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost") and not _is_local((host, 0)):
            seen.attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror("name resolution is forbidden in this test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


@pytest.fixture(scope="session")
def testbed_home() -> Path:
    return Path(os.environ["TESTBED_HOME"])
