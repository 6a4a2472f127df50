"""The HTML report renders in a real browser with its plots visible (headless Chromium screenshot).

``./dev test`` installs Debian's chromium where it can (as root). Outside CI a
machine without it skips this test; under ``CI=true`` a missing browser fails it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import anyio
import numpy as np
import pytest

from testbed.imaging import load_image
from testbed.metrics import summarize
from testbed.orchestrator import run_experiment
from testbed.report import write_report
from testbed.scenario import load_scenario
from testbed.validators import validate_experiment

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"
BAR_RGB = np.array([0x4C, 0x72, 0xB0])
"""The colour of the report's bars."""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: ./dev test installs Debian's chromium package")
        pytest.skip("chromium is not installed")
    return found


def test_html_report_plots_are_visible_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    scenario = load_scenario(V1 / "detect_crop_incompatible.yaml").model_copy(update={"runs": 4})
    anyio.run(lambda: run_experiment(scenario, out_dir=tmp_path / "exp", device="cpu"))
    files = write_report(summarize(validate_experiment(tmp_path / "exp")), tmp_path / "report")
    shot = tmp_path / "shot.png"
    completed = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1400",
            files.html.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), completed.stderr[-2000:]
    image = load_image(shot).astype(np.int32)
    bar_pixels = int((np.abs(image - BAR_RGB).sum(axis=2) < 12).sum())
    # The two bar charts' bars (coords.mismatch and coords.out_of_bounds at 100 per 100 runs) are large.
    assert bar_pixels > 20_000, f"only {bar_pixels} bar-coloured pixels: the plots did not render"
    assert (image.sum(axis=2) < 200).sum() > 5_000, "no dark text pixels: the page did not render"
