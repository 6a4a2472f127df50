"""The worked plug-in example (``examples/faulty-server-plugin``) installed, listed, run, checked and replayed
without it; broken plug-ins are one warning each and never stop the others.

Entry points are read once per process, so everything that needs the installed plug-in runs
``python -m testbed`` in a subprocess. The example is installed with pip, offline, into a folder of
its own that only those subprocesses see (``PYTHONPATH``): the project's virtual environment is never
changed, so tests running beside these never see the plug-in. "Uninstalled" is a subprocess without
that folder on its path, and the folder is removed when the module's tests end, failed or not.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint, distributions
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from testbed.faults import EffectContext, FaultLayer, NotApplicableError, PayloadFault, PayloadPath, read_path
from testbed.faults._effects import alter_result, payload_effect
from testbed.registry import GROUP, PluginError, Registry, fault_kind, load_entry_points, registering_as, registry
from testbed.transport import CallSite
from testbed.validators import validate_experiment

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "faulty-server-plugin"
SCENARIO = EXAMPLE / "scenario.yaml"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "plugins"

DISTRIBUTION = "faulty-server-plugin"
SERVER = f"{DISTRIBUTION}/detect-yxhw"
FAULT = f"{DISTRIBUTION}/swap_axes"
ORIGIN = f"{DISTRIBUTION} (faulty = faulty_detector)"
RUNS = 4
"""Runs per recorded experiment: the scenario's fault fires on runs 1 and 3."""
FAULTED_RUNS = {1, 3}
EXPECTED = {
    "schema.output_schema_missing",
    "schema.text_json_without_schema",
    "coords.undeclared",
    "conn.untyped_edge",
    "coords.mismatch",
    "coords.crop_misses_object",
}
"""The scenario's ``expect`` list: what the faulty server causes in every run."""
TIMEOUT_S = 300


# --- the example, installed -------------------------------------------------------------------


def _env(*paths: Path) -> dict[str, str]:
    """This environment, with ``paths`` (and only them) added to the import path; wide rich tables."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    outer = os.environ.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([*(str(path) for path in paths), *([outer] if outer else [])])
    env["COLUMNS"] = "250"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written next to the fixtures or the installed plug-in
    return env


def _testbed(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testbed", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example, pip-installed offline (no index, no build isolation) into a folder of its own; removed after."""
    base = tmp_path_factory.mktemp("faulty-server-plugin")
    try:
        source = base / "source"  # a copy: building writes build/ and *.egg-info next to the sources
        shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation"]
        done = subprocess.run(
            [*install, "--quiet", "--target", str(base / "site"), str(source)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"installing the example failed:\n{done.stdout}\n{done.stderr}"
        yield base / "site"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def with_plugin(plugin_site: Path) -> dict[str, str]:
    return _env(plugin_site)


@pytest.fixture(scope="module")
def without_plugin() -> dict[str, str]:
    return _env()


@dataclass(frozen=True)
class Recorded:
    transport: str
    directory: Path


@pytest.fixture(scope="module", params=["inprocess", "stdio"])
def recorded(
    request: pytest.FixtureRequest, with_plugin: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Recorded:
    """The example scenario recorded with the plug-in installed, its servers in process or each in its own process."""
    transport = str(request.param)
    directory = tmp_path_factory.mktemp(f"faulty-{transport}") / "experiment"
    options = ("--runs", str(RUNS), "--device", "cpu", "--transport", transport, "--out", directory)
    _ok(_testbed(with_plugin, "run", SCENARIO, *options))
    return Recorded(transport, directory)


def _events(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.slow
def test_plugins_lists_the_server_and_the_fault_kind_with_their_origin(
    with_plugin: dict[str, str], without_plugin: dict[str, str]
) -> None:
    result = _testbed(with_plugin, "plugins")
    listing = _ok(result)
    assert re.search(rf"│ server\s+│ {re.escape(SERVER)}\s+│ {re.escape(ORIGIN)}\s+│", listing), listing
    assert re.search(rf"│ fault kind\s+│ {re.escape(FAULT)}\s+│ {re.escape(ORIGIN)}\s+│", listing), listing
    assert f"faulty = faulty_detector ({DISTRIBUTION}): 2 registered" in listing
    assert "testbed: plug-in" not in result.stderr
    assert DISTRIBUTION not in _ok(_testbed(without_plugin, "plugins"))


@pytest.mark.slow
def test_scenario_check_accepts_the_scenario_only_with_the_plugin(
    with_plugin: dict[str, str], without_plugin: dict[str, str]
) -> None:
    assert "scenario.yaml: ok (faulty_plugin_detect_crop v1, scripted agent, 2 nodes)" in _ok(
        _testbed(with_plugin, "scenario", "check", SCENARIO)
    )
    refused = _testbed(without_plugin, "scenario", "check", SCENARIO)
    assert refused.returncode != 0
    assert re.search(rf"unknown (server|kind) '{DISTRIBUTION}/", refused.stderr), refused.stderr  # its first error


@pytest.mark.slow
def test_a_run_records_the_expected_violations_and_the_plugin_fault(recorded: Recorded) -> None:
    events = _events(recorded.directory)
    header = events[0]
    served = {server["alias"]: (server["server"], server["transport"]) for server in header["servers"]}
    assert served == {"det": (SERVER, recorded.transport), "crop": ("crop-xywh", recorded.transport)}
    faults = [event for event in events if event["event"] == "fault"]
    assert {event["run"] for event in faults} == FAULTED_RUNS
    assert all(event["kind"] == FAULT and event["applied"] for event in faults)
    assert all(re.fullmatch(r"x and y swapped in \d+ boxes at objects\[\*\]\.box", event["detail"]) for event in faults)
    # Validated here, in a process that never loaded the plug-in: the recording is all validators need.
    validation = validate_experiment(recorded.directory)
    assert not validation.failures
    assert {violation.id for violation in validation.violations} == EXPECTED
    # The validators see the fault: swapped boxes are [x, y, w, h] fractions, the others [y, x, h, w].
    read_as = {
        (violation.run in FAULTED_RUNS, match.group(1))
        for violation in validation.violations
        if violation.id == "coords.mismatch" and (match := re.search(r"value is (\S+) but", violation.detail))
    }
    assert read_as == {(True, "xywh/normalized/xy/top_left"), (False, "xywh/normalized/yx/top_left")}


@pytest.mark.slow
def test_replay_and_report_need_no_plugin(recorded: Recorded, without_plugin: dict[str, str]) -> None:
    replayed = _ok(_testbed(without_plugin, "replay", recorded.directory))
    assert f"reproduced {RUNS} runs" in replayed
    report = _ok(_testbed(without_plugin, "report", recorded.directory))
    assert all(violation_id in report for violation_id in EXPECTED)
    with (recorded.directory / "report" / "violations.csv").open(encoding="utf-8") as rows:
        found = {row["id"] for row in csv.DictReader(rows) if row["group_kind"] == "all" and int(row["occurrences"])}
    assert found == EXPECTED


@pytest.mark.slow
def test_check_proves_the_scenario_and_its_fault(with_plugin: dict[str, str]) -> None:
    output = _ok(_testbed(with_plugin, "check", SCENARIO, "--runs", "2"))
    assert "faulty_plugin_detect_crop: OK" in output
    row = rf"│ faulty_plugin_detect_crop\s+│ 0\s+│ {re.escape(FAULT)}\s+│ coords\.mismatch\s+│ [1-9]\d*\s+│ OK"
    assert re.search(row, output), output


# --- broken plug-ins --------------------------------------------------------------------------

BAD_POINTS = {
    "raises": "plugin_fixture_raises",
    "good": "plugin_fixture_good",
    "duplicate": "plugin_fixture_duplicate",
    "uncatalogued": "plugin_fixture_uncatalogued",
    "manifest": "plugin_fixture_manifest",
}
"""Entry points of one distribution, ``bad-plugins``, in load order: one good plug-in among four broken ones."""
BAD_WARNINGS = {
    "raises": "RuntimeError: the plug-in needs a driver this machine lacks",
    "duplicate": "server 'bad-plugins/echo' is already registered by bad-plugins (good = plugin_fixture_good)",
    "uncatalogued": "fault kind 'bad-plugins/melt': expects 'coords.melted', not in the violation catalog",
    "manifest": "server 'overclaimer': the manifest lists ['segment'] that the server does not declare",
}


def _bad_distribution(folder: Path) -> Path:
    """Write a ``bad-plugins`` dist-info into ``folder`` naming the fixture modules as entry points."""
    info = folder / "bad_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugins\nVersion: 0.1\n", encoding="utf-8")
    points = "".join(f"{name} = {module}\n" for name, module in BAD_POINTS.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{points}", encoding="utf-8")
    return folder


@pytest.fixture
def process_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """The process registry (decorators register there), restored afterwards; the fixture modules importable."""
    reg = registry()
    saved = {name: dict(table) for name, table in reg._tables().items()}
    points = list(reg.entry_points)
    monkeypatch.syspath_prepend(str(FIXTURES))
    for module in BAD_POINTS.values():
        monkeypatch.delitem(sys.modules, module, raising=False)
    yield reg
    for name, table in reg._tables().items():
        table.clear()
        table.update(saved[name])
    reg.entry_points[:] = points
    for module in BAD_POINTS.values():
        sys.modules.pop(module, None)


def test_each_broken_plugin_is_one_warning_naming_it_and_the_good_one_still_loads(
    process_registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (distribution,) = distributions(path=[str(_bad_distribution(tmp_path))])
    points: list[EntryPoint] = list(distribution.entry_points.select(group=GROUP))
    assert [point.name for point in points] == list(BAD_POINTS)
    with caplog.at_level(logging.WARNING, logger="testbed.plugins"):
        loaded = load_entry_points(process_registry, points=points)
    assert loaded == 1
    warnings = {record.getMessage() for record in caplog.records if record.name == "testbed.plugins"}
    assert len(warnings) == len(BAD_WARNINGS)
    for name, problem in BAD_WARNINGS.items():
        (line,) = [text for text in warnings if text.startswith(f"testbed: plug-in {name} from bad-plugins not loaded")]
        assert problem in line
        assert "\n" not in line
    assert "bad-plugins/echo" in process_registry.servers
    assert process_registry.servers["bad-plugins/echo"].origin.entry_point == "good = plugin_fixture_good"
    assert "bad-plugins/half_done" not in process_registry.tasks  # registered before the import failed: taken back
    assert "bad-plugins/overclaimer" not in process_registry.servers
    assert "bad-plugins/melt" not in process_registry.faults
    errors = {point.name: point.error for point in process_registry.entry_points[-len(BAD_POINTS) :]}
    assert errors["good"] is None
    assert all(errors[name] for name in BAD_WARNINGS)


@pytest.mark.slow
def test_broken_plugins_warn_on_stderr_and_the_example_still_loads(plugin_site: Path, tmp_path: Path) -> None:
    result = _testbed(_env(plugin_site, _bad_distribution(tmp_path), FIXTURES), "plugins")
    listing = _ok(result)
    assert SERVER in listing
    assert FAULT in listing
    assert "bad-plugins/echo" in listing
    warned = [line for line in result.stderr.splitlines() if line.startswith("testbed: plug-in ")]
    assert len(warned) == len(BAD_WARNINGS), result.stderr
    for name, problem in BAD_WARNINGS.items():
        assert any(line.startswith(f"testbed: plug-in {name} from bad-plugins") and problem in line for line in warned)


# --- a plug-in's payload fault brings its own effect ------------------------------------------


class _Negate(PayloadFault):
    """Negates the numbers at the target (a test kind, never registered)."""

    kind: Literal["test-dist/negate"] = "test-dist/negate"
    layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC
    expected: ClassVar[tuple[str, ...]] = ("coords.mismatch",)

    def alter(self, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
        values = read_path(payload, path)
        if not values:
            raise NotApplicableError("nothing to negate")
        payload["values"] = [-value for value in values]  # changing its private copy in place is allowed
        return payload, f"negated {len(values)} values (draw {context.rng('negate').integers(10)})"


class _Broken(_Negate):
    def alter(self, path: PayloadPath, payload: Any, context: EffectContext) -> tuple[Any, str]:
        raise ZeroDivisionError("a bug in the plug-in")


def _context() -> EffectContext:
    return EffectContext(site=CallSite(run=0, node="detect", item=0), index=0, seed=0)


def _result(values: list[int]) -> dict[str, Any]:
    payload = {"values": values}
    return {"content": [{"type": "text", "text": json.dumps(payload)}], "structuredContent": payload}


def test_a_plugin_payload_fault_alters_a_private_copy_through_its_own_alter() -> None:
    fault = _Negate.model_validate({"target": {"server": "det", "path": "values"}})
    effect = payload_effect(fault)
    assert effect is not None
    path = fault.target.payload_path(None)
    original = _result([1, 2])
    altered, detail = alter_result(original, lambda payload: effect(fault, path, payload, _context()))
    assert altered["structuredContent"] == {"values": [-1, -2]}
    assert json.loads(altered["content"][0]["text"]) == {"values": [-1, -2]}
    assert original["structuredContent"] == {"values": [1, 2]}  # the server's answer itself is untouched
    assert detail.startswith("negated 2 values")
    with pytest.raises(NotApplicableError, match="nothing to negate"):
        alter_result(_result([]), lambda payload: effect(fault, path, payload, _context()))


def test_a_plugin_payload_fault_that_raises_is_recorded_as_not_applicable() -> None:
    fault = _Broken.model_validate({"target": {"server": "det", "path": "values"}})
    effect = payload_effect(fault)
    assert effect is not None
    with pytest.raises(NotApplicableError, match="test-dist/negate: alter raised ZeroDivisionError: a bug in the plug"):
        effect(fault, fault.target.payload_path(None), {"values": [1]}, _context())


def test_a_payload_kind_without_alter_is_refused_when_it_registers() -> None:
    class Lazy(PayloadFault):
        """Defines no effect."""

        kind: Literal["test-dist/lazy"] = "test-dist/lazy"
        layer: ClassVar[FaultLayer] = FaultLayer.SEMANTIC

    with (
        registering_as("test-dist"),
        pytest.raises(PluginError, match=r"must override alter\(path, payload"),
    ):
        fault_kind(Lazy)
    assert "test-dist/lazy" not in registry().faults


# --- the README shows the example as it is ----------------------------------------------------


def test_the_readme_section_shows_the_example_file_faithfully() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Add a faulty server", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    shown = [line.strip() for line in code.group(1).splitlines() if line.strip() and line.strip() != "..."]
    source = iter(line.strip() for line in (EXAMPLE / "faulty_detector.py").read_text(encoding="utf-8").splitlines())
    missing = [line for line in shown if not any(line == candidate for candidate in source)]
    assert missing == [], "README lines not in faulty_detector.py (in this order)"
    entry_point = '[project.entry-points.mcp_vision_testbed]\nfaulty = "faulty_detector"'
    assert entry_point in section
    assert entry_point in (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")
