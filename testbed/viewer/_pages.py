"""The viewer's pages: an overview, one page per violation ID, one per run, run lists, and a comparison."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from testbed.catalog import CATALOG
from testbed.events import (
    CallEvent,
    CallOutcomeKind,
    Direction,
    FaultEvent,
    LLMEvent,
    MessageEvent,
    PlanEvent,
    RetrievalEvent,
    RunFinished,
    ServerEvent,
)
from testbed.metrics import GroupKind, Interval, ModeRow, RateRow
from testbed.report._evidence import (
    Evidence,
    EvidenceBuilder,
    Sample,
    legend_html,
    path_html,
    store_figure,
    svg_overlay,
)
from testbed.report._format import metric_legend, scope_line
from testbed.validators import RunRecord, Violation
from testbed.viewer._html import (
    details,
    esc,
    interval_html,
    json_html,
    page,
    pager,
    table,
)
from testbed.viewer._load import LoadedExperiment
from testbed.viewer._writer import SiteWriter

MAX_EVIDENCE_PER_ID_IN_RUN = 12
"""Occurrences of one ID drawn on a run page; further ones are listed without a figure."""


def id_file(violation_id: str) -> str:
    """The file name of an ID's page (IDs are ``category.name``; plug-in IDs may hold other characters)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", violation_id) + ".html"


def _severity(violation_id: str) -> str:
    found = CATALOG.get(violation_id)
    return found.severity.value if found is not None else "unknown"


def _behaviour(violation_id: str) -> str:
    found = CATALOG.get(violation_id)
    return found.behaviour if found is not None else "Not in this install's catalog (a plug-in's ID?)."


def _source_html(violation_id: str) -> str:
    found = CATALOG.get(violation_id)
    if found is None:
        return '<span class="muted">unknown</span>'
    match = re.match(r"https?://\S+", found.source)
    if match:
        return f'<a href="{esc(found.source)}" rel="noreferrer">{esc(found.source)}</a>'
    return esc(found.source)


def _share(interval: Interval | None, passed: int | None, total: int) -> str:
    if interval is None or passed is None:
        return '<span class="muted">n/a</span>'
    return interval_html(interval, scale=100, suffix=f" ({passed}/{total})")


@dataclass
class ExperimentPages:
    """Writes the pages of one experiment into a site."""

    site: SiteWriter
    exp: LoadedExperiment
    samples: dict[str, Sample]
    sampled: dict[Violation, Evidence]
    page_size: int = 100
    mask_figure_budget: int = 200
    """Mask figures drawn on run pages outside the sample (rasterised), per experiment."""
    by_run: dict[int, list[Violation]] = field(default_factory=dict)
    compare_href: str | None = None
    """Site-relative link to the comparison page, when the site holds several experiments."""

    def __post_init__(self) -> None:
        self.by_run = self.exp.violations_by_run()
        self.base = f"{self.exp.slug}/" if self.exp.slug else ""
        self.runs = [record.started.run for record in self.exp.records]
        self.position = {run: index for index, run in enumerate(self.runs)}

    # --- paths (site-relative) ------------------------------------------------------------

    def overview_path(self) -> str:
        return f"{self.base}index.html"

    def run_path(self, run: int) -> str:
        return f"{self.base}runs/{run}.html"

    def list_path(self, number: int) -> str:
        return f"{self.base}index.html#runs" if number == 1 else f"{self.base}runs/page-{number}.html"

    def id_path(self, violation_id: str) -> str:
        return f"{self.base}violations/{id_file(violation_id)}"

    def id_runs_path(self, violation_id: str, number: int) -> str:
        if number == 1:
            return f"{self.id_path(violation_id)}#runs"
        return f"{self.base}violations/{id_file(violation_id)[:-5]}.runs-{number}.html"

    def _up(self, path: str) -> str:
        return "../" * path.count("/")

    def _crumbs(self, up: str) -> list[tuple[str, str]]:
        crumbs = []
        if self.compare_href is not None:
            crumbs.append(("all experiments", up + "index.html"))
        crumbs.append((self.exp.name, up + self.overview_path()))
        return crumbs

    def _blob_link(self, up: str) -> Any:
        def link(digest: str) -> tuple[str, str] | None:
            found = self.site.blob(self.exp.blobs, digest)
            return (up + found[0], found[1]) if found is not None else None

        return link

    def _image_href(self, up: str) -> Any:
        def href(digest: str) -> str | None:
            found = self.site.blob(self.exp.blobs, digest)
            return up + found[0] if found is not None and found[1] == "image" else None

        return href

    # --- writing --------------------------------------------------------------------------

    def write_all(self) -> None:
        self.write_overview()
        pages = self._run_pages()
        for number in range(2, pages + 1):
            self.write_run_list(number, pages)
        for violation_id in self.exp.summary.ids:
            self.write_violation(violation_id)
        for index, record in enumerate(self.exp.records):
            previous = self.runs[index - 1] if index > 0 else None
            following = self.runs[index + 1] if index + 1 < len(self.runs) else None
            self.write_run(record, previous, following)

    def _run_pages(self) -> int:
        return max(1, -(-len(self.runs) // self.page_size))

    # --- overview -------------------------------------------------------------------------

    def write_overview(self) -> None:
        path = self.overview_path()
        up = self._up(path)
        exp, summary = self.exp, self.exp.summary
        header = exp.header
        scenario = header.scenario
        name, version = esc(str(scenario.get("name", "experiment"))), esc(str(scenario.get("version", "?")))
        parts = [f"<h1>{name} <span class='muted'>v{version}</span></h1>"]
        if scenario.get("description"):
            parts.append(f"<p>{esc(str(scenario['description']))}</p>")
        parts.append(
            f"<p class='muted'>experiment {esc(header.experiment_id)} · "
            f"directory <code>{esc(str(exp.directory))}</code>"
            f" · seed {header.seed} · device {esc(header.device)} · git {esc(header.git_revision or 'unknown')}</p>"
        )
        parts += [f'<p class="note"><strong>Note:</strong> {esc(note)}</p>' for note in exp.notes()]
        parts.append(f"<p>{esc(scope_line(summary))}</p>")
        parts.append(self._headline())
        parts.append(self._rates_section(up))
        parts.append(self._groups_section(up))
        parts.append(self._faults_section(up))
        parts.append(self._servers_section())
        parts.append(f'<h2 id="runs">Runs</h2>{self._run_list(1, up)}')
        parts.append(self._header_details())
        self.site.write(path, page(f"{exp.name}: overview", "\n".join(parts), root=up, crumbs=self._crumbs(up)))

    def _headline(self) -> str:
        mode = self.exp.mode
        rows = [["complete runs", f"{self.exp.summary.runs} of {self.exp.header.runs} planned"]]
        if mode is not None:
            rows.append(
                ["task success (Wilson 95 %)", _share(mode.task_success, mode.task_passed_runs, mode.task_checked_runs)]
            )
            if mode.plan_valid_runs is not None:
                rows.append(["plan validity", _share(mode.plan_validity, mode.plan_valid_runs, mode.runs)])
            rows.append(
                [
                    "runs with a violation-severity finding /100",
                    interval_html(mode.violation_runs_per_100, suffix=f" ({mode.violation_runs}/{mode.runs})"),
                ]
            )
            rows.append(
                [
                    "findings /100 executions",
                    interval_html(mode.occurrences_per_100_executions, bar=False)
                    + f" ({mode.occurrences}/{mode.executions})",
                ]
            )
        return "<h2>At a glance</h2>" + table(["measure", "value"], rows)

    def _rates_section(self, up: str) -> str:
        overall = self.exp.summary.overall()
        if not overall:
            return "<h2>Violation rates</h2><p>No violations to tabulate.</p>"
        rows = []
        for row in overall:
            rows.append(
                [
                    f'<a href="{up}{self.id_path(row.id)}">{esc(row.id)}</a>',
                    f'<span class="badge {esc(row.severity)}">{esc(row.severity)}</span>',
                    esc(_behaviour(row.id)),
                    interval_html(row.runs_affected_per_100, suffix=f" ({row.runs_affected}/{row.runs})"),
                    interval_html(row.per_100_executions, bar=False, suffix=f" ({row.occurrences}/{row.executions})"),
                    self._servers_text(row),
                ]
            )
        legend = "".join(f"<li>{esc(line)}</li>" for line in metric_legend(self.exp.summary))
        return (
            "<h2>Violation rates (all runs)</h2>"
            + table(
                ["ID", "severity", "what it means", "runs affected /100 runs", "per 100 executions", "servers flagged"],
                rows,
                numeric=frozenset({3, 4, 5}),
            )
            + f'<ul class="muted">{legend}</ul>'
        )

    @staticmethod
    def _servers_text(row: RateRow) -> str:
        percent = row.servers_flagged_percent
        return "n/a" if percent is None else f"{row.servers_flagged}/{row.servers_total} ({percent:.0f} %)"

    def _groups_section(self, up: str) -> str:
        parts = []
        titles = {GroupKind.SERVER: "By server", GroupKind.FAULT: "By fault kind", GroupKind.AGENT: "By agent kind"}
        for kind, heading in titles.items():
            rows = self.exp.summary.rows_for(kind)
            if not rows:
                continue
            cells = [
                [
                    esc(row.group.name),
                    f'<a href="{up}{self.id_path(row.id)}">{esc(row.id)}</a>',
                    interval_html(row.runs_affected_per_100, suffix=f" ({row.runs_affected}/{row.runs})"),
                    interval_html(row.per_100_executions, bar=False, suffix=f" ({row.occurrences}/{row.executions})"),
                    self._servers_text(row),
                ]
                for row in rows
            ]
            parts.append(
                f"<h3>{heading}</h3>"
                + table(
                    [kind.value, "ID", "runs affected /100 runs", "per 100 executions", "servers flagged"],
                    cells,
                    numeric=frozenset({2, 3, 4}),
                )
            )
        return "<h2>By server, fault kind and agent kind</h2>" + "".join(parts) if parts else ""

    def _faults_section(self, up: str) -> str:
        injected: Counter[str] = Counter()
        applied: Counter[str] = Counter()
        runs: dict[str, set[int]] = {}
        layers: dict[str, str] = {}
        expected: dict[str, set[str]] = {}
        for record in self.exp.records:
            for _, fault in record.faults():
                injected[fault.kind] += 1
                applied[fault.kind] += int(fault.applied)
                runs.setdefault(fault.kind, set()).add(record.started.run)
                layers[fault.kind] = fault.layer.value
                expected.setdefault(fault.kind, set()).update(fault.expected)
        if not injected:
            return "<h2>Faults injected</h2><p>None.</p>"
        rows = []
        for kind in sorted(injected):
            seen = {v.id for run in runs[kind] for v in self.by_run.get(run, [])}
            wanted = sorted(expected[kind])
            found = [f'<span class="{"ok" if w in seen else "bad"}">{esc(w)}</span>' for w in wanted]
            examples = sorted(runs[kind])[:8]
            rows.append(
                [
                    esc(kind),
                    esc(layers[kind]),
                    str(injected[kind]),
                    str(applied[kind]),
                    " ".join(f'<a href="{up}{self.run_path(r)}">{r}</a>' for r in examples)
                    + (f" … ({len(runs[kind])} runs)" if len(runs[kind]) > len(examples) else ""),
                    ", ".join(found) or '<span class="muted">none (tolerable)</span>',
                ]
            )
        return "<h2>Faults injected</h2>" + table(
            ["kind", "layer", "injected", "applied", "runs", "expected IDs (green: seen in those runs)"],
            rows,
            numeric=frozenset({2, 3}),
        )

    def _servers_section(self) -> str:
        calls: Counter[tuple[str, str]] = Counter()
        for record in self.exp.records:
            for _, call in record.calls():
                calls[(call.server, call.outcome.value)] += 1
        rows = []
        for server in self.exp.header.servers:
            outcomes = {o: n for (s, o), n in calls.items() if s == server.alias}
            text = ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items())) or "no calls"
            rows.append([esc(server.alias), esc(server.server), esc(server.transport), esc(text)])
        return "<h2>Servers</h2>" + table(["alias", "server", "transport", "calls by outcome"], rows)

    def _header_details(self) -> str:
        header = self.exp.header
        document = {
            "versions": header.versions,
            "weights": header.weights,
            "scenario_path": header.scenario_path,
            "scenario": header.scenario,
        }
        return "<h2>Recorded header</h2>" + details(
            "versions, weights and the resolved scenario", json_html(document, lambda _: None)
        )

    # --- run lists ------------------------------------------------------------------------

    def _run_row(self, record: RunRecord, up: str) -> list[str]:
        run = record.started.run
        finished = record.events[-1]
        task = "–"
        if isinstance(finished, RunFinished) and finished.task_passed is not None:
            task = '<span class="ok">pass</span>' if finished.task_passed else '<span class="bad">fail</span>'
        counts = Counter(v.id for v in self.by_run.get(run, []))
        badges = " ".join(
            f'<a class="badge {_severity(vid)}" href="{up}{self.run_path(run)}#v-{esc(vid)}">{esc(vid)}'
            + (f" ×{n}" if n > 1 else "")
            + "</a>"
            for vid, n in sorted(counts.items())
        )
        faults = Counter(fault.kind for _, fault in record.faults())
        calls = record.calls()
        failed = sum(1 for _, call in calls if call.outcome is not CallOutcomeKind.OK)
        error = finished.error if isinstance(finished, RunFinished) and finished.error else ""
        return [
            f'<a href="{up}{self.run_path(run)}">run {run}</a>',
            task,
            f"{len(calls)} ({failed} failed)" if failed else str(len(calls)),
            " ".join(
                f'<span class="badge fault">{esc(k)}{f" ×{n}" if n > 1 else ""}</span>'
                for k, n in sorted(faults.items())
            ),
            badges or '<span class="muted">none</span>',
            esc(error),
        ]

    def _run_list(self, number: int, up: str) -> str:
        pages = self._run_pages()
        start = (number - 1) * self.page_size
        records = self.exp.records[start : start + self.page_size]
        if not records:
            return "<p>No complete runs.</p>"
        rows = [self._run_row(record, up) for record in records]
        nav = pager(number, pages, lambda n: up + self.list_path(n))
        shown = f"<p class='muted'>runs {records[0].started.run}–{records[-1].started.run} of {len(self.runs)}</p>"
        return shown + nav + table(["run", "task", "calls", "faults", "violations", "error"], rows) + nav

    def write_run_list(self, number: int, pages: int) -> None:
        path = self.list_path(number)
        up = self._up(path)
        links = {"up": up + self.overview_path()}
        if number > 1:
            links["prev"] = up + self.list_path(number - 1).replace("#runs", "")
        if number < pages:
            links["next"] = up + self.list_path(number + 1)
        body = f"<h1>Runs, page {number} of {pages}</h1>" + self._run_list(number, up)
        self.site.write(
            path,
            page(
                f"{self.exp.name}: runs page {number}", body, root=up, crumbs=self._crumbs(up), links=links, keys=True
            ),
        )

    # --- violation pages ------------------------------------------------------------------

    def write_violation(self, violation_id: str) -> None:
        path = self.id_path(violation_id)
        up = self._up(path)
        sample = self.samples.get(violation_id)
        rows = [row for row in self.exp.summary.rows if row.id == violation_id]
        parts = [
            f"<h1>{esc(violation_id)} <span class='badge {_severity(violation_id)}'>"
            f"{esc(_severity(violation_id))}</span></h1>",
            f"<p><strong>{esc(_behaviour(violation_id))}</strong></p>",
            f"<p>Source: {_source_html(violation_id)}</p>",
        ]
        if sample is not None:
            parts.append(f"<p>{sample.occurrences} occurrences in {sample.runs} of {len(self.runs)} runs.</p>")
        parts.append(
            "<h2>Rates</h2>"
            + table(
                ["group", "runs affected /100 runs", "per 100 executions", "servers flagged"],
                [
                    [
                        esc(row.group.label),
                        interval_html(row.runs_affected_per_100, suffix=f" ({row.runs_affected}/{row.runs})"),
                        interval_html(
                            row.per_100_executions, bar=False, suffix=f" ({row.occurrences}/{row.executions})"
                        ),
                        self._servers_text(row),
                    ]
                    for row in rows
                ],
                numeric=frozenset({1, 2, 3}),
            )
        )
        parts.append(self._gallery(violation_id, sample, up))
        affected = sorted({v.run for v in self.exp.result.violations if v.id == violation_id})
        parts.append(
            f'<h2 id="runs">Runs affected ({len(affected)})</h2>' + self._id_runs(violation_id, affected, 1, up)
        )
        self.site.write(path, page(violation_id, "\n".join(parts), root=up, crumbs=self._crumbs(up)))
        pages = max(1, -(-len(affected) // (self.page_size * 5)))
        for number in range(2, pages + 1):
            extra = self.id_runs_path(violation_id, number)
            extra_up = self._up(extra)
            body = f"<h1>{esc(violation_id)}: runs affected, page {number}</h1>" + self._id_runs(
                violation_id, affected, number, extra_up
            )
            self.site.write(extra, page(violation_id, body, root=extra_up, crumbs=self._crumbs(extra_up)))

    def _id_runs(self, violation_id: str, affected: list[int], number: int, up: str) -> str:
        per_page = self.page_size * 5
        pages = max(1, -(-len(affected) // per_page))
        chunk = affected[(number - 1) * per_page : number * per_page]
        counts = Counter(v.run for v in self.exp.result.violations if v.id == violation_id)
        links = " ".join(
            f'<a href="{up}{self.run_path(run)}#v-{esc(violation_id)}">{run}'
            + (f"<sup>×{counts[run]}</sup>" if counts[run] > 1 else "")
            + "</a>"
            for run in chunk
        )
        nav = pager(number, pages, lambda n: up + self.id_runs_path(violation_id, n))
        return nav + f'<p class="runs-inline">{links}</p>' + nav

    def _gallery(self, violation_id: str, sample: Sample | None, up: str) -> str:
        if sample is None:
            return ""
        intro = (
            f"<p>Showing {len(sample.chosen)} of {sample.occurrences} occurrences ({sample.runs} runs): one per run, "
            f"runs chosen at random with seed {sample.seed}.</p>"
        )
        figures = []
        for violation in sample.chosen:
            evidence = self.sampled.get(violation)
            body = self._evidence_html(evidence, up) if evidence is not None else ""
            where = f"{violation.node}[{violation.item}]" if violation.node is not None else "run level"
            figures.append(
                f'<figure class="evidence">{body}<figcaption>'
                f'<a href="{up}{self.run_path(violation.run)}#v-{esc(violation.id)}">run {violation.run}</a>'
                f" · {esc(where)} · server {esc(violation.server or '–')}<br>{esc(violation.detail)}"
                "</figcaption></figure>"
            )
        return f"<h2>Evidence</h2>{intro}<div class='gallery'>{''.join(figures)}</div>"

    def _evidence_html(self, evidence: Evidence, up: str, *, vector: bool = False) -> str:
        parts = []
        if evidence.figure is not None and not vector:
            found = self.site.blob(self.exp.blobs, evidence.figure)
            if found is None:
                data = self.site.pending.get(evidence.figure)
                found = self.site.put(evidence.figure, data) if data is not None else None
            if found is not None:
                parts.append(f'<img src="{up}{found[0]}" alt="{esc(evidence.title)}">')
            else:
                parts.append(f'<p class="missing">figure {esc(evidence.figure[:12])} is missing</p>')
        elif evidence.kind == "boxes" and evidence.shapes:
            parts.append(svg_overlay(evidence, self._image_href(up)))
            parts.append(legend_html(evidence))
        elif evidence.kind == "path":
            parts.append(path_html(evidence))
        parts += [f'<p class="missing">evidence missing: {esc(line)}</p>' for line in evidence.missing]
        return "".join(parts)

    # --- run pages ------------------------------------------------------------------------

    def write_run(self, record: RunRecord, previous: int | None, following: int | None) -> None:
        run = record.started.run
        path = self.run_path(run)
        up = self._up(path)
        started = record.started
        violations = self.by_run.get(run, [])
        finished = record.events[-1]
        links = {"up": up + self.list_path(self.position[run] // self.page_size + 1).replace("#runs", "")}
        if previous is not None:
            links["prev"] = up + self.run_path(previous)
        if following is not None:
            links["next"] = up + self.run_path(following)
        nav = " · ".join(
            part
            for part in (
                f'<a href="{up}{self.run_path(previous)}">&#8592; run {previous}</a>' if previous is not None else "",
                f'<a href="{up}{self.list_path(self.position[run] // self.page_size + 1)}">all runs</a>',
                f'<a href="{up}{self.run_path(following)}">run {following} &#8594;</a>'
                if following is not None
                else "",
                '<a href="#timeline">timeline</a>',
            )
            if part
        )
        parts = [f"<p>{nav}</p>", f"<h1>Run {run}</h1>"]
        task = ""
        if isinstance(finished, RunFinished):
            if finished.task_passed is not None:
                verdict = (
                    '<span class="ok">passed</span>' if finished.task_passed else '<span class="bad">failed</span>'
                )
                task = f"task {verdict}: {esc(finished.task_detail)}"
            if finished.error:
                task += f' · <span class="bad">error: {esc(finished.error)}</span>'
        calls = record.calls()
        faults = record.faults()
        parts.append(
            f"<p>scene {esc(started.scene_source)} ({started.width}x{started.height}), scope {esc(started.scope)} · "
            f"{len(calls)} calls · {len(faults)} faults injected · {len(violations)} violations<br>{task}</p>"
        )
        parts.append(self._run_violations(record, violations, up))
        parts.append(self._scene(record, up))
        parts.append(self._timeline(record, violations, up))
        title = f"{self.exp.name}: run {run}"
        self.site.write(path, page(title, "\n".join(parts), root=up, crumbs=self._crumbs(up), links=links, keys=True))

    def _run_violations(self, record: RunRecord, violations: Sequence[Violation], up: str) -> str:
        if not violations:
            return "<h2>Violations</h2><p>None in this run.</p>"
        builder = EvidenceBuilder(record)
        parts = ["<h2>Violations</h2>"]
        grouped: dict[str, list[tuple[int, Violation]]] = {}
        for index, violation in enumerate(violations):
            grouped.setdefault(violation.id, []).append((index, violation))
        for violation_id, found in grouped.items():
            parts.append(
                f'<h3 id="v-{esc(violation_id)}"><a href="{up}{self.id_path(violation_id)}">{esc(violation_id)}</a> '
                f'<span class="badge {_severity(violation_id)}">{esc(_severity(violation_id))}</span> '
                f'<span class="muted">×{len(found)} · {esc(_behaviour(violation_id))}</span></h3>'
            )
            figures = []
            for count, (index, violation) in enumerate(found):
                where = f"{violation.node}[{violation.item}]" if violation.node is not None else "run level"
                timeline = f' · <a href="#e-{violation.evidence[-1]}">timeline</a>' if violation.evidence else ""
                caption = (
                    f"<figcaption><strong>{esc(where)}</strong> · server {esc(violation.server or '–')}{timeline}"
                    f"<br>{esc(violation.detail)}</figcaption>"
                )
                body = ""
                if count < MAX_EVIDENCE_PER_ID_IN_RUN:
                    body = self._run_evidence(builder, violation, up)
                elif count == MAX_EVIDENCE_PER_ID_IN_RUN:
                    caption += '<p class="muted">further occurrences are listed without figures</p>'
                figures.append(f'<figure class="evidence" id="v-{index}">{body}{caption}</figure>')
            parts.append(f'<div class="gallery">{"".join(figures)}</div>')
        return "".join(parts)

    def _run_evidence(self, builder: EvidenceBuilder, violation: Violation, up: str) -> str:
        sampled = self.sampled.get(violation)
        if sampled is not None:
            return self._evidence_html(sampled, up)
        evidence = builder.build(violation)
        if evidence.kind == "none":
            return ""
        if evidence.kind == "masks" and evidence.masks is not None:
            if self.mask_figure_budget <= 0:
                return '<p class="muted">mask figures are drawn for the first runs and the sampled occurrences only</p>'
            self.mask_figure_budget -= 1
            data = store_figure(evidence, self.exp.blobs)
            if data is not None and evidence.figure is not None:
                self.site.pending[evidence.figure] = data
        return self._evidence_html(evidence, up)

    def _scene(self, record: RunRecord, up: str) -> str:
        started = record.started
        found = self.site.blob(self.exp.blobs, started.image_blob)
        image = (
            f'<img src="{up}{found[0]}" alt="scene of run {started.run}">'
            if found is not None
            else f'<p class="missing">scene image {esc(started.image_blob[:12])} is missing from blobs/</p>'
        )
        rows = [
            [str(i), esc(g.class_name), esc(", ".join(f"{v:g}" for v in g.box_xyxy))]
            for i, g in enumerate(started.ground_truth)
        ]
        return f'<h2>Scene</h2><div class="scene">{image}</div>' + details(
            f"ground truth ({len(rows)} objects, boxes xyxy in pixels)", table(["#", "class", "box"], rows)
        )

    def _timeline(self, record: RunRecord, violations: Sequence[Violation], up: str) -> str:
        blob = self._blob_link(up)
        responses: dict[tuple[str, str, int], MessageEvent] = {}
        requests: dict[tuple[str, str, int], MessageEvent] = {}
        for event in record.events:
            if isinstance(event, MessageEvent) and event.node is not None and event.item is not None:
                key = (event.server, event.node, event.item)
                if event.direction is Direction.SERVER_TO_CLIENT and (
                    "result" in event.message or "error" in event.message
                ):
                    responses[key] = event
                elif event.direction is Direction.CLIENT_TO_SERVER and event.message.get("method") == "tools/call":
                    requests[key] = event
        faults_on: dict[tuple[str, str, int], list[FaultEvent]] = {}
        for _, fault in record.faults():
            faults_on.setdefault((fault.server, fault.node, fault.item), []).append(fault)
        by_call: dict[tuple[str, int], list[int]] = {}
        for index, violation in enumerate(violations):
            if violation.node is not None and violation.item is not None:
                by_call.setdefault((violation.node, violation.item), []).append(index)
        items = []
        for position, event in enumerate(record.events):
            if isinstance(event, CallEvent):
                items.append(
                    self._call_item(position, event, responses, requests, faults_on, by_call, violations, blob)
                )
            elif isinstance(event, FaultEvent):
                expected = ", ".join(event.expected) or "none (tolerable)"
                items.append(
                    f'<li id="e-{position}" class="fault"><span class="badge fault">fault injected</span> '
                    f"<strong>{esc(event.kind)}</strong> ({esc(event.layer.value)}) on {esc(event.server)} "
                    f"{esc(event.node)}[{event.item}]: {esc(event.detail)} · expected: {esc(expected)}</li>"
                )
            elif isinstance(event, LLMEvent):
                tokens = (
                    f" · {event.prompt_tokens}+{event.completion_tokens} tokens"
                    if event.prompt_tokens is not None
                    else ""
                )
                reply = f'<pre class="json">{esc(event.reply)}</pre>' if event.reply is not None else ""
                items.append(
                    f'<li id="e-{position}"><span class="badge">LLM</span> agent {esc(event.agent)} #{event.seq} · '
                    f"{esc(event.backend)} {esc(event.model)} · {esc(event.outcome)}{tokens} · {event.duration_s:.2f} s"
                    + (f' · <span class="bad">{esc(event.error)}</span>' if event.error else "")
                    + details("request", json_html(event.request, blob))
                    + (details("reply", reply, open_=True) if reply else "")
                    + "</li>"
                )
            elif isinstance(event, PlanEvent):
                verdict = '<span class="ok">valid</span>' if event.valid else '<span class="bad">invalid</span>'
                problems = "".join(f"<li>{esc(p)}</li>" for p in event.problems)
                items.append(
                    f'<li id="e-{position}"><span class="badge">plan</span> agent {esc(event.agent)} #{event.seq} '
                    f"({esc(event.kind)}) {verdict}"
                    + (f"<ul>{problems}</ul>" if problems else "")
                    + details("decision", json_html(event.plan, blob), open_=True)
                    + "</li>"
                )
            elif isinstance(event, RetrievalEvent):
                best = []
                for query, scores in zip(event.queries, event.scores, strict=False):
                    if scores:
                        top = max(range(len(scores)), key=lambda i: scores[i])
                        document = event.documents[top] if top < len(event.documents) else "?"
                        best.append([esc(query[:200]), esc(document[:200]), f"{scores[top]:.3f}"])
                items.append(
                    f'<li id="e-{position}"><span class="badge">retrieval</span> '
                    f"agent {esc(event.agent)} #{event.seq} · "
                    f"{esc(event.model)} · {len(event.queries)} queries × {len(event.documents)} documents"
                    + details(
                        "best match per query",
                        table(["query", "best document", "cosine"], best, numeric=frozenset({2})),
                    )
                    + "</li>"
                )
            elif isinstance(event, ServerEvent):
                items.append(
                    f'<li id="e-{position}"><span class="badge">server</span> {esc(event.server)} {esc(event.action)}: '
                    f"{esc(event.reason)}</li>"
                )
            elif isinstance(event, RunFinished):
                items.append(
                    f'<li id="e-{position}"><span class="badge">finished</span> {event.calls} calls, '
                    f"{event.failed_calls} failed · task: {esc(event.task_detail or 'none')}</li>"
                )
        return "<h2 id='timeline'>Timeline</h2><ol class='timeline'>" + "".join(items) + "</ol>"

    def _call_item(
        self,
        position: int,
        call: CallEvent,
        responses: dict[tuple[str, str, int], MessageEvent],
        requests: dict[tuple[str, str, int], MessageEvent],
        faults_on: dict[tuple[str, str, int], list[FaultEvent]],
        by_call: dict[tuple[str, int], list[int]],
        violations: Sequence[Violation],
        blob: Any,
    ) -> str:
        key = (call.server, call.node, call.item)
        ok = call.outcome is CallOutcomeKind.OK
        outcome = f'<span class="{"ok" if ok else "bad"}">{esc(call.outcome.value)}</span>'
        faults = faults_on.get(key, [])
        marks = "".join(
            f' <span class="badge fault" title="{esc(f.detail)}">fault: {esc(f.kind)}</span>' for f in faults
        )
        found = by_call.get((call.node, call.item), [])
        links = "".join(
            f' <a class="badge {_severity(violations[i].id)}" href="#v-{i}">{esc(violations[i].id)}</a>' for i in found
        )
        agent = f" · agent {esc(call.agent)}" if call.agent else ""
        adapters = f" · adapters {esc(', '.join(call.adapters))}" if call.adapters else ""
        error = f'<br><span class="bad">{esc(call.error)}</span>' if call.error else ""
        response = responses.get(key)
        request = requests.get(key)
        parts = [
            f'<li id="e-{position}"{" class=fault" if faults else ""}><strong>{esc(call.node)}[{call.item}]</strong> '
            f"{esc(call.server)}.{esc(call.tool)}{agent} · t={call.clock:g}s · {outcome}"
            f" · {call.duration_s * 1000:.0f} ms"
            f"{adapters}{marks}{links}{error}",
            details("arguments", json_html(call.arguments, blob), open_=bool(found)),
        ]
        if response is not None:
            parts.append(
                details("response", json_html(response.message.get("result", response.message.get("error")), blob))
            )
        elif call.payload is not None:
            parts.append(details("payload", json_html(call.payload, blob)))
        if request is not None:
            meta = (request.message.get("params") or {}).get("_meta")
            if meta:
                parts.append(details("request _meta (scope, clock)", json_html(meta, blob)))
        return "".join(parts) + "</li>"


def compare_rows(experiments: Sequence[tuple[LoadedExperiment, str]]) -> str:
    """The ``testbed compare`` table and every ID's rate per experiment, as HTML (hrefs relative to the page)."""
    rows = []
    for exp, href in experiments:
        mode: ModeRow | None = exp.mode
        if mode is None:
            rows.append([f'<a href="{esc(href)}">{esc(exp.name)}</a>', "–", "0", "n/a", "n/a", "n/a", "n/a"])
            continue
        rows.append(
            [
                f'<a href="{esc(href)}">{esc(exp.name)}</a>',
                esc(mode.agent_kind),
                str(mode.runs),
                _share(mode.plan_validity, mode.plan_valid_runs, mode.runs),
                _share(mode.task_success, mode.task_passed_runs, mode.task_checked_runs),
                interval_html(mode.violation_runs_per_100),
                interval_html(mode.occurrences_per_100_executions, bar=False),
            ]
        )
    modes = table(
        [
            "experiment",
            "agent",
            "runs",
            "plan valid",
            "task success",
            "runs with violations /100",
            "findings /100 executions",
        ],
        rows,
        numeric=frozenset({2}),
    )
    ids = sorted({row.id for exp, _ in experiments for row in exp.summary.overall()})
    matrix = []
    for violation_id in ids:
        cells = [f"{esc(violation_id)}"]
        for exp, href in experiments:
            row = next((r for r in exp.summary.overall() if r.id == violation_id), None)
            base = href.rsplit("/", 1)[0] + "/" if "/" in href else ""
            if row is None:
                cells.append('<span class="muted">0</span>')
                continue
            rate = interval_html(row.runs_affected_per_100, bar=False)
            cells.append(
                f'<a href="{esc(base)}violations/{id_file(violation_id)}">{rate}</a> ({row.runs_affected}/{row.runs})'
            )
        matrix.append(cells)
    per_id = (
        table(["ID", *(exp.name for exp, _ in experiments)], matrix, numeric=frozenset(range(1, len(experiments) + 1)))
        if ids
        else "<p>No violations in any experiment.</p>"
    )
    return (
        "<h2>Orchestration modes (95 % intervals)</h2>" + modes + "<h2>Runs affected per 100 runs, per ID</h2>" + per_id
    )
