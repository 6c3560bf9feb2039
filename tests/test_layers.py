"""Imports run one way: production code never imports test doubles (secagg.testing) or tests."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "secagg"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_production_code_never_imports_the_test_doubles_or_the_tests() -> None:
    offenders = [
        (str(p.relative_to(PACKAGE)), m)
        for p in sorted(PACKAGE.rglob("*.py"))
        if "testing" not in p.relative_to(PACKAGE).parts
        for m in sorted(_imports(p))
        if m == "secagg.testing" or m.startswith(("secagg.testing.", "tests"))
    ]
    assert offenders == []
