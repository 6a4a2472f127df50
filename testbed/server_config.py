"""How a server process the testbed hosts is configured: model, inference and sandbox settings.

Every registered server factory receives one (``build(config)``), built-in or plug-in."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from testbed._errors import TestbedError, first_error
from testbed.imaging import MAX_IMAGE_PIXELS
from testbed.profile import ConventionProfile

__all__ = ["ServerConfig", "read_profile"]

_ENV_FIELDS: dict[str, str] = {
    "TESTBED_DEVICE": "device",
    "TESTBED_IMGSZ": "imgsz",
    "TESTBED_CONF": "conf",
    "TESTBED_DETECT_WEIGHTS": "detect_weights",
    "TESTBED_SEGMENT_WEIGHTS": "segment_weights",
    "TESTBED_SANDBOX": "sandbox",
    "TESTBED_INFERENCE_CACHE": "inference_cache",
    "TESTBED_PROFILE": "profile",
}


class ServerConfig(BaseModel):
    """Settings shared by every reference server; one server process has one configuration.

    Nothing here but ``profile`` changes what a server declares or what its truth manifest says:
    a named server's conventions, memory scopes and TTLs are fixed; a parametric one follows its profile.
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

    profile: ConventionProfile | None = None
    """The conventions a parametric server follows (``servers.parametric``); ``None``: its defaults.
    Named servers ignore it. From the environment: ``TESTBED_PROFILE``, JSON text or a JSON/YAML file."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ServerConfig:
        """Read a configuration from environment variables, then apply ``overrides``.

        Reads ``TESTBED_DEVICE``, ``TESTBED_IMGSZ``, ``TESTBED_CONF``, ``TESTBED_DETECT_WEIGHTS``,
        ``TESTBED_SEGMENT_WEIGHTS``, ``TESTBED_SANDBOX``, ``TESTBED_INFERENCE_CACHE`` and ``TESTBED_PROFILE``
        (JSON text, or the path of a JSON or YAML file); unset or empty variables keep the defaults.
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
                values[field] = read_profile(text, what=variable) if field == "profile" else text
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
            inside = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in located.loc[1:])
            raise TestbedError(f"{origin.get(field, field)}{inside}: {located.message}") from None


def read_profile(text: str, *, what: str) -> Any:
    """The profile data in ``text``: JSON (an object), or else the path of a JSON or YAML file.

    Raises:
        TestbedError: not JSON, or a file that cannot be read or parsed; the message names ``what``.
    """
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise TestbedError(f"{what}: not a JSON object ({error.msg} at column {error.colno})") from None
    try:
        return yaml.safe_load(Path(text).read_text(encoding="utf-8"))
    except OSError as error:
        raise TestbedError(f"{what}: cannot read profile file {text!r} ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise TestbedError(f"{what}: {text}: not YAML ({' '.join(str(error).split())})") from None
