"""What the server decides about an answer's source before (and after) anything runs.

Whether a module is a valid answer (it compiles, and it binds the function's
name at module level) is decided here, in the server process: ``compile``
never executes code, so no child's word is needed, and none is taken. What a
child reports about an exception (its type name, its line) is checked here
too: a type name is kept only if it is a builtin exception's (a student can
name a class anything, e.g. after a hidden value), a line only if it is a line
of the student's file.
"""

from __future__ import annotations

import ast
import builtins
import functools
import marshal
from typing import NamedTuple

import numpy as np

STUDENT_FILE = "answer.py"
MAX_SOURCE_CHARS = 256 << 10  # the service stores at most 20 000 characters
# Scopes of their own: a name bound inside them is not a module-level binding.
_NESTED_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
                  ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

EXCEPTION_NAMES = frozenset(
    [name for name, obj in vars(builtins).items()
     if isinstance(obj, type) and issubclass(obj, BaseException)]
    + [name for name, obj in vars(np.exceptions).items()
       if isinstance(obj, type) and issubclass(obj, BaseException)]
    + ["LinAlgError"]
)


class SourceProblem(NamedTuple):
    """Why a source is not a valid answer; ``line`` is a line of it, or None."""

    line: int | None
    message: str


def check_source(source: str, function: str) -> SourceProblem | None:
    """None if ``source`` compiles and binds ``function`` at module level, else why
    not (message ``"line 3: SyntaxError: ..."``). Cached: a grade checks one source
    once per job."""
    return _analyse(source, function)[0]


def compiled_source(source: str, function: str) -> bytes | None:
    """The module's code object, ``marshal``-ed (None if it is not a valid answer).
    Compiled here once per source instead of in each child (~0.15-0.35 ms each,
    three children per numpy grade); the child unmarshals it (~0.01 ms). The bytes
    come from this process's compiler, so the child trusts them as it trusts the
    rest of the job."""
    return _analyse(source, function)[1]


@functools.lru_cache(maxsize=64)
def _analyse(source: str, function: str) -> tuple[SourceProblem | None, bytes | None]:
    if len(source) > MAX_SOURCE_CHARS:
        return SourceProblem(None, f"the module is {len(source)} characters long; "
                                   f"the limit is {MAX_SOURCE_CHARS}"), None
    try:
        tree = compile(source, STUDENT_FILE, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        # the compiler's own checks; optimize=0 as in the child (asserts stay)
        code = compile(tree, STUDENT_FILE, "exec", dont_inherit=True, optimize=0)
    except SyntaxError as exc:  # IndentationError, TabError too
        line = source_line(exc.lineno, source)
        where = f"line {line}: " if line else ""
        return SourceProblem(line, f"{where}{type(exc).__name__}: {exc.msg}"), None
    except (RecursionError, MemoryError):  # the parser's and compiler's depth limits
        return SourceProblem(None, "the module is nested too deeply to compile"), None
    except ValueError as exc:  # e.g. a NUL character
        return SourceProblem(None, f"{type(exc).__name__}: {exc}"), None
    names = module_level_names(tree)
    if function not in names and "*" not in names:  # `from m import *` may bind anything
        return SourceProblem(None, f"no function named {function!r} is defined at the top "
                                   f"level of the module (write `def {function}(...):` "
                                   "without indentation)"), None
    return None, marshal.dumps(code)


def module_level_names(tree: ast.Module) -> set[str]:
    """Names a module may bind at its top level (``*`` for a star import)."""
    names: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            pending.extend(node.decorator_list)  # evaluated in the module's scope
            continue
        if isinstance(node, _NESTED_SCOPES):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        pending.extend(ast.iter_child_nodes(node))
    return names


def exception_name(name: object) -> str:
    """``name`` if it is a builtin (or numpy) exception's name, else ''."""
    return name if isinstance(name, str) and name in EXCEPTION_NAMES else ""


def source_line(line: object, source: str) -> int | None:
    """``line`` if it is a line number of ``source``, else None."""
    if type(line) is not int:
        return None
    return line if 1 <= line <= source.count("\n") + 1 else None
