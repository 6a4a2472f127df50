"""Build a viewer site: a static folder of HTML pages over one or more experiments, written all or nothing."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import webbrowser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed import __version__
from testbed._errors import TestbedError
from testbed.report._evidence import Evidence, sampled_evidence
from testbed.validators import Violation
from testbed.viewer._html import STYLE, esc, page
from testbed.viewer._load import LoadedExperiment, assign_slugs, load_experiment
from testbed.viewer._pages import ExperimentPages, compare_rows
from testbed.viewer._writer import SiteWriter

MARKER = ".testbed-viewer"
"""A file every finished site holds: only such a folder is ever replaced by a new site."""
DEFAULT_SITE_DIR = "viewer"
"""The site's folder inside a single experiment directory (``DIR/viewer``)."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SiteResult:
    """A written site."""

    directory: Path
    index: Path
    pages: int
    runs: int
    experiments: int
    load_seconds: float
    """Reading and validating the experiments."""
    write_seconds: float
    """Evidence figures and pages."""

    @property
    def seconds(self) -> float:
        return self.load_seconds + self.write_seconds


def default_site(directories: Sequence[Path]) -> Path:
    """``DIR/viewer`` for one experiment; ``viewer`` beside them (their common parent) for several."""
    if len(directories) == 1:
        return directories[0] / DEFAULT_SITE_DIR
    try:
        common = Path(os.path.commonpath([d.resolve() for d in directories]))
    except ValueError:  # different drives
        common = Path.cwd()
    return common / DEFAULT_SITE_DIR


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise TestbedError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and not (out / MARKER).exists() and any(out.iterdir()):
        raise TestbedError(f"{out}: exists and is not a viewer site; choose another --out (it is never overwritten)")


def _swap(tmp: Path, out: Path) -> None:
    """Put the finished site in place: the old one (if any) moves aside first, then goes."""
    if not out.exists():
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
    try:
        out.rename(old / "site")
        try:
            tmp.rename(out)
        except OSError:
            (old / "site").rename(out)  # the previous site goes back in place
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def build_site(
    directories: Sequence[Path],
    out: Path | None = None,
    *,
    per_id: int = 8,
    seed: int = 0,
    page_size: int = 100,
    progress: Progress | None = None,
) -> SiteResult:
    """Write the viewer site of one or more experiment directories.

    Every experiment is read and validated before anything is written; the site
    is written into a temporary folder beside ``out`` and renamed into place at
    the end, so a failure never leaves a half-written site behind.

    Args:
        directories: experiment directories.
        out: the site folder (default: :func:`default_site`). An existing folder is
            replaced only if it is an earlier viewer site (or empty).
        per_id: evidence figures drawn per violation ID (a seeded sample of runs).
        seed: the sample's seed.
        page_size: runs per run-list page.
        progress: called with a line on each step.

    Raises:
        TestbedError: a directory is not an experiment (or is corrupt), or ``out`` is not replaceable.
    """
    if not directories:
        raise TestbedError("no experiment directory given")
    say = progress or (lambda _line: None)
    started = time.perf_counter()
    experiments: list[LoadedExperiment] = []
    for directory in directories:
        say(f"reading and validating {directory}")
        experiments.append(load_experiment(directory))
    assign_slugs(experiments)
    load_seconds = time.perf_counter() - started
    target = out if out is not None else default_site(directories)
    _check_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".partial", dir=target.parent))
    except OSError as error:
        raise TestbedError(f"{target}: cannot write the site here ({error.strerror or error}); choose --out") from None
    begun = time.perf_counter()
    try:
        writer = SiteWriter(tmp)
        writer.write("assets/style.css", STYLE)
        writer.pages -= 1
        multi = len(experiments) > 1
        for experiment in experiments:
            say(f"writing the pages of {experiment.name} ({len(experiment.records)} runs)")
            samples, evidence, figures = sampled_evidence(
                experiment.records, experiment.result.violations, per_id=per_id, seed=seed
            )
            sampled: dict[Violation, Evidence] = {item.violation: item for items in evidence.values() for item in items}
            writer.pending.update(figures)
            pages = ExperimentPages(
                writer,
                experiment,
                samples,
                sampled,
                page_size=page_size,
                compare_href="compare.html" if multi else None,
            )
            pages.write_all()
        if multi:
            _write_multi_index(writer, experiments)
        (tmp / MARKER).write_text(
            json.dumps({"testbed": __version__, "experiments": [str(d) for d in directories]}) + "\n", encoding="utf-8"
        )
        _swap(tmp, target)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TestbedError(f"{target}: writing the site failed ({error.strerror or error}); nothing was left") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SiteResult(
        directory=target,
        index=target / "index.html",
        pages=writer.pages,
        runs=sum(len(e.records) for e in experiments),
        experiments=len(experiments),
        load_seconds=load_seconds,
        write_seconds=time.perf_counter() - begun,
    )


def _write_multi_index(writer: SiteWriter, experiments: Sequence[LoadedExperiment]) -> None:
    linked = [(exp, f"{exp.slug}/index.html") for exp in experiments]
    comparison = compare_rows(linked)
    listing = "".join(
        f'<li><a href="{esc(href)}">{esc(exp.name)}</a> — {esc(str(exp.header.scenario.get("name", "?")))}, '
        f"{len(exp.records)} runs <span class='muted'>({esc(str(exp.directory))})</span></li>"
        for exp, href in linked
    )
    crumbs = [("all experiments", "index.html")]
    writer.write(
        "index.html",
        page(
            "experiments",
            f"<h1>{len(experiments)} experiments</h1><ul>{listing}</ul>"
            f'<p><a href="compare.html">Compare them side by side</a></p>',
            root="",
            crumbs=crumbs,
        ),
    )
    writer.write(
        "compare.html",
        page(
            "comparison", f"<h1>Comparison of {len(experiments)} experiments</h1>{comparison}", root="", crumbs=crumbs
        ),
    )


_CONSOLE_BROWSERS = frozenset({"lynx", "w3m", "links", "elinks", "www-browser"})


def open_site(index: Path) -> bool:
    """Open the site in a graphical browser when one is available; False when none was started.

    Never a text-mode browser (it would take over the terminal), and on Linux only with a display.
    """
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    if getattr(browser, "name", "") in _CONSOLE_BROWSERS:
        return False
    try:
        return bool(browser.open(index.resolve().as_uri()))
    except (webbrowser.Error, OSError):
        return False
