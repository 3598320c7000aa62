"""server/engine is pure: stdlib, numpy and sympy only (CONVENTIONS habit 1)."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "server" / "engine"
FORBIDDEN_ROOTS = {"flask", "sqlalchemy", "alembic", "werkzeug", "jinja2", "click", "gunicorn", "psycopg"}


def imports_of(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, "server.engine." + (node.module or "")
            else:
                yield node.lineno, node.module or ""


def test_engine_imports_nothing_from_the_web_or_the_database():
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) >= 8
    bad = []
    for path in files:
        for line, name in imports_of(path):
            root = name.split(".")[0]
            if root in FORBIDDEN_ROOTS or (root == "server" and not name.startswith("server.engine")):
                bad.append(f"{path.name}:{line} imports {name}")
    assert bad == []


def test_the_purity_check_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import numpy\nfrom flask import Flask\nfrom server.db import x\n")
    names = [n for _, n in imports_of(sample)]
    assert "flask" in names and "server.db" in names
