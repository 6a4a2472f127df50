"""An experiment directory read for viewing: its runs, violations, rates and what is missing or torn."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from testbed._errors import TestbedError
from testbed.events import (
    BLOBS_DIR,
    BlobStore,
    ExperimentFinished,
    ExperimentHeader,
    RunFinished,
    RunStarted,
    read_events,
)
from testbed.metrics import ModeRow, Summary, mode_row, summarize
from testbed.validators import RunRecord, ValidationResult, Violation, registered_validators, split_runs, validate_runs


class _ReadOnlyBlobStore(BlobStore):
    """A blob store over a folder this process may not create or write (lookups only)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._recent: OrderedDict[str, str] = OrderedDict()


def open_blobs(directory: Path) -> BlobStore:
    """The experiment's blob store; read-only when the directory cannot be written."""
    try:
        return BlobStore(directory / BLOBS_DIR)
    except OSError:
        return _ReadOnlyBlobStore(directory / BLOBS_DIR)


@dataclass
class LoadedExperiment:
    """One experiment directory, validated."""

    directory: Path
    header: ExperimentHeader
    result: ValidationResult
    summary: Summary
    mode: ModeRow | None
    """Task success and plan validity (None with no complete run)."""
    blobs: BlobStore
    torn_line: int | None
    """A torn last line of events.jsonl that was dropped."""
    unfinished_runs: tuple[int, ...]
    """Runs that started but never finished (a killed process)."""
    finished: bool
    slug: str = ""
    """Its folder in a site of several experiments ("" when it is the only one)."""

    @property
    def name(self) -> str:
        return self.directory.name or str(self.directory)

    @property
    def records(self) -> tuple[RunRecord, ...]:
        return self.result.runs

    def violations_by_run(self) -> dict[int, list[Violation]]:
        found: dict[int, list[Violation]] = {}
        for violation in self.result.violations:
            found.setdefault(violation.run, []).append(violation)
        return found

    def notes(self) -> list[str]:
        """What is missing or partial, one line each (the summary's notes first)."""
        lines = list(self.summary.notes)
        if self.torn_line is not None:
            lines.append(f"events.jsonl ends in a torn line ({self.torn_line}), dropped: the process was killed")
        if self.unfinished_runs:
            shown = ", ".join(str(run) for run in self.unfinished_runs[:10])
            lines.append(f"{len(self.unfinished_runs)} run(s) started but never finished, not shown: {shown}")
        if not self.finished and not self.unfinished_runs and self.torn_line is None:
            lines.append("the experiment has no 'finished' record: it may still be running or was stopped")
        return lines


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "experiment"


def load_experiment(directory: Path) -> LoadedExperiment:
    """Read and validate an experiment directory.

    Raises:
        TestbedError: not a directory, not an experiment, a corrupt line, or no header.
    """
    if not directory.is_dir():
        raise TestbedError(f"{directory}: no such experiment directory")
    try:
        log = read_events(directory)
    except UnicodeDecodeError:
        raise TestbedError(f"{directory}: events.jsonl is not UTF-8 text: not an experiment") from None
    except OSError as error:
        raise TestbedError(f"{directory}: cannot read events.jsonl ({error.strerror or error})") from None
    header = next((event for event in log.events if isinstance(event, ExperimentHeader)), None)
    if header is None:
        raise TestbedError(f"{directory}: events.jsonl has no experiment header: not an experiment")
    blobs = open_blobs(directory)
    records = split_runs(log.events, blobs)
    result = validate_runs(records, registered_validators())
    started = {event.run for event in log.events if isinstance(event, RunStarted)}
    finished_runs = {event.run for event in log.events if isinstance(event, RunFinished)}
    summary = summarize(result, source=str(directory))
    return LoadedExperiment(
        directory=directory,
        header=header,
        result=result,
        summary=summary,
        mode=mode_row(directory.name, result) if result.runs else None,
        blobs=blobs,
        torn_line=log.torn_line,
        unfinished_runs=tuple(sorted(started - finished_runs)),
        finished=any(isinstance(event, ExperimentFinished) for event in log.events),
    )


def assign_slugs(experiments: list[LoadedExperiment]) -> None:
    """Give each experiment a distinct folder name when a site holds several."""
    if len(experiments) == 1:
        experiments[0].slug = ""
        return
    used: set[str] = set()
    for index, experiment in enumerate(experiments):
        slug = _slug(experiment.name)
        if slug in used or slug in ("assets", "img", "index.html", "compare.html"):
            slug = f"{slug}-{index + 1}"
        used.add(slug)
        experiment.slug = slug
