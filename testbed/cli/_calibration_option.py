"""The ``--calibration-runs`` option that every ``testbed reproduce`` part with a report takes."""

from __future__ import annotations

import click

from testbed.reproduce import FULL_CALIBRATION_RUNS, QUICK_CALIBRATION_RUNS

__all__ = ["calibration_runs_option"]

calibration_runs_option = click.option(
    "--calibration-runs",
    type=click.IntRange(min=1),
    default=None,
    help=f"Runs per fault kind of the validators' calibration in the report [default: {FULL_CALIBRATION_RUNS}; "
    f"--quick: {QUICK_CALIBRATION_RUNS}].",
)
