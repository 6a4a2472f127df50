"""Regenerate docs/coords-violation.png: the run viewer's coords.mismatch page, rendered by headless Chromium.

Records six runs of scenarios/v1/detect_crop_incompatible.yaml (in process, CPU, seed 0), writes the viewer,
and screenshots its coords.mismatch page. Needs chromium (``./dev test`` installs it as root).

    .venv/bin/python docs/make_screenshot.py [--out docs/coords-violation.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio

from testbed.orchestrator import run_experiment
from testbed.scenario import load_scenario
from testbed.viewer import build_site

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "v1" / "detect_crop_incompatible.yaml"
RUNS = 6
WINDOW = (1100, 1250)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "coords-violation.png")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("chromium not found: install it (./dev test does, as root)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="testbed-screenshot-") as tmp:
        experiment = Path(tmp) / "detect_crop_incompatible"
        scenario = load_scenario(SCENARIO).model_copy(update={"runs": RUNS})
        anyio.run(lambda: run_experiment(scenario, out_dir=experiment, device="cpu"))
        site = build_site([experiment], Path(tmp) / "viewer", per_id=4)
        page = site.directory / "violations" / "coords.mismatch.html"
        shot = Path(tmp) / "shot.png"
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--disable-background-networking",
                "--disable-component-update",
                f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--screenshot={shot}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            check=False,
            timeout=120,
        )
        if not shot.exists():
            print("chromium wrote no screenshot", file=sys.stderr)
            return 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
