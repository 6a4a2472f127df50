"""The experiment design file: a base scenario (or a scenario set), runs, seed, factors and contrasts.

``load_design(path)`` reads it with the scenario loader's bounded YAML parser; every problem
is a :class:`DesignError` reading ``FILE:LINE: field.path: message``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Self

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, ValidationError, model_validator

from testbed._errors import LocatedError, Location, explain_error
from testbed.experiment._factors import Factor, ScenarioEntry, ScenarioFactor, level_label
from testbed.experiment._kinds import AnyFactor
from testbed.experiment._population import scenario_entries
from testbed.scenario import MAX_RUNS, ScenarioError
from testbed.scenario._yaml import locate_node, parse_yaml, read_scenario_file

__all__ = [
    "MAX_CELLS",
    "QUICK_RUNS",
    "SCENARIO_SET",
    "ContrastSpec",
    "Design",
    "DesignError",
    "LoadedDesign",
    "experiment_json_schema",
    "load_design",
    "load_design_text",
    "write_experiment_json_schema",
]

MAX_CELLS: Final = 10_000
"""The most cells a design may have without ``--force`` (a bound on a typo in a factor's levels)."""
QUICK_RUNS: Final = 10
"""Runs per cell under ``--quick`` where the design gives no ``quick_runs``."""
SCENARIO_SET: Final = "scenario"
"""The name of the factor a list under the design's ``scenario`` becomes."""

_CONFIG = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

FactorName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
"""A factor's name: a lowercase identifier (it names table columns and cell directories)."""


class DesignError(ScenarioError):
    """An invalid experiment design, as one line: ``FILE:LINE: field.path: message``."""


def _level_labels(value: Any) -> Any:
    """Level labels as tables show them: YAML's bare ``on``/``off`` (booleans) and numbers are accepted."""
    if isinstance(value, dict):
        return {
            key: level_label(level) if isinstance(level, bool | int | float) else level for key, level in value.items()
        }
    return value


LevelChoice = Annotated[dict[str, str], BeforeValidator(_level_labels)]


class ContrastSpec(BaseModel):
    """One comparison: the treatment cell(s) against the baseline cell(s), run by run.

    A factor not named in ``treatment`` or ``baseline`` is at its first level, unless it is pooled.
    """

    model_config = _CONFIG

    name: str | None = Field(default=None, min_length=1)
    """How tables name it (default: from the levels)."""
    treatment: LevelChoice = Field(min_length=1)
    """Factor name to level label, for the cells measured."""
    baseline: LevelChoice = Field(default_factory=dict)
    """Factor name to level label, for the cells compared against."""
    pool: tuple[str, ...] = ()
    """Factors whose levels are pooled: the pairs of every level are stacked (matched within each level)."""


class Design(BaseModel):
    """A factorial experiment over one scenario or a scenario set; every cell uses the same seed."""

    model_config = ConfigDict(**_CONFIG, title="Experiment design")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Short name (it names the default output folder)."""
    description: str = ""
    """What the experiment asks, in a sentence or two."""
    scenario: Annotated[
        Annotated[str, Field(min_length=1)] | tuple[ScenarioEntry, ...], BeforeValidator(scenario_entries)
    ] = Field(min_length=1)
    """The base scenario file, relative to this file; a list is a scenario set (the factor ``scenario``) of scenario
    files and populations (``{prevalence: FILE, members: N, seed: S, workflows: K}``: one level per workflow)."""
    seed: StrictInt = Field(ge=0)
    """The experiment seed, shared by every cell: the same scenes and fault decisions in each."""
    runs: StrictInt = Field(ge=1, le=MAX_RUNS)
    """Runs per cell (``--quick`` and ``--runs`` override it)."""
    quick_runs: StrictInt = Field(default=QUICK_RUNS, ge=1, le=MAX_RUNS)
    """Runs per cell under ``--quick`` (at most ``runs``): a smoke test of the whole design."""
    factors: dict[FactorName, AnyFactor] = Field(default_factory=dict)
    """What varies, by name; the cells are every combination of their levels (the first level is the baseline)."""
    contrasts: tuple[ContrastSpec, ...] | None = None
    """The comparisons to test (default: each factor's levels against its first, and all against baseline)."""
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    """Two-sided confidence level of every interval."""

    @model_validator(mode="after")
    def _check_factors(self) -> Self:
        if isinstance(self.scenario, tuple) and SCENARIO_SET in self.factors:
            raise LocatedError(
                f"a list of scenarios is the factor {SCENARIO_SET!r}: rename the factor of that name",
                loc=("factors", SCENARIO_SET),
            )
        sets = [name for name, factor in self.factors.items() if factor.changes == ""]
        if len(sets) + isinstance(self.scenario, tuple) > 1:
            raise LocatedError(
                "give a scenario set once: as the list under scenario, or as one factor", loc=("scenario",)
            )
        if not self.all_factors():
            raise LocatedError(
                "the design is empty: give at least one factor (or a list of scenarios)", loc=("factors",)
            )
        return self

    def all_factors(self) -> dict[str, Factor]:
        """Every factor by name, the scenario set of a ``scenario`` list first."""
        if isinstance(self.scenario, tuple):
            return {SCENARIO_SET: ScenarioFactor.model_validate({"levels": self.scenario}), **self.factors}
        return dict(self.factors)


@dataclass(frozen=True)
class LoadedDesign:
    """A validated design with what locates its errors."""

    design: Design
    path: Path
    data: dict[str, Any]
    """The design as YAML data (recorded in the manifest)."""
    root: yaml.Node

    def error(self, loc: Location, message: str) -> DesignError:
        """An error at ``loc`` (a field path of the design), with its line in the file."""
        line, path = locate_node(self.root, loc)
        return DesignError(message, source=str(self.path), line=line, path=path)


def load_design(path: str | Path) -> LoadedDesign:
    """Read and validate a design file.

    Raises:
        DesignError: the file cannot be read, is not valid YAML, or is not a valid design.
    """
    file = Path(path)
    try:
        text = read_scenario_file(file)
    except ScenarioError as error:
        raise DesignError(error.message, source=error.source, line=error.line, path=error.path) from None
    return load_design_text(text, path=file)


def load_design_text(text: str, *, path: Path) -> LoadedDesign:
    """Validate a design given as YAML text (``path``: the file it names in errors; scenarios resolve against it).

    Raises:
        DesignError: the text is not valid YAML or not a valid design.
    """
    source = str(path)
    try:
        root, data = parse_yaml(text, source)
    except ScenarioError as error:
        raise DesignError(error.message, source=error.source, line=error.line, path=error.path) from None
    if root is None:
        raise DesignError("the file is empty; expected a design (name, scenario, seed, runs, factors)", source=source)
    if not isinstance(data, dict):
        raise DesignError("the top level must be a mapping of design fields", source=source, line=1)
    try:
        design = Design.model_validate(data)
    except ValidationError as error:
        details = error.errors()[0]
        loc, message = explain_error(details, unknown_field=_field_hint)
        more = len(error.errors()) - 1
        if more:
            message += f" (and {more} more error{'s' if more > 1 else ''})"
        line, located = locate_node(root, loc)
        raise DesignError(message, source=source, line=line, path=located) from None
    return LoadedDesign(design=design, path=path, data=data, root=root)


def _field_hint(loc: Location) -> str:
    if len(loc) != 1:
        return ""
    close = difflib.get_close_matches(str(loc[0]), list(Design.model_fields), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(Design.model_fields)}"


def experiment_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a design file: structure and types (levels are checked by planning)."""
    schema = Design.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def write_experiment_json_schema(path: str | Path) -> Path:
    """Write :func:`experiment_json_schema` to ``path`` as indented JSON with sorted keys; return the path."""
    target = Path(path)
    target.write_text(json.dumps(experiment_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return target
