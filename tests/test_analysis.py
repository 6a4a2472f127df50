"""``testbed.open_experiment``: an experiment as pandas DataFrames, the README's example, and the Parquet report."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import testbed
from testbed._errors import TestbedError
from testbed.events import CallEvent, FaultEvent, read_events
from testbed.metrics import summarize
from testbed.report import CSV_FIELDS, write_report
from testbed.validators import validate_experiment

RUNS = 6
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def incompatible(recorded_v1: Callable[..., Path]) -> Path:
    return recorded_v1("detect_crop_incompatible", RUNS)


def test_dataframes_hold_every_run_call_violation_and_fault(incompatible: Path) -> None:
    exp = testbed.open_experiment(incompatible)
    events = read_events(incompatible).events
    assert list(exp.runs.run) == list(range(RUNS))
    assert len(exp.calls) == sum(1 for e in events if isinstance(e, CallEvent))
    assert set(exp.calls.outcome) <= {"ok", "tool_error"}
    assert exp.faults.empty
    assert list(exp.faults.columns)[:3] == ["run", "node", "item"]
    violations = validate_experiment(incompatible).violations
    assert len(exp.violations) == len(violations)
    assert set(exp.violations.id) == {"coords.mismatch", "coords.out_of_bounds"}
    assert (exp.violations.server_name == "crop-xywh").all()
    assert exp.runs.task_passed.dtype == bool
    assert exp.runs.calls.sum() == len(exp.calls)


def test_faults_frame_lists_each_injected_fault(recorded_v1: Callable[..., Path]) -> None:
    from testbed.faults import load_faults

    directory = recorded_v1(
        "detect_crop",
        3,
        faults=load_faults([{"kind": "delay", "seconds": 0.01, "runs": [1], "target": {"server": "det"}}]),
    )
    exp = testbed.open_experiment(directory)
    recorded = [e for e in read_events(directory).events if isinstance(e, FaultEvent)]
    assert len(exp.faults) == len(recorded) >= 1
    assert set(exp.faults.kind) == {"delay"}
    assert set(exp.faults.run) == {1}


def test_summary_is_the_reports_rate_rows(incompatible: Path, tmp_path: Path) -> None:
    exp = testbed.open_experiment(incompatible)
    frame = exp.summary()
    files = write_report(summarize(validate_experiment(incompatible)), tmp_path)
    with files.csv.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(frame.columns) == [*CSV_FIELDS, "description"]
    assert len(frame) == len(rows)
    assert list(frame.id) == [row["id"] for row in rows]
    assert frame.runs_affected_per_100.tolist() == pytest.approx([float(row["runs_affected_per_100"]) for row in rows])
    assert frame.description.str.len().min() > 10


def test_the_parquet_report_is_real_and_matches_the_csv(incompatible: Path, tmp_path: Path) -> None:
    files = write_report(summarize(validate_experiment(incompatible)), tmp_path)
    assert files.parquet is not None
    assert files.parquet in files.paths()
    table = pd.read_parquet(files.parquet)
    assert list(table.columns) == list(CSV_FIELDS)
    assert pd.read_csv(files.csv).id.tolist() == table.id.tolist()


def test_readme_example_reproduces_the_report_figure(incompatible: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Looking at results") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    source = code.group(1).replace('"runs/inc"', repr(str(incompatible)))
    namespace: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), namespace)
    ax = namespace["ax"]
    labels = [label.get_text() for label in ax.get_yticklabels()]  # type: ignore[attr-defined]
    assert labels == ["coords.mismatch", "coords.out_of_bounds"]
    assert len(ax.patches) == 2  # type: ignore[attr-defined]
    pyplot.close("all")


def test_open_experiment_refuses_what_is_not_an_experiment(tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match="no such experiment directory"):
        testbed.open_experiment(tmp_path / "missing")
    with pytest.raises(TestbedError, match="not an experiment directory"):
        testbed.open_experiment(tmp_path)


def test_importing_testbed_does_not_import_pandas() -> None:
    import subprocess
    import sys

    code = "import sys, testbed, testbed.cli; print('pandas' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False"
