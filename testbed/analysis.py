"""A recorded experiment as pandas DataFrames, for notebooks and scripts.

    >>> import testbed
    >>> exp = testbed.open_experiment("runs/inc")
    >>> exp.runs.task_passed.mean()               # share of runs whose task passed
    >>> exp.violations.groupby("id").run.nunique() # runs affected per ID
    >>> exp.summary()                              # the report's rate rows (violations.csv), as a DataFrame

Runs, calls and faults are read from ``events.jsonl`` alone; violations (and
the summary) validate the runs first, once, on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed._errors import TestbedError
from testbed.catalog import CATALOG
from testbed.events import ExperimentHeader, RunFinished, read_events
from testbed.metrics import Summary, summarize
from testbed.report._files import CSV_FIELDS, rate_records
from testbed.validators import RunRecord, ValidationResult, registered_validators, split_runs, validate_runs
from testbed.viewer._load import open_blobs

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Experiment", "open_experiment"]

RUN_COLUMNS = (
    "run",
    "scene_source",
    "width",
    "height",
    "objects",
    "agent_kind",
    "calls",
    "failed_calls",
    "faults",
    "task_passed",
    "task_detail",
    "error",
    "started",
    "duration_s",
)
CALL_COLUMNS = (
    "run",
    "position",
    "node",
    "item",
    "server",
    "server_name",
    "tool",
    "agent",
    "clock",
    "outcome",
    "error",
    "duration_s",
    "adapters",
    "arguments",
    "payload",
)
VIOLATION_COLUMNS = ("run", "id", "category", "severity", "server", "server_name", "node", "item", "detail", "evidence")
FAULT_COLUMNS = ("run", "node", "item", "server", "index", "kind", "layer", "applied", "expected", "detail")


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rows, columns=list(columns))


@dataclass
class Experiment:
    """One experiment directory. DataFrames are built on first access and kept."""

    directory: Path
    header: ExperimentHeader
    records: tuple[RunRecord, ...]
    torn_line: int | None = None
    """A torn last line of ``events.jsonl`` that was dropped (a killed process)."""
    _result: ValidationResult | None = field(default=None, repr=False)

    @property
    def validation(self) -> ValidationResult:
        """Every registered validator over every complete run (computed once)."""
        if self._result is None:
            self._result = validate_runs(self.records, registered_validators())
        return self._result

    @cached_property
    def runs(self) -> pd.DataFrame:
        """One row per complete run: its scene, task outcome, call and fault counts, and timing."""
        rows = []
        for record in self.records:
            finished = record.events[-1]
            assert isinstance(finished, RunFinished)
            rows.append(
                {
                    "run": record.started.run,
                    "scene_source": record.started.scene_source,
                    "width": record.started.width,
                    "height": record.started.height,
                    "objects": len(record.started.ground_truth),
                    "agent_kind": record.scenario.agent.kind,
                    "calls": finished.calls,
                    "failed_calls": finished.failed_calls,
                    "faults": len(record.faults()),
                    "task_passed": finished.task_passed,
                    "task_detail": finished.task_detail,
                    "error": finished.error,
                    "started": record.started.time,
                    "duration_s": finished.time - record.started.time,
                }
            )
        return _frame(rows, RUN_COLUMNS)

    @cached_property
    def calls(self) -> pd.DataFrame:
        """One row per tool call; ``arguments`` and ``payload`` are JSON text (large values as ``{"$blob": hash}``)."""
        rows = []
        for record in self.records:
            names = {server.alias: server.server for server in record.header.servers}
            for position, call in record.calls():
                rows.append(
                    {
                        "run": record.started.run,
                        "position": position,
                        "node": call.node,
                        "item": call.item,
                        "server": call.server,
                        "server_name": names.get(call.server),
                        "tool": call.tool,
                        "agent": call.agent,
                        "clock": call.clock,
                        "outcome": call.outcome.value,
                        "error": call.error,
                        "duration_s": call.duration_s,
                        "adapters": ",".join(call.adapters),
                        "arguments": json.dumps(call.arguments),
                        "payload": None if call.payload is None else json.dumps(call.payload),
                    }
                )
        return _frame(rows, CALL_COLUMNS)

    @cached_property
    def violations(self) -> pd.DataFrame:
        """One row per violation occurrence, with its catalog category and severity."""
        names = {server.alias: server.server for server in self.header.servers}
        rows = []
        for violation in self.validation.violations:
            entry = CATALOG.get(violation.id)
            rows.append(
                {
                    "run": violation.run,
                    "id": violation.id,
                    "category": violation.id.partition(".")[0],
                    "severity": entry.severity.value if entry is not None else "unknown",
                    "server": violation.server,
                    "server_name": names.get(violation.server) if violation.server is not None else None,
                    "node": violation.node,
                    "item": violation.item,
                    "detail": violation.detail,
                    "evidence": ",".join(str(p) for p in violation.evidence),
                }
            )
        frame = _frame(rows, VIOLATION_COLUMNS)
        frame["item"] = frame["item"].astype("Int64")
        return frame

    @cached_property
    def faults(self) -> pd.DataFrame:
        """One row per injected fault, with the violation IDs it was expected to cause (comma-separated)."""
        rows = []
        for record in self.records:
            for _, fault in record.faults():
                rows.append(
                    {
                        "run": fault.run,
                        "node": fault.node,
                        "item": fault.item,
                        "server": fault.server,
                        "index": fault.index,
                        "kind": fault.kind,
                        "layer": fault.layer.value,
                        "applied": fault.applied,
                        "expected": ",".join(fault.expected),
                        "detail": fault.detail,
                    }
                )
        return _frame(rows, FAULT_COLUMNS)

    def rates(self, confidence: float = 0.95) -> Summary:
        """The report's :class:`~testbed.metrics.Summary` (rates with intervals, per ID and group)."""
        return summarize(self.validation, source=str(self.directory), confidence=confidence)

    def summary(self, confidence: float = 0.95) -> pd.DataFrame:
        """The report's rate rows as a DataFrame: the columns of ``violations.csv``, one row per ID x group.

        Rates are ``NaN`` where undefined; ``description`` is the catalog's sentence for the ID.
        """
        import pandas as pd

        rows = [{k: (None if v == "" else v) for k, v in row.items()} for row in rate_records(self.rates(confidence))]
        frame = pd.DataFrame(rows, columns=list(CSV_FIELDS))
        frame["description"] = [CATALOG[i].behaviour if i in CATALOG else "" for i in frame["id"]]
        numeric = [c for c in CSV_FIELDS if c.endswith(("_100", "_low", "_high", "_percent"))]
        frame[numeric] = frame[numeric].astype("float64")
        return frame


def open_experiment(directory: str | Path) -> Experiment:
    """Open a recorded experiment directory for analysis.

    Raises:
        TestbedError: the directory is missing or is not an experiment (or a line other than the last is corrupt).
    """
    path = Path(directory)
    if not path.is_dir():
        raise TestbedError(f"{path}: no such experiment directory")
    log = read_events(path)
    header = next((event for event in log.events if isinstance(event, ExperimentHeader)), None)
    if header is None:
        raise TestbedError(f"{path}: events.jsonl has no experiment header: not an experiment")
    records = tuple(split_runs(log.events, open_blobs(path)))
    return Experiment(directory=path, header=header, records=records, torn_line=log.torn_line)
