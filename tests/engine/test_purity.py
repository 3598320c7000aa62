"""The layers import only downwards (CONVENTIONS habit 1 and docs/design.md, "Layers"):
server/engine is pure (stdlib, numpy and sympy only) and has no import circle,
services know nothing of Flask, the sandbox nothing of the rest of server/."""

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
ENGINE = SERVER / "engine"
FORBIDDEN_ROOTS = {"flask", "sqlalchemy", "alembic", "werkzeug", "jinja2", "click", "gunicorn",
                   "psycopg"}
WEB_ROOTS = {"flask", "flask_login", "flask_wtf", "werkzeug", "jinja2", "wtforms"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SERVER.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """Ids of the nodes under ``if TYPE_CHECKING:`` (annotations only: no import at run time)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def imports_of(path: Path, *, run_time_only: bool = False):
    """(line, module) of every import in ``path``, function-local ones included."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_blocks(tree) if run_time_only else set()
    name = _module_name(path) if SERVER in path.parents else path.stem
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                yield node.lineno, base + ("." + node.module if node.module else "")
            else:
                yield node.lineno, node.module or ""


def _bad_imports(folder: Path, is_bad) -> list[str]:
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for line, name in imports_of(path):
            if is_bad(name):
                bad.append(f"{path.relative_to(SERVER)}:{line} imports {name}")
    return bad


def test_engine_imports_nothing_from_the_web_or_the_database():
    assert len(list(ENGINE.rglob("*.py"))) >= 8
    assert _bad_imports(ENGINE, lambda name: name.split(".")[0] in FORBIDDEN_ROOTS or (
        name.split(".")[0] == "server" and not name.startswith("server.engine"))) == []


def test_services_know_nothing_of_flask():
    assert _bad_imports(SERVER / "services", lambda name: name.split(".")[0] in WEB_ROOTS) == []


def test_the_sandbox_imports_nothing_else_from_server():
    assert _bad_imports(SERVER / "sandbox", lambda name: name.split(".")[0] == "server"
                        and not (name + ".").startswith("server.sandbox.")) == []


def engine_import_graph() -> dict[str, set[str]]:
    """Engine module -> the engine modules it imports at run time (function-local
    imports too; ``if TYPE_CHECKING:`` ones not)."""
    modules = {_module_name(path): path for path in ENGINE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, imported in imports_of(path, run_time_only=True):
            while imported and imported not in modules:  # from package.module import name
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, as a path that ends where it starts; None if none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_engine_has_no_import_circle():
    graph = engine_import_graph()
    assert "server.engine.kinds.numpy" in graph["server.engine.kinds"]
    assert "server.engine.kinds" in graph["server.engine.spec"]  # the spec asks the kind
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_purity_check_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import numpy\nfrom flask import Flask\nfrom server.db import x\n"
                      "def f():\n    from server.engine import spec\n")
    names = [n for _, n in imports_of(sample)]
    assert "flask" in names and "server.db" in names and "server.engine" in names
