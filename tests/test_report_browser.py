"""The HTML report and the run viewer render in a real browser (headless Chromium).

The report's plots are checked on a screenshot. The viewer's pages (overview,
violation, run, run list, comparison) are driven over the DevTools protocol on
a pipe (``--remote-debugging-pipe``; no extra dependency): every image loads,
the DOM holds what each page type promises, no console error or failed load is
logged, every link in the DOM resolves to a file, and j/k move between runs.

``./dev test`` installs Debian's chromium where it can (as root). Outside CI a
machine without it skips these tests; under ``CI=true`` a missing browser fails them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import numpy as np
import pytest

from testbed.imaging import load_image
from testbed.metrics import summarize
from testbed.orchestrator import run_experiment
from testbed.report import write_report
from testbed.scenario import load_scenario
from testbed.validators import validate_experiment
from testbed.viewer import build_site

V1 = Path(__file__).resolve().parent.parent / "scenarios" / "v1"
pytestmark = pytest.mark.slow  # headless Chromium

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


# --- the run viewer, over the DevTools protocol ----------------------------------------------


class DevTools:
    """A headless Chromium driven over ``--remote-debugging-pipe`` (commands on fd 3, replies on fd 4)."""

    def __init__(self, browser: str, profile: Path) -> None:
        commands_in, self._commands = os.pipe()
        self._replies, replies_out = os.pipe()

        def wire() -> None:  # in the child, before exec: the pipe ends become fds 3 and 4
            os.dup2(commands_in, 3)
            os.dup2(replies_out, 4)

        self.process = subprocess.Popen(
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
                f"--user-data-dir={profile}",
                "--window-size=1280,1600",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=wire,  # no threads here; the pipe ends must be fds 3 and 4 exactly
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_in)
        os.close(replies_out)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session: str = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from chromium")
            ready, _, _ = select.select([self._replies], [], [], left)
            if ready:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise EOFError("chromium closed its pipe")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False) -> dict[str, Any]:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_for(self, method: str) -> None:
        for index, event in enumerate(self.events):
            if event.get("method") == method and event.get("sessionId") == self.session:
                del self.events[index]
                return
        deadline = time.monotonic() + 60
        while True:
            event = self._read(deadline)
            if event.get("method") == method and event.get("sessionId") == self.session:
                return
            self.events.append(event)

    def open(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def press(self, key: str) -> None:
        if len(key) == 1:
            down: dict[str, Any] = {"type": "keyDown", "key": key, "text": key}
        else:  # a named key (ArrowRight...) has no text; the page's handler reads event.key
            codes = {"ArrowLeft": 37, "ArrowRight": 39}
            down = {"type": "rawKeyDown", "key": key, "code": key, "windowsVirtualKeyCode": codes[key]}
        self.send("Input.dispatchKeyEvent", down, session=True)
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key}, session=True)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads logged since the last page was opened."""
        self.evaluate("1")  # flush events the page logged while loading
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value")) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return found

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"])

    def close(self) -> None:
        with contextlib.suppress(EOFError, TimeoutError, OSError, RuntimeError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)


@pytest.fixture(scope="module")
def devtools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    browser = DevTools(_chromium(), tmp_path_factory.mktemp("profile"))
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def viewer_site(recorded_v1_copy: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two experiments (so a comparison page), three runs per list page (so several list pages)."""
    root = tmp_path_factory.mktemp("viewer")
    incompatible = recorded_v1_copy("detect_crop_incompatible", root / "incompatible", 6)
    compatible = recorded_v1_copy("detect_crop", root / "compatible", 6)
    return build_site([incompatible, compatible], root / "site", page_size=3, per_id=3).directory


PAGE_CHECKS = {
    "index.html": "document.querySelectorAll('a[href$=\"/index.html\"]').length >= 2",
    "compare.html": "[...document.querySelectorAll('table')].some(t => t.innerText.includes('task success'))",
    "incompatible/index.html": "document.querySelectorAll('a[href*=\"/runs/\"]').length >= 3"
    " && document.body.innerText.includes('task success')",
    "incompatible/runs/page-2.html": "document.querySelectorAll('a[href$=\"3.html\"]').length >= 1",
    "incompatible/violations/coords.mismatch.html": "document.querySelectorAll('.gallery figure img').length >= 1"
    " && document.body.innerText.includes('A box crosses an edge')",
    "incompatible/runs/3.html": "document.getElementById('v-coords.mismatch') !== null"
    " && document.querySelectorAll('details').length >= 5"
    " && document.querySelectorAll('svg.overlay image, .evidence > img').length >= 1"
    " && document.querySelectorAll('img.thumb').length >= 1",
    "compatible/index.html": "document.body.innerText.includes('No violations to tabulate.')",
}


def test_every_viewer_page_type_renders_without_errors(devtools: DevTools, viewer_site: Path) -> None:
    for relative, check in PAGE_CHECKS.items():
        devtools.open((viewer_site / relative).resolve().as_uri())
        broken = devtools.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0, f"{relative}: {broken} images did not load"
        assert devtools.evaluate(check) is True, f"{relative}: {check}"
        assert devtools.problems() == [], relative


def test_every_link_in_the_viewers_dom_resolves(devtools: DevTools, viewer_site: Path) -> None:
    checked = 0
    for relative in PAGE_CHECKS:
        devtools.open((viewer_site / relative).resolve().as_uri())
        urls = devtools.evaluate(
            "[...document.querySelectorAll('a[href], img[src], link[href], image')]"
            ".map(e => e.href && e.href.baseVal !== undefined ? new URL(e.href.baseVal, location.href).href"
            " : (e.href || e.src))"
        )
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https"):
                continue  # a catalog source cited as a plain link, never loaded
            assert parts.scheme == "file", url
            assert Path(unquote(parts.path)).exists(), f"{relative}: {url}"
            checked += 1
    assert checked > 50


def test_coords_evidence_is_visible_on_the_violation_page(devtools: DevTools, viewer_site: Path) -> None:
    devtools.open((viewer_site / "incompatible" / "violations" / "coords.mismatch.html").resolve().as_uri())
    shot = devtools.screenshot()
    path = viewer_site.parent / "coords.png"
    path.write_bytes(shot)
    image = load_image(path).astype(np.int32)
    consumer_red = np.array([235, 25, 25])
    producer_cyan = np.array([0, 185, 255])
    assert int((np.abs(image - consumer_red).sum(axis=2) < 40).sum()) > 200, "the consumer's box is not visible"
    assert int((np.abs(image - producer_cyan).sum(axis=2) < 40).sum()) > 100, "the producer's box is not visible"


def test_keys_move_between_runs(devtools: DevTools, viewer_site: Path) -> None:
    devtools.open((viewer_site / "incompatible" / "runs" / "3.html").resolve().as_uri())
    for key, expected in (("j", "4.html"), ("k", "3.html"), ("ArrowRight", "4.html"), ("ArrowLeft", "3.html")):
        devtools.events.clear()
        devtools.press(key)
        devtools.wait_for("Page.loadEventFired")
        assert devtools.evaluate("location.pathname").endswith(f"/runs/{expected}"), key
    devtools.press("u")
    devtools.wait_for("Page.loadEventFired")
    assert devtools.evaluate("location.pathname").endswith("/runs/page-2.html")
