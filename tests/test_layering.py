"""The core is one-way: ``testbed`` never imports its plug-ins, and needs no function-level imports to avoid cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "testbed"
PLUGIN_PACKAGES = ("servers", "agents")


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str, bool]]:
    """Every import in a module: (node, imported module, whether it sits inside a function)."""
    found: list[tuple[ast.stmt, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((child, alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child, child.module, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", _core_modules(), ids=lambda path: str(path.relative_to(CORE.parent)))
def test_the_core_never_imports_servers_or_agents(path: Path) -> None:
    offending = [
        f"{path.name}:{node.lineno} imports {module}"
        for node, module, _ in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if module.split(".")[0] in PLUGIN_PACKAGES
    ]
    assert offending == []


@pytest.mark.parametrize("path", _core_modules(), ids=lambda path: str(path.relative_to(CORE.parent)))
def test_the_core_imports_its_own_modules_at_module_level(path: Path) -> None:
    late = [
        f"{path.name}:{node.lineno} imports {module} inside a function"
        for node, module, in_function in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if in_function and module.split(".")[0] == "testbed"
    ]
    assert late == []


def test_the_layering_check_sees_a_plugin_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from servers import detect_xyxy\n    import testbed.registry\n", encoding="utf-8")
    found = [(module_name, in_function) for _, module_name, in_function in _imports(ast.parse(module.read_text()))]
    assert found == [("servers", True), ("testbed.registry", True)]
