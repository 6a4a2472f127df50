"""Planning: a design's cells (every combination of levels, each a validated scenario) and its contrasts."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from testbed._errors import LocatedError, Location
from testbed.experiment._design import MAX_CELLS, QUICK_RUNS, ContrastSpec, DesignError, LoadedDesign
from testbed.experiment._factors import Document, Factor, Level
from testbed.scenario import Scenario, ScenarioError, load_scenario_text
from testbed.scenario._yaml import parse_yaml, read_scenario_file

__all__ = ["QUICK_RUNS", "Cell", "Contrast", "Plan", "ReadScenario", "plan_experiment", "read_from_disk"]

ReadScenario = Callable[[Path], str | None]
"""The text of a scenario file, or ``None`` where there is none (from disk, or from a manifest)."""


def read_from_disk(path: Path) -> str | None:
    return read_scenario_file(path) if path.is_file() else None


@dataclass(frozen=True)
class _DesignSources:
    """The files a design's factors name, resolved against its folder; every text read is kept in ``texts``."""

    base_dir: Path
    read: ReadScenario
    texts: dict[str, str]

    def text(self, name: str) -> tuple[str, Path]:
        path = (self.base_dir / name).absolute()
        text = self.read(path)
        if text is None:
            raise LocatedError(f"no such file: {path}")
        self.texts[str(path)] = text
        return text, path

    def scenario(self, name: str) -> Document:
        try:
            text, path = self.text(name)
        except LocatedError as error:
            raise LocatedError(error.message.replace("no such file", "no such scenario file")) from None
        load_scenario_text(text, source=str(path), base_dir=path.parent)  # the file's own errors, at its lines
        _, data = parse_yaml(text, str(path))
        return Document(data, path)


@dataclass(frozen=True)
class Cell:
    """One combination of levels: an ordinary experiment directory ``cells/<id>/``."""

    index: int
    id: str
    levels: tuple[tuple[str, str], ...]
    """Each factor's name and this cell's level label, in factor order."""
    scenario: Scenario
    source: Path
    """The scenario file the cell's scenario came from (its relative paths resolve against it)."""

    def level(self, factor: str) -> str:
        return dict(self.levels)[factor]


@dataclass(frozen=True)
class Contrast:
    """One comparison, as the (treatment cell, baseline cell) pairs whose runs are matched by run index."""

    name: str
    strata: tuple[tuple[str, str], ...]
    """(treatment cell id, baseline cell id) per combination of pooled levels (one without pooling)."""


@dataclass(frozen=True)
class Plan:
    """What an experiment runs and compares."""

    loaded: LoadedDesign
    runs: int
    """Runs per cell."""
    factors: tuple[tuple[str, tuple[str, ...]], ...]
    """Each factor's name and level labels, in design order."""
    cells: tuple[Cell, ...]
    contrasts: tuple[Contrast, ...]
    scenario_texts: Mapping[str, str]
    """Every scenario file read, by absolute path (recorded in the manifest)."""

    @property
    def seed(self) -> int:
        return self.loaded.design.seed

    def cell(self, cell_id: str) -> Cell:
        return next(cell for cell in self.cells if cell.id == cell_id)


def plan_experiment(
    loaded: LoadedDesign, *, runs: int | None = None, force: bool = False, read: ReadScenario = read_from_disk
) -> Plan:
    """Every cell of the design, validated as a scenario, and the contrasts to test.

    Args:
        loaded: the design.
        runs: runs per cell, overriding the design's.
        force: allow more than :data:`MAX_CELLS` cells.
        read: where scenario files are read from.

    Raises:
        DesignError: a level that does not exist or does not fit a scenario, too many cells, a bad contrast.
        ScenarioError: a scenario file of the design is itself invalid (named with its own line).
    """
    design = loaded.design
    texts: dict[str, str] = {}

    sources = _DesignSources(loaded.path.parent, read, texts)
    factors = design.all_factors()
    levels: dict[str, tuple[Level, ...]] = {}
    for name, factor in factors.items():
        try:
            levels[name] = factor.levels(sources)
        except LocatedError as error:
            raise loaded.error(_factor_loc(design.scenario, name, error.loc), error.message) from None
    count = math.prod(len(each) for each in levels.values())
    if count > MAX_CELLS and not force:
        sizes = " x ".join(str(len(each)) for each in levels.values())
        raise loaded.error(("factors",), f"the design has {count:,} cells ({sizes}), over the {MAX_CELLS:,} limit; "
                           "pass --force to run it anyway")  # fmt: skip
    try:
        # A scenario set replaces the whole document in every cell: it starts from nothing.
        base = sources.scenario(design.scenario) if isinstance(design.scenario, str) else Document({}, loaded.path)
    except LocatedError as error:
        raise loaded.error(("scenario",), error.message) from None
    per_cell = runs if runs is not None else design.runs
    labels = {name: tuple(level.label for level in each) for name, each in levels.items()}
    cells = tuple(
        _cell(loaded, index, combination, factors, base, per_cell, labels)
        for index, combination in enumerate(itertools.product(*levels.values()))
    )
    return Plan(loaded, per_cell, tuple(labels.items()), cells, _contrasts(loaded, labels, factors, cells), texts)


def _factor_loc(scenario: object, name: str, loc: Location) -> Location:
    if isinstance(scenario, tuple) and name == "scenario":
        return ("scenario", *loc[1:])  # the implicit factor's levels are the list itself
    return ("factors", name, *loc)


def _cell(
    loaded: LoadedDesign,
    index: int,
    combination: tuple[Level, ...],
    factors: Mapping[str, Factor],
    base: Document,
    runs: int,
    labels_of: Mapping[str, tuple[str, ...]],
) -> Cell:
    named = list(zip(factors, combination, strict=True))
    document = base
    # A scenario set replaces the whole document first; the other factors then change it in design order.
    ordered = sorted(named, key=lambda item: factors[item[0]].changes != "")
    slots: dict[str, int] = {}
    for name, level in ordered:
        if factors[name].slots:
            slots[name] = len(document.data.get("faults") or ())
        try:
            document = level.edit(document)
        except LocatedError as error:
            raise loaded.error(_factor_loc(loaded.design.scenario, name, error.loc), error.message) from None
    data = {**document.data, "seed": loaded.design.seed, "runs": runs}
    labels = tuple((name, level.label) for name, level in named)
    try:
        scenario = load_scenario_text(json.dumps(data), source=str(document.source), base_dir=document.source.parent)
    except ScenarioError as error:
        raise _blame(loaded, factors, labels, slots, labels_of, document.source, error) from None
    return Cell(index=index, id=_cell_id(index, labels), levels=labels, scenario=scenario, source=document.source)


def _blame(
    loaded: LoadedDesign,
    factors: Mapping[str, Factor],
    labels: tuple[tuple[str, str], ...],
    slots: Mapping[str, int],
    levels: Mapping[str, tuple[str, ...]],
    source: Path,
    error: ScenarioError,
) -> DesignError:
    """The cell's scenario error, named at the factor whose change holds the failing field; else at the last
    factor the cell moves off its first level (an interaction of levels)."""

    def within(target: str) -> bool:
        return error.path == target or error.path.startswith((f"{target}.", f"{target}["))

    targets = {name: factor.target(slots.get(name, 0)) for name, factor in factors.items()}
    matching = sorted(
        (name for name in factors if targets[name] and within(targets[name])), key=lambda n: -len(targets[n])
    )
    varied = [name for name, label in labels if label != levels[name][0]]
    name = matching[0] if matching else varied[-1] if varied else next(iter(factors))
    level = levels[name].index(dict(labels)[name])
    cell = ", ".join(f"{factor}={label}" for factor, label in labels)
    field = f"{error.path}: " if error.path else ""
    return loaded.error(
        _factor_loc(loaded.design.scenario, name, factors[name].level_loc(level)),
        f"cell ({cell}) of {source.name} is not a valid scenario: {field}{error.message}",
    )


_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.]+")


def _cell_id(index: int, labels: tuple[tuple[str, str], ...]) -> str:
    parts = "_".join(f"{name}-{_UNSAFE.sub('-', label).strip('-')[:24]}" for name, label in labels)
    return f"c{index:04d}_{parts}"[:200]


def _contrasts(
    loaded: LoadedDesign,
    levels: Mapping[str, tuple[str, ...]],
    factors: Mapping[str, Factor],
    cells: tuple[Cell, ...],
) -> tuple[Contrast, ...]:
    specs = loaded.design.contrasts
    if specs is None:
        return tuple(_resolve(loaded, levels, cells, spec, None) for spec in default_contrasts(levels, factors))
    return tuple(_resolve(loaded, levels, cells, spec, index) for index, spec in enumerate(specs))


def default_contrasts(levels: Mapping[str, tuple[str, ...]], factors: Mapping[str, Factor]) -> list[ContrastSpec]:
    """Each factor's levels against its first (scenario sets pooled), and every switch at its last level
    against every one at its first where two or more factors vary."""
    sets = tuple(name for name, factor in factors.items() if factor.changes == "" and len(levels[name]) > 1)
    specs: list[ContrastSpec] = []
    for name, labels in levels.items():
        pool = tuple(other for other in sets if other != name)
        specs.extend(
            ContrastSpec(name=f"{name}: {label} vs {labels[0]}", treatment={name: label}, pool=pool)
            for label in labels[1:]
        )
    switches = [name for name, labels in levels.items() if len(labels) > 1 and name not in sets]
    if len(switches) > 1:
        treatment = {name: levels[name][-1] for name in switches}
        title = ", ".join(f"{name}={label}" for name, label in treatment.items())
        specs.append(ContrastSpec(name=f"all: {title} vs baseline", treatment=treatment, pool=sets))
    return specs


def _resolve(
    loaded: LoadedDesign,
    levels: Mapping[str, tuple[str, ...]],
    cells: tuple[Cell, ...],
    spec: ContrastSpec,
    index: int | None,
) -> Contrast:
    def fail(loc: Location, message: str) -> DesignError:
        return loaded.error(("contrasts", index, *loc) if index is not None else ("contrasts",), message)

    for side in ("treatment", "baseline"):
        for factor, label in getattr(spec, side).items():
            if factor not in levels:
                raise fail((side, factor), f"unknown factor {factor!r} (factors: {', '.join(levels)})")
            if label not in levels[factor]:
                raise fail(
                    (side, factor), f"factor {factor!r} has no level {label!r} (levels: {', '.join(levels[factor])})"
                )
    for position, factor in enumerate(spec.pool):
        if factor not in levels:
            raise fail(("pool", position), f"unknown factor {factor!r} (factors: {', '.join(levels)})")
        if factor in spec.treatment or factor in spec.baseline:
            raise fail(
                ("pool", position), f"factor {factor!r} is pooled, so it cannot be fixed in treatment or baseline"
            )
    by_levels = {cell.levels: cell.id for cell in cells}
    strata = []
    for pooled in itertools.product(*(levels[factor] for factor in spec.pool)):
        fixed = dict(zip(spec.pool, pooled, strict=True))

        strata.append(
            (by_levels[_levels_of(levels, spec.treatment, fixed)], by_levels[_levels_of(levels, spec.baseline, fixed)])
        )
    if all(treatment == baseline for treatment, baseline in strata):
        raise fail(("treatment",), "the treatment and the baseline are the same cells")
    name = spec.name or " vs ".join(
        ", ".join(f"{factor}={label}" for factor, label in side.items()) or "baseline"
        for side in (spec.treatment, spec.baseline)
    )
    return Contrast(name=name, strata=tuple(strata))


def _levels_of(
    levels: Mapping[str, tuple[str, ...]], chosen: Mapping[str, str], pooled: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """A cell's levels: ``chosen``, then the pooled factors' current levels, else each factor's first."""
    return tuple((name, chosen.get(name, pooled.get(name, labels[0]))) for name, labels in levels.items())
