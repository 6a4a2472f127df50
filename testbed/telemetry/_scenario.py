"""When a scenario's runs export spans: its ``observability`` key, or ``testbed run --spans``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from testbed._errors import TestbedError
from testbed.scenario import Scenario
from testbed.telemetry._hook import SPANS_FILE, active_session
from testbed.telemetry._session import SpanSession, span_session

__all__ = ["scenario_spans", "spans_setting"]


def scenario_spans(scenario: Scenario, directory: Path) -> contextlib.AbstractContextManager[SpanSession | None]:
    """A span session writing ``directory/spans.otlp.jsonl`` when the scenario asks for spans, else nothing.

    Re-entrant: inside an active session (the CLI's, or an experiment's around a live replay), it adds none.
    """
    if not scenario.observability.spans or active_session() is not None:
        return contextlib.nullcontext()
    return span_session(directory / SPANS_FILE, salt=f"{scenario.name}/seed-{scenario.seed}")


def spans_setting(
    scenario: Scenario, directory: Path, *, spans: bool, workers: int | None, executor: str
) -> tuple[Scenario, int | None, contextlib.AbstractContextManager[Any]]:
    """For ``testbed run``: the scenario (spans recorded in it, so a replay knows), the workers, the session.

    Spans are collected in this process, so a run with spans has one worker, here.

    Raises:
        TestbedError: spans asked for with several workers or the Ray executor.
    """
    if not (spans or scenario.observability.spans):
        return scenario, workers, contextlib.nullcontext()
    if executor != "local":
        raise TestbedError("--spans: spans are collected in this process; use --executor local")
    if workers is not None and workers > 1:
        raise TestbedError(f"--spans: spans are collected in this process; use --workers 1, not {workers}")
    if not scenario.observability.spans:
        observability = scenario.observability.model_copy(update={"spans": True})
        scenario = scenario.model_copy(update={"observability": observability})
    return scenario, 1, scenario_spans(scenario, directory)
