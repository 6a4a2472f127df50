"""Compute device selection: ``auto | cpu | cuda | cuda:N``."""

from __future__ import annotations

import re

from testbed._errors import DeviceError

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def resolve_device(device: str) -> str:
    """Turn a device request into a concrete torch device string.

    ``auto`` picks ``cuda:0`` when CUDA is available and ``cpu`` otherwise.

    Raises:
        DeviceError: an unknown device name, or CUDA asked for where none is available.
    """
    if not _DEVICE_PATTERN.match(device):
        raise DeviceError(f"device {device!r} is unknown: use auto, cpu, cuda or cuda:N")
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but CUDA is not available on this machine")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return f"cuda:{index}"
