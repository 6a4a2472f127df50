"""The test suite's own layout: test modules share fixtures through conftest.py, never by importing each other."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TEST_MODULES = sorted(path for path in TESTS.rglob("test_*.py") if "node_modules" not in path.parts)


def _package(path: Path) -> list[str]:
    """The dotted package of a file under tests/ (``["tests", "quality"]`` for tests/quality/x.py)."""
    return ["tests", *path.parent.relative_to(TESTS).parts]


def _imported(source: str, package: list[str]) -> list[tuple[int, str]]:
    """Every module some source in ``package`` imports, fully qualified (relative imports resolved), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from tests import test_x`` and ``from . import conftest`` import modules by name.
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def _is_test_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "tests" and any(part.startswith("test_") or part == "conftest" for part in parts[1:])


def test_the_suite_has_test_modules_to_check() -> None:
    names = {path.name for path in TEST_MODULES}
    assert {"test_layout.py", "test_servers.py"} <= names
    assert any(path.parent.name == "quality" for path in TEST_MODULES)


def test_no_test_module_imports_another_test_module_or_conftest() -> None:
    offences: dict[str, str] = {}  # one per import statement
    for path in TEST_MODULES:
        for line, module in _imported(path.read_text(encoding="utf-8"), _package(path)):
            if _is_test_module(module):
                offences.setdefault(f"{path.relative_to(TESTS.parent)}:{line}", module)
    assert offences == {}, (
        "share fixtures through tests/conftest.py, and types or plain helpers through tests/_helpers.py: "
        + "; ".join(f"{where} imports {module}" for where, module in offences.items())
    )


def test_the_import_check_sees_every_spelling() -> None:
    spellings = {
        "import tests.test_servers": True,
        "from tests.test_agents import ScriptedLLM": True,
        "from tests import test_agents": True,
        "from tests.conftest import NetworkAttempts": True,
        "from tests import conftest": True,
        "from tests.quality.test_expect_lists import V1": True,
        "from .test_servers import call": True,
        "from . import conftest": True,
        "from ..test_servers import call": True,
        "from tests._helpers import call": False,
        "from tests._llama_server import llama_server": False,
        "from testbed.check import in_process": False,
        "import pytest": False,
    }
    for source, forbidden in spellings.items():
        # As if written in tests/quality/test_probe.py: one dot is tests.quality, two are tests.
        modules = [module for _, module in _imported(source, ["tests", "quality"])]
        assert any(_is_test_module(module) for module in modules) is forbidden, (source, modules)
