"""One run as a timeline: each call with its outcome, the faults injected on it and the violations it caused."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.table import Table

from testbed._errors import TestbedError
from testbed.events import CallOutcomeKind
from testbed.validators import RunRecord, ValidationResult, validate_experiment


def find_run(result: ValidationResult, run: int, *, source: str = "experiment") -> RunRecord:
    """The complete run ``run`` of ``result``.

    Raises:
        TestbedError: that run was not recorded (or never finished).
    """
    for record in result.runs:
        if record.started.run == run:
            return record
    recorded = sorted(record.started.run for record in result.runs)
    known = f"complete runs: {_ranges(recorded)}" if recorded else "no complete runs"
    raise TestbedError(f"{source}: run {run} not recorded ({known})")


def _ranges(numbers: list[int]) -> str:
    spans: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        spans.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(spans)


def render_run(result: ValidationResult, run: int, console: Console, *, source: str = "experiment") -> None:
    """Print run ``run`` of ``result`` as a timeline table, then its run-level violations.

    Raises:
        TestbedError: that run was not recorded.
    """
    record = find_run(result, run, source=source)
    violations = [v for v in result.violations if v.run == run]
    faults = record.faults()
    calls = record.calls()
    started = record.started
    console.print(
        f"[bold]run {run}[/bold] — scene {started.scene_source} ({started.width}x{started.height}), "
        f"{len(calls)} calls, {len(faults)} faults injected, {len(violations)} violations"
    )
    table = Table(title_justify="left")
    for name in ("#", "node[item]", "server.tool", "outcome", "faults injected", "violations"):
        table.add_column(name, overflow="fold")
    linked: set[int] = set()
    for number, (_, call) in enumerate(calls):
        on_call = [f for _, f in faults if (f.node, f.item, f.server) == (call.node, call.item, call.server)]
        found = [(i, v) for i, v in enumerate(violations) if v.node == call.node and v.item == call.item]
        linked.update(i for i, _ in found)
        outcome = call.outcome.value + (f": {call.error}" if call.error else "")
        style = "green" if call.outcome is CallOutcomeKind.OK else "red"
        table.add_row(
            str(number),
            f"{call.node}[{call.item}]",
            f"{call.server}.{call.tool}",
            f"[{style}]{outcome}[/{style}]",
            "\n".join(f"{f.kind} ({f.layer})" for f in on_call) or "-",
            "\n".join(f"{v.id}: {v.detail}" for _, v in found) or "-",
        )
    console.print(table)
    rest = [v for i, v in enumerate(violations) if i not in linked]
    if rest:
        console.print("violations not linked to a call:")
        for violation in rest:
            where = f" at {violation.node}[{violation.item}]" if violation.node is not None else ""
            console.print(f"  {violation.id}{where}: {violation.detail}")


def show_run(directory: Path, run: int) -> str:
    """Run ``run`` of the experiment in ``directory`` as a plain-text timeline.

    Raises:
        TestbedError: the directory is not an experiment, or the run was not recorded.
    """
    console = Console(file=io.StringIO(), width=160, color_system=None, record=True)
    render_run(validate_experiment(directory), run, console, source=str(directory))
    return console.export_text()
