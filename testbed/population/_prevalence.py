"""Prevalence files: the shares a population of servers is sampled from, each with its source."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Final, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from testbed._errors import LocatedError, UnsupportedEncodingError
from testbed.conventions import BoxConvention, MaskEncoding
from testbed.population._errors import PopulationError, first_error
from testbed.profile import CAPABILITIES

__all__ = ["MODES", "PROPERTIES", "Count", "Distribution", "Mode", "Prevalence", "Share", "load_prevalence"]

_CONFIG = ConfigDict(frozen=True, extra="forbid")
_TOLERANCE: Final = 1e-6

Mode = Literal["static", "retrieval", "dynamic", "multi_agent"]
"""The audit's four orchestration modes."""
MODES: Final[tuple[Mode, ...]] = ("static", "retrieval", "dynamic", "multi_agent")

PROPERTIES: Final = (
    "schema_divergence",
    "no_output_validation",
    "undeclared_conventions",
    "bridging",
    "memory_retention",
    "declared_fallback",
)
"""The per-server properties drawn independently, each with its own share."""


class Share(BaseModel):
    """One probability and where it comes from."""

    model_config = _CONFIG

    share: float = Field(ge=0.0, le=1.0)
    source: str = Field(min_length=1)


class Count(BaseModel):
    """One count and where it comes from."""

    model_config = _CONFIG

    value: int = Field(gt=0)
    source: str = Field(min_length=1)


class Distribution(BaseModel):
    """Shares of mutually exclusive categories; they sum to 1."""

    model_config = _CONFIG

    shares: dict[str, float]
    source: str = Field(min_length=1)

    @field_validator("shares")
    @classmethod
    def _probabilities(cls, shares: dict[str, float]) -> dict[str, float]:
        if not shares:
            raise ValueError("names no category")
        for name, share in shares.items():
            if not (math.isfinite(share) and 0.0 <= share <= 1.0):
                raise LocatedError(f"{share} is not a probability in [0, 1]", loc=(name,))
        total = sum(shares.values())
        if abs(total - 1.0) > _TOLERANCE:
            raise ValueError(f"shares sum to {total:.9g}, not 1 (within {_TOLERANCE:g})")
        return shares


def _check_names(distribution: Distribution, known: tuple[str, ...], what: str) -> None:
    for name in distribution.shares:
        if name not in known:
            raise LocatedError(f"unknown {what} {name!r}; known: {', '.join(known)}", loc=("shares", name))


def _box_names(distribution: Distribution) -> None:
    for name in distribution.shares:
        try:
            BoxConvention.from_name(name)
        except UnsupportedEncodingError as error:
            raise LocatedError(str(error), loc=("shares", name)) from None


class Prevalence(BaseModel):
    """Everything a population is sampled from."""

    model_config = _CONFIG

    name: str = Field(min_length=1)
    population_size: Count
    security_subset: Count
    schema_divergence: Share
    no_output_validation: Share
    undeclared_conventions: Share
    bridging: Share
    memory_retention: Share
    declared_fallback: Share
    box_conventions: Distribution
    mask_formats: Distribution
    orchestration_modes: Distribution
    capabilities: Distribution

    @model_validator(mode="after")
    def _categories_known(self) -> Self:
        checks = (
            ("mask_formats", lambda d: _check_names(d, tuple(e.value for e in MaskEncoding), "mask format")),
            ("orchestration_modes", lambda d: _check_names(d, MODES, "orchestration mode")),
            ("capabilities", lambda d: _check_names(d, CAPABILITIES, "capability")),
            ("box_conventions", _box_names),
        )
        for field, check in checks:
            try:
                check(getattr(self, field))
            except LocatedError as error:
                raise LocatedError(error.message, loc=(field, *error.loc)) from None
        if self.security_subset.value > self.population_size.value:
            raise LocatedError(
                f"{self.security_subset.value} exceeds the population size {self.population_size.value}",
                loc=("security_subset", "value"),
            )
        return self

    def share(self, prop: str) -> float:
        """The configured share of one of :data:`PROPERTIES`."""
        value: Share = getattr(self, prop)
        return value.share


def load_prevalence(path: Path | str) -> Prevalence:
    """Read and check a prevalence file.

    Raises:
        PopulationError: unreadable, not YAML, or a field that does not fit (``FILE: field: message``).
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise PopulationError(f"{path}: cannot read the prevalence file: {str(error).splitlines()[0]}") from None
    try:
        return Prevalence.model_validate(data)
    except ValidationError as error:
        raise first_error(path, error) from None
    except LocatedError as error:  # raised outside a field (never expected, kept one line)
        raise PopulationError(f"{path}: {error}") from None
