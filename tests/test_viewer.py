"""The run viewer (``testbed view``), violation evidence, and the terminal and script outputs of ``testbed report``.

Pages are checked from the files: every page type is written, every internal link and image resolves (anchors
included), nothing is loaded from outside the site, and bad input gives a one-line error or a page that says what is
missing, never a half-written site. tests/test_report_browser.py renders the same pages in Chromium.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from testbed._errors import TestbedError
from testbed.cli import main
from testbed.events import BLOBS_DIR, EVENTS_FILE, BlobStore
from testbed.report import CSV_FIELDS
from testbed.report._evidence import EvidenceBuilder, sample_violations, sampled_evidence
from testbed.report._terminal import NON_TERMINAL_WIDTH, report_console
from testbed.validators import Violation, validate_experiment
from testbed.viewer import MARKER, build_site, load_experiment
from testbed.viewer import _pages as viewer_pages

RUNS = 6


@pytest.fixture(scope="module")
def experiment(recorded_v1_copy: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: the viewer stores evidence figures in the experiment's blobs/."""
    return recorded_v1_copy("detect_crop_incompatible", tmp_path_factory.mktemp("viewer") / "exp", RUNS)


@pytest.fixture(scope="module")
def site(experiment: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site([experiment], tmp_path_factory.mktemp("site") / "viewer", page_size=4).directory


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("href", "src") and value is not None:
                self.refs.append((tag, name, value))


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def walk_links(root: Path) -> tuple[int, list[str]]:
    """Follow every href and src of every page under ``root``; returns (references checked, problems)."""
    pages = {path: _parse(path) for path in root.rglob("*.html")}
    problems: list[str] = []
    checked = 0
    for path, parsed in pages.items():
        for tag, attribute, value in parsed.refs:
            parts = urlsplit(value)
            if parts.scheme in ("http", "https"):
                if not (tag == "a" and attribute == "href"):
                    problems.append(f"{path.relative_to(root)}: loads {value} from outside the site")
                continue
            if parts.scheme:
                problems.append(f"{path.relative_to(root)}: unexpected URL {value}")
                continue
            checked += 1
            target = (path.parent / parts.path).resolve() if parts.path else path.resolve()
            if root.resolve() not in (target, *target.parents):
                problems.append(f"{path.relative_to(root)}: {value} leaves the site")
            elif not target.exists():
                problems.append(f"{path.relative_to(root)}: {value} does not exist")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if parts.fragment not in ids:
                    problems.append(f"{path.relative_to(root)}: {value}: no element with that id")
    return checked, problems


def test_every_page_type_is_written_and_every_internal_link_resolves(site: Path) -> None:
    assert (site / "index.html").exists()
    assert (site / "assets" / "style.css").exists()
    assert (site / MARKER).exists()
    assert (site / "violations" / "coords.mismatch.html").exists()
    assert (site / "violations" / "coords.out_of_bounds.html").exists()
    assert sorted(p.name for p in (site / "runs").glob("[0-9]*.html")) == sorted(f"{r}.html" for r in range(RUNS))
    assert (site / "runs" / "page-2.html").exists()  # 6 runs, 4 per page
    checked, problems = walk_links(site)
    assert problems == []
    assert checked > 100


def test_overview_states_rates_task_success_descriptions_and_links_each_run(site: Path) -> None:
    page = (site / "index.html").read_text(encoding="utf-8")
    assert "task success" in page
    assert "A box crosses an edge in a convention other than the one its consumer reads." in page
    assert "runs affected /100 runs" in page
    assert 'href="runs/3.html"' in page  # the first page of the run list is on the overview: one click to run 3
    assert "By server" in page
    assert "crop-xywh" in page


def test_run_page_shows_why_its_coords_mismatch_was_flagged(site: Path) -> None:
    page = (site / "runs" / "3.html").read_text(encoding="utf-8")
    assert 'id="v-coords.mismatch"' in page
    assert "reads it as xywh/pixel/xy/top_left" in page  # the consumer's reading, in the legend
    assert "as it actually is (xyxy/pixel/xy/top_left)" in page  # the producer's box in its true convention
    assert "ground truth" in page
    assert "<svg" in page or 'src="../files/' in page
    assert re.search(r'<link rel="prev" href="2\.html">', page.replace("../runs/", ""))
    assert "location.href" in page  # keyboard navigation
    assert "<details>" in page
    assert "arguments" in page


def test_evidence_figures_are_stored_once_by_hash_in_the_blob_store(experiment: Path) -> None:
    result = validate_experiment(experiment)
    samples, evidence, figures = sampled_evidence(result.runs, result.violations, per_id=3, seed=0)
    blobs = BlobStore(experiment / BLOBS_DIR)
    assert set(samples) == {"coords.mismatch", "coords.out_of_bounds"}
    for items in evidence.values():
        for item in items:
            assert item.figure is not None
            stored = blobs.path(item.figure)
            assert stored is not None
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == item.figure
            assert stored.read_bytes() == figures[item.figure]
            assert stored.read_bytes().startswith(b"\x89PNG")
    again = sampled_evidence(result.runs, result.violations, per_id=3, seed=0)[2]
    assert set(again) == set(figures)  # same input, same bytes, same names


def test_the_sample_is_bounded_seeded_and_counted() -> None:
    found = [Violation("coords.mismatch", run, "crop", "crop", item, "x") for run in range(50) for item in range(3)]
    first = sample_violations(found, 5, seed=1)["coords.mismatch"]
    assert (first.occurrences, first.runs, len(first.chosen)) == (150, 50, 5)
    assert len({v.run for v in first.chosen}) == 5
    assert sample_violations(found, 5, seed=1)["coords.mismatch"].chosen == first.chosen
    assert sample_violations(found, 5, seed=2)["coords.mismatch"].chosen != first.chosen
    preferred = sample_violations(found, 5, seed=1, prefer=lambda v: v.item == 2)["coords.mismatch"]
    assert all(v.item == 2 for v in preferred.chosen)


def test_box_evidence_names_the_producer_and_consumer_readings(experiment: Path) -> None:
    result = validate_experiment(experiment)
    violation = next(v for v in result.violations if v.id == "coords.mismatch")
    record = next(r for r in result.runs if r.started.run == violation.run)
    evidence = EvidenceBuilder(record).build(violation)
    roles = {shape.role for shape in evidence.shapes}
    assert {"truth", "producer", "consumer"} <= roles
    assert evidence.missing == []
    assert [panel.caption for panel in evidence.panels] == ["what crop.crop returned"]


def test_mask_evidence_shows_the_mask_as_produced_and_as_read(recorded_v1: Callable[..., Path]) -> None:
    result = validate_experiment(recorded_v1("segment_polygon_crop_masked_incompatible", 2))
    violation = next(v for v in result.violations if v.id == "mask.encoding_mismatch")
    record = next(r for r in result.runs if r.started.run == violation.run)
    evidence = EvidenceBuilder(record).build(violation)
    assert evidence.masks is not None
    assert evidence.masks.produced is not None
    assert evidence.masks.produced.any()
    assert "coco_rle" in evidence.masks.read_label
    assert evidence.masks.read is not None or evidence.masks.read_error  # read, or why it cannot be


def test_handle_evidence_is_a_path_diagram(recorded_v1: Callable[..., Path]) -> None:
    from testbed.report._evidence import path_html

    result = validate_experiment(recorded_v1("detect_segment_crop_ttl", 2))
    violation = next(v for v in result.violations if v.id == "memory.retention_exceeded")
    record = next(r for r in result.runs if r.started.run == violation.run)
    evidence = EvidenceBuilder(record).build(violation)
    assert [hop.title for hop in evidence.hops] == ["issued by", "handle", "used by"]
    diagram = path_html(evidence)
    for text in ("issued by", "clock t=", "scope run-"):
        assert text in diagram


def test_permission_evidence_names_the_agent_and_the_call(experiment: Path) -> None:
    record = validate_experiment(experiment).runs[0]
    position, call = record.calls()[0]
    violation = Violation.at_call("perm.tool_not_granted", record.started.run, position, call, "not granted")
    evidence = EvidenceBuilder(record).build(violation)
    assert [hop.title for hop in evidence.hops] == ["agent", "called"]
    assert f"{call.server}.{call.tool}" in evidence.hops[1].lines


def test_several_experiments_get_a_comparison_page(
    experiment: Path, recorded_v1: Callable[..., Path], tmp_path: Path
) -> None:
    compatible = tmp_path / "detect_crop"
    shutil.copytree(recorded_v1("detect_crop", RUNS), compatible)
    site = build_site([experiment, compatible], tmp_path / "both").directory
    compare = (site / "compare.html").read_text(encoding="utf-8")
    for text in ("plan valid", "task success", "exp/index.html", "detect_crop/index.html"):
        assert text in compare
    assert (site / "exp" / "runs" / "0.html").exists()
    assert (site / "detect_crop" / "index.html").exists()
    assert walk_links(site)[1] == []


def test_view_command_writes_the_site_and_prints_its_address_last(experiment: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = CliRunner().invoke(main, ["view", str(experiment), "--out", str(out), "--no-open"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"open {(out / 'index.html').resolve().as_uri()}"


def test_view_refuses_a_directory_that_is_not_an_experiment_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    for target in (tmp_path, tmp_path / "missing"):
        result = CliRunner().invoke(main, ["view", str(target), "--no-open"])
        assert result.exit_code == 1
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert result.output.startswith("Error: ")
        assert "Traceback" not in result.output
    assert not (tmp_path / "viewer").exists()


def test_view_refuses_a_corrupt_log_in_one_line(experiment: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(experiment, broken)
    lines = (broken / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3][:40]
    (broken / EVENTS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["view", str(broken), "--no-open"])
    assert result.exit_code == 1
    assert "corrupt event" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_torn_last_line_is_stated_on_the_overview(experiment: Path, tmp_path: Path) -> None:
    torn = tmp_path / "torn"
    shutil.copytree(experiment, torn, ignore=shutil.ignore_patterns("viewer", "report"))
    with (torn / EVENTS_FILE).open("a", encoding="utf-8") as handle:
        handle.write('{"time": 1.0, "event": "run_started", "ru')
    site = build_site([torn], tmp_path / "site").directory
    assert "torn line" in (site / "index.html").read_text(encoding="utf-8")


def test_missing_blobs_are_named_where_their_images_would_be(experiment: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(experiment, bare, ignore=shutil.ignore_patterns("viewer", "report"))
    shutil.rmtree(bare / BLOBS_DIR)
    (bare / BLOBS_DIR).mkdir()
    site = build_site([bare], tmp_path / "site").directory
    run_page = (site / "runs" / "0.html").read_text(encoding="utf-8")
    assert "missing from blobs/" in run_page
    assert walk_links(site)[1] == []


def test_a_failed_build_leaves_no_site_and_keeps_the_previous_one(
    experiment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "site"
    build_site([experiment], out)
    before = (out / "index.html").read_text(encoding="utf-8")

    def explode(self: object, violation_id: str) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(viewer_pages.ExperimentPages, "write_violation", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        build_site([experiment], out)
    assert (out / "index.html").read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no partial folder left beside it
    with pytest.raises(RuntimeError):
        build_site([experiment], tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def test_the_viewer_never_replaces_a_folder_it_did_not_write(experiment: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me", encoding="utf-8")
    with pytest.raises(TestbedError, match="not a viewer site"):
        build_site([experiment], mine)
    assert (mine / "thesis.tex").read_text(encoding="utf-8") == "keep me"


def test_load_reports_unfinished_runs(experiment: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    shutil.copytree(experiment, cut, ignore=shutil.ignore_patterns("viewer", "report"))
    lines = (cut / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    last_finish = max(i for i, line in enumerate(lines) if '"run_finished"' in line)
    (cut / EVENTS_FILE).write_text("\n".join(lines[:last_finish]) + "\n", encoding="utf-8")
    loaded = load_experiment(cut)
    assert loaded.unfinished_runs == (RUNS - 1,)
    assert any("never finished" in note for note in loaded.notes())


# --- terminal and script output of `testbed report` ------------------------------------------


def test_report_prints_every_column_off_a_terminal_and_each_ids_description(experiment: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(experiment), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "servers flagged" in text
    assert "1/2 (50 %)" in text  # the last column's cells, whole
    assert re.search(r"^coords\.mismatch: A box crosses an edge", text, re.MULTILINE)
    assert "task success: " in text
    assert text.count("violation rates (all runs)") == 1
    assert max(len(line) for line in text.splitlines()) <= NON_TERMINAL_WIDTH


def test_report_console_is_wide_off_a_terminal() -> None:
    assert report_console(file=io.StringIO()).width == NON_TERMINAL_WIDTH


def test_report_formats_json_and_csv_for_scripts(experiment: Path, tmp_path: Path) -> None:
    as_json = CliRunner().invoke(main, ["report", str(experiment), "--out", str(tmp_path / "a"), "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["runs"] == RUNS
    assert document["catalog"]["coords.mismatch"]["severity"] == "violation"
    assert {row["id"] for row in document["rows"]} == {"coords.mismatch", "coords.out_of_bounds"}
    assert set(document["rows"][0]) == set(CSV_FIELDS)
    as_csv = CliRunner().invoke(main, ["report", str(experiment), "--out", str(tmp_path / "b"), "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == len(document["rows"])
    assert tuple(rows[0]) == CSV_FIELDS


def test_report_html_carries_catalog_text_task_success_and_evidence(experiment: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(experiment), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "What each ID means" in page
    assert "arXiv 2509.22814 §4 (coordinate conventions)" in page
    assert "task success: " in page
    assert "<h2>Evidence</h2>" in page
    assert (tmp_path / "r" / "violations.parquet").exists()


def test_dev_run_prints_the_violation_table_once_and_the_viewer_last() -> None:
    script = (Path(__file__).resolve().parent.parent / "dev").read_text(encoding="utf-8")
    branch = script[script.index("  run)") : script.index(";;", script.index("  run)"))]
    commands = [line.strip() for line in branch.splitlines() if "testbed" in line and not line.strip().startswith("#")]
    assert commands[0].endswith("--no-violations")
    assert 'testbed" report' in commands[1]
    assert commands[-1].startswith("exec")
    assert 'testbed" view' in commands[-1]
