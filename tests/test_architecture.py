"""The one rule of the layout: imports point one way, coexist -> reconcile, masterdata -> cdc -> core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("core", "cdc", "masterdata", "reconcile", "coexist")
ALLOWED = {
    "core": {"core"},
    "cdc": {"cdc", "core"},
    "masterdata": {"masterdata", "cdc", "core"},
    "reconcile": {"reconcile", "cdc", "core"},
    "coexist": set(PROJECT),
}


def project_imports(path: Path) -> list[tuple[int, str]]:
    """Every project package a module imports, at any depth of the module (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in PROJECT]
    return found


@pytest.mark.parametrize("package", PROJECT)
def test_imports_point_one_way(package: str) -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for path in sorted((REPO / package).rglob("*.py"))
        for line, target in project_imports(path)
        if target not in ALLOWED[package]
    ]
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(wrong)


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from coexist.config import Settings\n    import reconcile.engine\n")
    assert project_imports(module) == [(4, "coexist"), (5, "reconcile")]
