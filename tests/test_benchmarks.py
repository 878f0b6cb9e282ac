"""Benchmarks import the installed package only: their synthetic voices come from
`speakerverify.testing`, not from `tests/` put on `sys.path` (issue 25, item 7)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_MODULES = {path.stem for path in (REPO / "tests").glob("*.py")}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_benchmarks_neither_import_test_modules_nor_put_tests_on_the_path():
    benchmarks = sorted((REPO / "benchmarks").glob("*.py"))
    assert benchmarks
    for path in benchmarks:
        assert not imported_modules(path) & TEST_MODULES, path
        assert "sys.path.insert" not in path.read_text(encoding="utf-8"), path
