"""Several experiments in one report: finding them, refusing what cannot be added up, and pooled evidence."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed._errors import TestbedError
from testbed.events import EVENTS_FILE, ExperimentHeader
from testbed.report._evidence import Evidence, sampled_evidence
from testbed.validators import ValidationResult, validate_experiment

TESTBED_PACKAGE = "mcp-vision-testbed"
"""The key of the testbed's own version in an experiment header's ``versions``."""


@dataclass(frozen=True)
class Experiment:
    """One validated experiment and where it was read from."""

    path: Path
    result: ValidationResult

    @property
    def header(self) -> ExperimentHeader:
        return self.result.runs[0].header


def _experiments_under(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        if EVENTS_FILE in files:
            found.append(Path(root))
            dirs.clear()  # an experiment holds no other experiment
        else:
            dirs.sort()
    return sorted(found)


def find_experiments(paths: Sequence[Path]) -> list[Path]:
    """Every experiment directory named: each path is one, or a folder holding some (at any depth).

    Raises:
        TestbedError: a path is missing, holds no experiment, or names an experiment already named.
    """
    found: dict[Path, Path] = {}
    for path in paths:
        if not path.is_dir():
            raise TestbedError(f"{path}: no such experiment directory")
        inside = [path] if (path / EVENTS_FILE).is_file() else _experiments_under(path)
        if not inside:
            raise TestbedError(f"{path}: not an experiment directory (no {EVENTS_FILE}) and holds no experiment")
        for experiment in inside:
            resolved = experiment.resolve()
            if resolved in found:
                raise TestbedError(f"{experiment}: given twice (also as {found[resolved]})")
            found[resolved] = experiment
    return list(found.values())


def _version(header: ExperimentHeader) -> tuple[int, str]:
    return header.format_version, header.versions.get(TESTBED_PACKAGE, "unknown")


def check_compatible(experiments: Sequence[Experiment]) -> None:
    """Refuse experiments that cannot be added up: one recorded twice, or by another testbed version.

    Validators run afresh on every experiment, so all are judged by this install's catalog; what
    still differs between versions is what the servers and agents did, and that would not add up.

    Raises:
        TestbedError: naming the offending experiment's path.
    """
    seen: dict[str, Path] = {}
    for experiment in experiments:
        experiment_id = experiment.header.experiment_id
        if experiment_id in seen:
            raise TestbedError(
                f"{experiment.path}: the same experiment as {seen[experiment_id]} (experiment id {experiment_id})"
            )
        seen[experiment_id] = experiment.path
    first = experiments[0]
    for experiment in experiments[1:]:
        if _version(experiment.header) != _version(first.header):
            (fmt, version), (first_fmt, first_version) = _version(experiment.header), _version(first.header)
            raise TestbedError(
                f"{experiment.path}: recorded by {TESTBED_PACKAGE} {version} (event format {fmt}), but {first.path} "
                f"by {first_version} (event format {first_fmt}); report experiments of one version together"
            )


def load_experiments(paths: Sequence[Path]) -> list[Experiment]:
    """Find, validate and check the experiments under ``paths`` (see :func:`find_experiments`).

    Raises:
        TestbedError: a bad path, an experiment with no complete run, or experiments that do not add up.
    """
    experiments = []
    for path in find_experiments(paths):
        result = validate_experiment(path)
        if not result.runs:
            raise TestbedError(f"{path}: no complete runs to report (no run finished)")
        experiments.append(Experiment(path, result))
    check_compatible(experiments)
    return experiments


def pooled_evidence(
    experiments: Sequence[Experiment], *, per_id: int, seed: int
) -> tuple[dict[str, list[Evidence]], dict[str, bytes]]:
    """Per ID, up to ``per_id`` occurrences from distinct runs drawn by ``seed`` across every experiment.

    Only the drawn runs' figures are rendered; each evidence item names its experiment.
    """
    runs_by_id: dict[str, set[tuple[int, int]]] = {}
    for index, experiment in enumerate(experiments):
        complete = {record.started.run for record in experiment.result.runs}
        for violation in experiment.result.violations:
            if violation.run in complete:
                runs_by_id.setdefault(violation.id, set()).add((index, violation.run))
    drawn = {
        violation_id: set(random.Random(f"{seed}:{violation_id}").sample(sorted(runs), min(per_id, len(runs))))
        for violation_id, runs in sorted(runs_by_id.items())
    }
    evidence: dict[str, list[Evidence]] = {}
    figures: dict[str, bytes] = {}
    for index, experiment in enumerate(experiments):
        chosen = [v for v in experiment.result.violations if (index, v.run) in drawn.get(v.id, set())]
        if not chosen:
            continue
        _, found, rendered = sampled_evidence(experiment.result.runs, chosen, per_id=per_id, seed=seed)
        figures.update(rendered)
        for violation_id, items in found.items():
            for item in items:
                item.experiment = str(experiment.path)
            evidence.setdefault(violation_id, []).extend(items)
    return _in_id_order(evidence), figures


def _in_id_order(evidence: Mapping[str, list[Evidence]]) -> dict[str, list[Evidence]]:
    return {violation_id: evidence[violation_id] for violation_id in sorted(evidence)}
