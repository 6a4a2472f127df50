"""A case-study family (``scenarios/cases/*.yaml``): its size, its finding, and its variants as scenarios."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from testbed._errors import TestbedError, first_error

__all__ = ["CASES_DIR", "CaseFamily", "Finding", "Variant", "load_case", "load_cases"]

CASES_DIR: Final = Path(__file__).resolve().parents[2] / "scenarios" / "cases"
CASE_ORDER: Final = ("sumo_yolo", "alita", "fhir", "blender", "paraview")
"""The paper's order of its case studies (table D)."""

_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)
Extra = Literal["retained_bytes", "latency"]


class Finding(BaseModel):
    """What the paper found in the case, and the violation IDs that measure it here."""

    model_config = _CONFIG

    what: str = Field(min_length=1)
    ids: tuple[str, ...] = Field(min_length=1)
    """A run shows the finding when a validator reports one of these IDs in it."""
    paper: float | None = Field(default=None, ge=0, le=100)
    """The paper's figure as a percentage of the case's units; ``None`` where it gives none."""


class Variant(BaseModel):
    """One route a unit of the case can take: its configured share and the scenario that runs it."""

    model_config = _CONFIG

    share: float = Field(ge=0, le=1)
    """The share of units drawn to this variant (configured: an input)."""
    affected: bool
    """Whether the route has the paper's mechanism (the finding is expected in its runs)."""
    scenario: dict[str, Any]
    """A scenario document without ``name``, ``version``, ``seed`` and ``runs`` (the family sets them)."""


class CaseFamily(BaseModel):
    """One case study as a family of scenarios sized as in the paper."""

    model_config = _CONFIG

    case: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    system: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    """What one run is (``invocation pairs``, ``toolchains`` ...)."""
    size: int = Field(ge=1)
    """The paper's number of units: the full run's run count."""
    quick_size: int = Field(ge=1)
    """The run count of ``--quick``."""
    size_from_paper: bool = True
    """Whether ``size`` is the paper's (``False``: the paper gives none; the size is this testbed's)."""
    finding: Finding
    variants: dict[str, Variant] = Field(min_length=1)
    extras: tuple[Extra, ...] = ()
    """Measurements besides the finding: ``retained_bytes`` (per session), ``latency`` (of repeated calls)."""

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> Self:
        total = sum(variant.share for variant in self.variants.values())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"variants: shares sum to {total:g}, not 1")
        for name, variant in self.variants.items():
            reserved = {"name", "version", "seed", "runs"} & set(variant.scenario)
            if reserved:
                raise ValueError(f"variants.{name}.scenario: {', '.join(sorted(reserved))}: set by the family")
        return self

    def runs(self, quick: bool) -> int:
        return self.quick_size if quick else self.size


def load_case(path: Path) -> CaseFamily:
    """Read one case file.

    Raises:
        TestbedError: unreadable, or a field is invalid; one line naming the file and the field.
    """
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return CaseFamily.model_validate(document)
    except (OSError, yaml.YAMLError) as error:
        raise TestbedError(f"{path}: cannot read the case file: {error}".splitlines()[0]) from None
    except ValidationError as error:
        raise TestbedError(f"{path}: {first_error(error)}") from None


def load_cases(directory: Path = CASES_DIR) -> list[CaseFamily]:
    """Every case file of ``directory``, in the paper's order (others after it, by name)."""
    cases = [load_case(path) for path in sorted(Path(directory).glob("*.yaml"))]
    rank = {name: index for index, name in enumerate(CASE_ORDER)}
    return sorted(cases, key=lambda case: (rank.get(case.case, len(rank)), case.case))
