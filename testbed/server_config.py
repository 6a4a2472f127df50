"""How a server process the testbed hosts is configured: model, inference and sandbox settings.

Every registered server factory receives one (``build(config)``), built-in or plug-in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from testbed._errors import TestbedError, first_error
from testbed.imaging import MAX_IMAGE_PIXELS

__all__ = ["ServerConfig"]

_ENV_FIELDS: dict[str, str] = {
    "TESTBED_DEVICE": "device",
    "TESTBED_IMGSZ": "imgsz",
    "TESTBED_CONF": "conf",
    "TESTBED_DETECT_WEIGHTS": "detect_weights",
    "TESTBED_SEGMENT_WEIGHTS": "segment_weights",
    "TESTBED_SANDBOX": "sandbox",
    "TESTBED_INFERENCE_CACHE": "inference_cache",
}


class ServerConfig(BaseModel):
    """Settings shared by every reference server; one server process has one configuration.

    Nothing here changes what a server declares or what its truth manifest says:
    conventions, memory scopes and TTLs are fixed per server.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    device: str = "auto"
    """Compute device for the vision models: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

    imgsz: int = Field(default=320, ge=32, le=4096)
    """Model input size in pixels (the letterbox's long side)."""

    conf: float = Field(default=0.25, ge=0.0, le=1.0)
    """Minimum detection score."""

    detect_weights: Path | None = None
    """Detection weights file; ``None`` means the project's shipped detector."""

    segment_weights: Path | None = None
    """Segmentation weights file; ``None`` means the project's shipped segmenter."""

    sandbox: Path | None = None
    """Directory a file-path server reads and writes in; ``None`` means a fresh temporary directory."""

    max_pixels: int = Field(default=MAX_IMAGE_PIXELS, gt=0)
    """Largest image (width x height) a server accepts; larger inputs are refused before decoding."""

    inference_cache: bool = True
    """Cache inference results by (weights, image, parameters); benchmarks switch it off."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ServerConfig:
        """Read a configuration from environment variables, then apply ``overrides``.

        Reads ``TESTBED_DEVICE``, ``TESTBED_IMGSZ``, ``TESTBED_CONF``, ``TESTBED_DETECT_WEIGHTS``,
        ``TESTBED_SEGMENT_WEIGHTS`` and ``TESTBED_SANDBOX``; unset or empty variables keep the defaults.
        Overrides whose value is ``None`` are ignored.

        Args:
            environ: the variables to read; ``os.environ`` when ``None``.
            overrides: field values that win over the environment.

        Raises:
            TestbedError: a value is invalid; the message names the variable or field.
        """
        source = os.environ if environ is None else environ
        values: dict[str, object] = {}
        origin: dict[str, str] = {}
        for variable, field in _ENV_FIELDS.items():
            text = source.get(variable, "").strip()
            if text:
                values[field] = text
                origin[field] = variable
        for field, value in overrides.items():
            if value is not None:
                values[field] = value
                origin[field] = field
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            located = first_error(error)
            field = str(located.loc[0]) if located.loc else "configuration"
            raise TestbedError(f"{origin.get(field, field)}: {located.message}") from None
