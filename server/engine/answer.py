"""Backward-equations answers: a strict parser and a float64 evaluator.

A student's answer is a small, strict subset of Python and numpy (docs/design.md, section 5).
The text never reaches ``eval`` or ``exec``: each line is parsed with :mod:`ast`,
checked against an allowlist and converted into a small tree of our own, which
is then evaluated here with numpy.

Values are 2-D float64 arrays (numbers are scalars).  Element-wise operators are
strict: both sides have the same shape, or one side is a scalar or 1×1; numpy
broadcasting of mismatched shapes is a runtime error that names the line and both
shapes.  Integer indices keep arrays 2-D (``x[0]`` is the first row as a 1×n
array); a single index or slice selects rows.

Columns in errors are 0-based offsets into the line with tabs expanded to 4 spaces.
"""

from __future__ import annotations

import ast
import difflib
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.engine.astcheck import depth_exceeds

Shape = tuple[int, int]
ShapeSpec = Shape | list[Shape]

MAX_TEXT_CHARS = 20_000
MAX_LINES = 400
MAX_DEPTH = 30  # nesting of an expression's syntax tree
MAX_LITERAL = 1e6
MAX_EXPONENT = 4
MAX_ERRORS = 50
MAX_STEPS = 10_000  # assignments and loop iterations executed in one run
MAX_ELEMENTS = 1_000_000  # largest intermediate array
MAX_WORK = 50_000_000  # element operations summed over one run
MAX_DIM_VALUE = 10**9

# name -> (min positional args, max positional args)
FUNCTIONS: dict[str, tuple[int, int]] = {
    "sigmoid": (1, 1),
    "tanh": (1, 1),
    "exp": (1, 1),
    "log": (1, 1),
    "sqrt": (1, 1),
    "abs": (1, 1),
    "sum": (1, 2),
    "diag": (1, 1),
    "outer": (2, 2),
    "where": (3, 3),
    "maximum": (2, 2),
    "ones_like": (1, 1),
    "zeros_like": (1, 1),
}
_MODULES = ("np", "numpy")
_COMPARE_OPS = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<="}
_BIN_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@"}
_DIM_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//"}
_LABEL_RE = re.compile(r"(\s*)(\d{1,6})\s*[.)]")

# a number directly followed by a name or "(", e.g. 2x or 2(x+1) (not 1e5)
_IMPLICIT_MUL_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?)(?![eE][-+]?\d)([A-Za-z_]\w*)")
_FOR_VAR_RE = re.compile(r"for\s+([A-Za-z_]\w*)\s+in\b")
_DIMS_RULE = "integers, dims ({dims}), loop variables and + - * //"


# ---------------------------------------------------------------------------
# Public data types


@dataclass(frozen=True)
class AnswerContext:
    """What an answer may refer to.

    ``forward`` and ``gradients`` map names to shapes; an indexed name (one
    value per step) maps to a list with one shape per step.  ``readonly`` names
    are gradients the student may read but not assign (the given one); their
    indexedness is taken from ``gradients`` if listed there, else from the
    forward variable they are the gradient of.
    """

    forward: Mapping[str, ShapeSpec]
    gradients: Mapping[str, ShapeSpec]
    readonly: frozenset[str] = frozenset()
    dims: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FormatError:
    line: int  # 1-based line of the student's text
    col: int  # 0-based column (tabs expanded to 4 spaces)
    message: str

    def render(self, source_lines: list[str] | tuple[str, ...]) -> str:
        head = f"line {self.line}: {self.message}"
        if 1 <= self.line <= len(source_lines):
            text = source_lines[self.line - 1].expandtabs(4).rstrip()
            col = max(0, min(self.col, len(text)))
            return f"{head}\n    {text}\n    {' ' * col}^"
        return head


class AnswerFormatError(Exception):
    """The text is not a valid answer; nothing ran.  ``errors`` lists every problem found."""

    def __init__(self, errors: list[FormatError], source_lines: list[str] | None = None):
        self.errors = list(errors)
        self.source_lines = list(source_lines or [])
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(e.render(self.source_lines) for e in self.errors)


class AnswerRuntimeError(Exception):
    """Evaluation failed on one line (shape mismatch, index out of range, too many steps...).

    ``stmt_id`` and ``loop_env`` identify the failing assignment (``None`` for a loop
    header or a whole-run limit) so that it can be re-evaluated with
    :func:`evaluate_rhs`.
    """

    def __init__(
        self,
        line: int,
        message: str,
        *,
        col: int | None = None,
        stmt_id: int | None = None,
        loop_env: Mapping[str, int] | None = None,
        target: str | None = None,
        index: tuple[int, ...] = (),
        fatal: bool = False,
    ):
        self.line = line
        self.message = message
        self.col = col
        self.stmt_id = stmt_id
        self.loop_env = dict(loop_env or {})
        self.target = target
        self.index = index
        self.fatal = fatal
        super().__init__(f"line {line}: {message}")

    def render(self, source_lines: list[str] | tuple[str, ...]) -> str:
        if self.col is None:
            return f"line {self.line}: {self.message}"
        return FormatError(self.line, self.col, self.message).render(source_lines)


@dataclass(frozen=True, eq=False)
class AssignEvent:
    """One executed assignment (per step in loops)."""

    line: int  # 1-based line in the student's text
    number: int | None  # the student's own label ("5." -> 5)
    source: str  # the statement as written (without label)
    target: str  # "dz1"
    index: tuple[int, ...]  # (t,) for dz1[t]; () for a non-indexed gradient
    region: str | None  # evaluated slice of a slice target, e.g. "[:, 2:5]"
    op: str  # "=", "+=" or "-="
    rhs: np.ndarray  # value of the right-hand side (a number becomes 1×1)
    before: np.ndarray  # the target element before
    after: np.ndarray  # the target element after
    reads: tuple[tuple[str, tuple[int, ...]], ...]  # gradients the rhs read
    stmt_id: int  # which assignment of the program (for evaluate_rhs)
    loop_env: Mapping[str, int]  # loop variables at this execution


# ---------------------------------------------------------------------------
# The tree


class _Fail(Exception):
    """An evaluation error inside one statement; becomes AnswerRuntimeError."""

    def __init__(self, message: str, col: int | None = None, fatal: bool = False):
        super().__init__(message)
        self.message = message
        self.col = col
        self.fatal = fatal


def _is_scalar(v: Any) -> bool:
    return not isinstance(v, np.ndarray)


def _shape_text(v: Any) -> str:
    if _is_scalar(v):
        return "a number"
    return "×".join(str(n) for n in v.shape)


def _as_2d(v: Any) -> np.ndarray:
    if _is_scalar(v):
        return np.full((1, 1), float(v))
    return v


class _Run:
    """State of one evaluation."""

    __slots__ = ("values", "grads", "dims", "env", "lookup", "reads", "steps", "work", "assigned",
                 "strict", "target", "failed")

    def __init__(self, values, grads, dims, lookup=None, strict=None):
        self.values = values
        self.grads = grads
        self.dims = dims
        self.env: dict[str, int] = {}
        self.lookup = lookup
        self.reads: list[tuple[str, tuple[int, ...]]] = []
        self.steps = 0
        self.work = 0
        self.assigned: set[tuple[str, tuple[int, ...]]] = set()
        # with strict (the read-only gradients), reading a gradient that no line has
        # assigned yet is an error, except the line's own target (dW = dW + ...)
        self.strict: frozenset[str] | None = strict
        self.target: tuple[str, tuple[int, ...]] | None = None
        # targets of assignments that failed (their error names the line; readers are not
        # charged again)
        self.failed: set[tuple[str, tuple[int, ...]]] = set()

    def charge(self, n: int, col: int | None) -> None:
        if n > MAX_ELEMENTS:
            raise _Fail(f"an intermediate result would have {n} elements (limit {MAX_ELEMENTS})", col)
        self.work += n
        if self.work > MAX_WORK:
            raise _Fail("too much computation: the answer does far more work than needed", col,
                        fatal=True)


class _Node:
    __slots__ = ("col", "text")

    def __init__(self, col: int, text: str):
        self.col = col
        self.text = text


# --- dims expressions (integers) ---


class _DInt(_Node):
    __slots__ = ("value",)

    def __init__(self, col, text, value: int):
        super().__init__(col, text)
        self.value = value

    def ev(self, rt: _Run) -> int:
        return self.value


class _DName(_Node):
    __slots__ = ("name", "is_loop")

    def __init__(self, col, text, name: str, is_loop: bool):
        super().__init__(col, text)
        self.name = name
        self.is_loop = is_loop

    def ev(self, rt: _Run) -> int:
        return rt.env[self.name] if self.is_loop else rt.dims[self.name]


class _DNeg(_Node):
    __slots__ = ("x",)

    def __init__(self, col, text, x):
        super().__init__(col, text)
        self.x = x

    def ev(self, rt: _Run) -> int:
        return -self.x.ev(rt)


class _DBin(_Node):
    __slots__ = ("op", "a", "b")

    def __init__(self, col, text, op, a, b):
        super().__init__(col, text)
        self.op, self.a, self.b = op, a, b

    def ev(self, rt: _Run) -> int:
        a, b = self.a.ev(rt), self.b.ev(rt)
        if self.op == "+":
            r = a + b
        elif self.op == "-":
            r = a - b
        elif self.op == "*":
            r = a * b
        else:
            if b == 0:
                raise _Fail(f"division by zero in {self.text}", self.col)
            r = a // b
        if abs(r) > MAX_DIM_VALUE:
            raise _Fail(f"{self.text} = {r} is unreasonably large", self.col)
        return r


# --- value expressions ---


class _VNum(_Node):
    __slots__ = ("value",)

    def __init__(self, col, text, value: float):
        super().__init__(col, text)
        self.value = np.float64(value)

    def ev(self, rt: _Run):
        return self.value


class _VIntName(_Node):
    """A dim or loop variable used as a number."""

    __slots__ = ("d",)

    def __init__(self, col, text, d: _DName):
        super().__init__(col, text)
        self.d = d

    def ev(self, rt: _Run):
        return np.float64(self.d.ev(rt))


def _step_index(name: str, seq, step: _Node, rt: _Run) -> int:
    i = step.ev(rt)
    if not 0 <= i < len(seq):
        raise _Fail(f"{name}[{step.text}] is {name}[{i}], out of range: {name} has steps "
                    f"0..{len(seq) - 1}", step.col)
    return i


class _VVar(_Node):
    """A forward variable or gradient, with its step selected if it is indexed."""

    __slots__ = ("name", "is_grad", "step")

    def __init__(self, col, text, name: str, is_grad: bool, step: _Node | None):
        super().__init__(col, text)
        self.name, self.is_grad, self.step = name, is_grad, step

    def ev(self, rt: _Run):
        if not self.is_grad:
            v = rt.values[self.name]
            if self.step is not None:
                v = v[_step_index(self.name, v, self.step, rt)]
            return v
        index: tuple[int, ...] = ()
        if self.step is not None:
            seq = rt.grads[self.name]
            index = (_step_index(self.name, seq, self.step, rt),)
        key = (self.name, index)
        if (rt.strict is not None and self.name not in rt.strict and key not in rt.assigned
                and key != rt.target and key not in rt.failed):
            label = self.name + (f"[{index[0]}]" if index else "")
            raise _Fail(f"{label} is read before any line assigns it: compute {label} on an "
                        "earlier line (gradients start at zero, but this one was never written)",
                        self.col)
        rt.reads.append((self.name, index))
        if rt.lookup is not None:
            v = rt.lookup(self.name, index)
            return np.asarray(v, dtype=np.float64)
        v = rt.grads[self.name]
        return v[index[0]] if index else v


class _Slice(_Node):
    __slots__ = ("lo", "hi", "step")

    def __init__(self, col, text, lo, hi, step):
        super().__init__(col, text)
        self.lo, self.hi, self.step = lo, hi, step

    def ev(self, rt: _Run) -> slice:
        lo = self.lo.ev(rt) if self.lo is not None else None
        hi = self.hi.ev(rt) if self.hi is not None else None
        st = self.step.ev(rt) if self.step is not None else None
        if st == 0:
            raise _Fail(f"slice step cannot be zero in {self.text}", self.col)
        return slice(lo, hi, st)


def _np_index(items, arr: np.ndarray, rt: _Run, what: str) -> tuple[slice, slice]:
    """Turn 1-2 index items into a pair of slices (rows, cols); integers keep 2-D."""
    out = []
    for axis, item in enumerate(items):
        n = arr.shape[axis]
        if isinstance(item, _Slice):
            out.append(item.ev(rt))
            continue
        i = item.ev(rt)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            kind = "row" if axis == 0 else "column"
            raise _Fail(f"{kind} index {item.text} = {i} is out of range for {what}, which is "
                        f"{_shape_text(arr)}", item.col)
        out.append(slice(j, j + 1))
    if len(out) == 1:
        out.append(slice(None))
    return out[0], out[1]


def _region_text(rows: slice, cols: slice, shape) -> str:
    def one(s: slice, n: int) -> str:
        if s == slice(None):
            return ":"
        a, b, c = s.indices(n)
        return f"{a}:{b}" + (f":{c}" if c != 1 else "")

    return f"[{one(rows, shape[0])}, {one(cols, shape[1])}]"


class _VSub(_Node):
    __slots__ = ("x", "items")

    def __init__(self, col, text, x, items):
        super().__init__(col, text)
        self.x, self.items = x, items

    def ev(self, rt: _Run):
        v = self.x.ev(rt)
        if _is_scalar(v):
            raise _Fail(f"cannot index {self.x.text}: it is a number", self.col)
        rows, cols = _np_index(self.items, v, rt, self.x.text)
        return v[rows, cols]


def _check_elementwise(op: str, operands, col) -> None:
    shapes = {a.shape for a, _ in operands if not _is_scalar(a) and a.shape != (1, 1)}
    if len(shapes) > 1:
        parts = [f"{text} is {_shape_text(a)}" for a, text in operands]
        raise _Fail(f"element-wise {op} needs equal shapes (or a number / 1×1): "
                    + " but ".join(parts), col)


class _VBin(_Node):
    __slots__ = ("op", "a", "b")

    def __init__(self, col, text, op, a, b):
        super().__init__(col, text)
        self.op, self.a, self.b = op, a, b

    def ev(self, rt: _Run):
        a, b = self.a.ev(rt), self.b.ev(rt)
        op = self.op
        if op == "@":
            if _is_scalar(a) or _is_scalar(b):
                which = self.a.text if _is_scalar(a) else self.b.text
                raise _Fail(f"@ needs matrices but {which} is a number (use * to scale)", self.col)
            if a.shape[1] != b.shape[0]:
                raise _Fail(f"@ needs the inner dimensions to agree: {self.a.text} is "
                            f"{_shape_text(a)} but {self.b.text} is {_shape_text(b)}", self.col)
            rt.charge(a.shape[0] * b.shape[1], self.col)
            rt.work += a.shape[0] * a.shape[1] * b.shape[1]
            return a @ b
        _check_elementwise(op, ((a, self.a.text), (b, self.b.text)), self.col)
        if not (_is_scalar(a) and _is_scalar(b)):
            rt.charge(max(np.size(a), np.size(b)), self.col)
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        return a / b


class _VCmp(_Node):
    __slots__ = ("op", "a", "b")

    def __init__(self, col, text, op, a, b):
        super().__init__(col, text)
        self.op, self.a, self.b = op, a, b

    def ev(self, rt: _Run):
        a, b = self.a.ev(rt), self.b.ev(rt)
        _check_elementwise(self.op, ((a, self.a.text), (b, self.b.text)), self.col)
        op = self.op
        r = a > b if op == ">" else a >= b if op == ">=" else a < b if op == "<" else a <= b
        if isinstance(r, np.ndarray):
            rt.charge(r.size, self.col)
            return r.astype(np.float64)
        return np.float64(r)


class _VPow(_Node):
    __slots__ = ("x", "p")

    def __init__(self, col, text, x, p: float):
        super().__init__(col, text)
        self.x, self.p = x, p

    def ev(self, rt: _Run):
        v = self.x.ev(rt)
        return v**self.p


class _VNeg(_Node):
    __slots__ = ("x",)

    def __init__(self, col, text, x):
        super().__init__(col, text)
        self.x = x

    def ev(self, rt: _Run):
        return -self.x.ev(rt)


class _VT(_Node):
    __slots__ = ("x",)

    def __init__(self, col, text, x):
        super().__init__(col, text)
        self.x = x

    def ev(self, rt: _Run):
        v = self.x.ev(rt)
        return v if _is_scalar(v) else v.T


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


_ELEMENTWISE = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
}


class _VCall(_Node):
    __slots__ = ("fn", "args", "axis")

    def __init__(self, col, text, fn: str, args, axis: int | None):
        super().__init__(col, text)
        self.fn, self.args, self.axis = fn, args, axis

    def ev(self, rt: _Run):
        fn = self.fn
        vals = [a.ev(rt) for a in self.args]
        if fn in _ELEMENTWISE:
            v = vals[0]
            if not _is_scalar(v):
                rt.charge(v.size, self.col)
            return _ELEMENTWISE[fn](v)
        if fn == "sum":
            v = _as_2d(vals[0])
            rt.charge(v.size, self.col)
            if self.axis is None:
                return np.full((1, 1), v.sum())
            return v.sum(axis=self.axis, keepdims=True)
        if fn == "diag":
            v = _as_2d(vals[0])
            if v.shape[0] == 1 or v.shape[1] == 1:
                rt.charge(v.size * v.size, self.col)
                return np.diag(v.ravel())
            if v.shape[0] == v.shape[1]:
                return np.diag(v).reshape(-1, 1).copy()
            raise _Fail(f"diag needs a vector (n×1 or 1×n) or a square matrix, but "
                        f"{self.args[0].text} is {_shape_text(v)}", self.col)
        if fn == "outer":
            a, b = _as_2d(vals[0]).ravel(), _as_2d(vals[1]).ravel()
            rt.charge(a.size * b.size, self.col)
            return a[:, None] * b[None, :]
        if fn in ("where", "maximum"):
            _check_elementwise(f"{fn}()", list(zip(vals, [a.text for a in self.args])),
                               self.col)
            rt.charge(max(np.size(v) for v in vals), self.col)
            if fn == "maximum":
                return np.maximum(vals[0], vals[1])
            r = np.where(np.asarray(vals[0]) != 0, vals[1], vals[2])
            return r if r.ndim == 2 else np.float64(r)
        # ones_like / zeros_like
        v = vals[0]
        fill = 1.0 if fn == "ones_like" else 0.0
        return np.float64(fill) if _is_scalar(v) else np.full(v.shape, fill)


# --- statements ---


class _Assign:
    __slots__ = ("stmt_id", "line", "number", "source", "col", "name", "step", "items", "op",
                 "rhs", "target_text")

    def __init__(self, stmt_id, line, number, source, col, name, step, items, op, rhs,
                 target_text):
        self.stmt_id = stmt_id
        self.line = line
        self.number = number
        self.source = source
        self.col = col
        self.name = name
        self.step = step
        self.items = items
        self.op = op
        self.rhs = rhs
        self.target_text = target_text


class _For:
    __slots__ = ("line", "col", "var", "args", "reverse", "body")

    def __init__(self, line, col, var, args, reverse):
        self.line = line
        self.col = col
        self.var = var
        self.args = args
        self.reverse = reverse
        self.body: list[_Assign | _For] = []


@dataclass(frozen=True, eq=False)
class EquationProgram:
    """A parsed, checked answer: run it with :func:`run_equations`."""

    ctx: AnswerContext
    source_lines: tuple[str, ...]
    body: tuple[_Assign | _For, ...]
    statements: tuple[_Assign, ...]  # every assignment, indexed by stmt_id
    assigned: frozenset[str]  # gradient names that some statement assigns

    def statement_line(self, stmt_id: int) -> int:
        return self.statements[stmt_id].line


# ---------------------------------------------------------------------------
# Parsing


def _indexed(spec) -> bool:
    return isinstance(spec, list)


class _Names:
    def __init__(self, ctx: AnswerContext):
        self.forward = {n: _indexed(s) for n, s in ctx.forward.items()}
        self.grads = {n: _indexed(s) for n, s in ctx.gradients.items() if n not in ctx.readonly}
        self.readonly = {}
        for n in ctx.readonly:
            if n in ctx.gradients:
                self.readonly[n] = _indexed(ctx.gradients[n])
            else:
                self.readonly[n] = self.forward.get(n[1:], False)
        self.dims = dict(ctx.dims)
        self.example = next(iter(sorted(self.grads)), "dz1")

    def all_values(self) -> list[str]:
        return [*self.forward, *self.grads, *self.readonly, *self.dims]

    def taken(self, name: str) -> bool:
        return (name in self.forward or name in self.grads or name in self.readonly
                or name in self.dims or name in FUNCTIONS or name in _MODULES)


def _char_col(content: str, byte_offset: int) -> int:
    if content.isascii():
        return byte_offset
    return len(content.encode("utf-8")[:byte_offset].decode("utf-8", "ignore"))


class _Bad(Exception):
    """Signals that a subtree was refused (the error is already recorded)."""


class _LineChecker:
    """Checks one line's ast against the allowlist and converts it to our tree."""

    def __init__(self, names: _Names, line: int, number: int | None, content: str,
                 content_col: int, loops: tuple[str, ...], errors: list[FormatError],
                 statements: list[_Assign]):
        self.names = names
        self.line = line
        self.number = number
        self.content = content
        self.content_col = content_col
        self.ascii = content.isascii()
        self.bytes = content.encode("utf-8")
        self.loops = loops
        self.errors = errors
        self.statements = statements

    # -- helpers --

    def col(self, node: ast.AST) -> int:
        if self.ascii:
            return self.content_col + node.col_offset
        return self.content_col + _char_col(self.content, getattr(node, "col_offset", 0))

    def text(self, node: ast.AST) -> str:
        """The source of a node as written (shortened), for messages."""
        if node.end_lineno != 1:
            return ast.unparse(node)
        if self.ascii:
            t = self.content[node.col_offset:node.end_col_offset]
        else:
            t = self.bytes[node.col_offset:node.end_col_offset].decode("utf-8", "replace")
        return t if len(t) <= 40 else t[:39] + "…"

    def err(self, node: ast.AST, message: str) -> _Bad:
        self.errors.append(FormatError(self.line, self.col(node), message))
        return _Bad()

    def all_of(self, fns):
        """Run every conversion (to collect all errors), then fail if any failed."""
        out, bad = [], False
        for fn in fns:
            try:
                out.append(fn())
            except _Bad:
                bad = True
        if bad:
            raise _Bad()
        return out

    def suggest(self, name: str, candidates) -> str:
        close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
        if not close:
            return ""
        return " (did you mean " + " or ".join(close) + "?)"

    # -- statements --

    def statement(self, node: ast.stmt):
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1:
                raise self.err(node.targets[1], "assign one gradient per line (no a = b = ...)")
            return self.assign(node, node.targets[0], "=", node.value)
        if isinstance(node, ast.AugAssign):
            if not isinstance(node.op, ast.Add | ast.Sub):
                raise self.err(node, "only =, += and -= are allowed")
            return self.assign(node, node.target, "+=" if isinstance(node.op, ast.Add) else "-=",
                               node.value)
        if isinstance(node, ast.For):
            return self.loop(node)
        if isinstance(node, ast.Import | ast.ImportFrom):
            raise self.err(node, "imports are not allowed (np. functions are available as is)")
        if isinstance(node, ast.AnnAssign):
            raise self.err(node, "annotations are not allowed: write dV = expression")
        if isinstance(node, ast.Expr):
            raise self.err(node, "a line must assign a gradient (dV = ...) or start a for loop")
        kind = type(node).__name__.lower()
        raise self.err(node, f"'{kind}' statements are not allowed: only assignments to "
                       "gradients and for loops")

    def loop(self, node: ast.For):
        if node.orelse:
            raise self.err(node, "for ... else is not allowed")
        if not isinstance(node.target, ast.Name):
            raise self.err(node.target, "the loop variable must be a single name, e.g. t")
        var = node.target.id
        if var in self.loops or self.names.taken(var):
            raise self.err(node.target, f"the loop variable {var} would hide a variable, dim or "
                           "function of that name: choose another name, e.g. t")
        it = node.iter
        reverse = False
        if (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                and it.func.id == "reversed"):
            if len(it.args) != 1 or it.keywords:
                raise self.err(it, "reversed() takes one range(...)")
            reverse = True
            it = it.args[0]
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                and it.func.id == "range"):
            raise self.err(it, "a loop must be for t in range(...) or for t in "
                           "reversed(range(...))")
        if not 1 <= len(it.args) <= 3 or it.keywords:
            raise self.err(it, "range() takes 1 to 3 bounds")
        args = self.all_of([lambda a=a: self.dims_expr(a, "range bounds") for a in it.args])
        loop = _For(self.line, self.col(node), var, tuple(args), reverse)
        inner = _LineChecker(self.names, self.line, self.number, self.content, self.content_col,
                             (*self.loops, var), self.errors, self.statements)
        is_placeholder = len(node.body) == 1 and isinstance(node.body[0], ast.Pass) and getattr(
            node.body[0], "lineno", 1) != 1
        if not is_placeholder:
            loop.body.extend(inner.all_of([lambda s=s: inner.statement(s) for s in node.body]))
        return loop

    def assign(self, node: ast.stmt, target: ast.expr, op: str, value: ast.expr):
        # Check the target and the value independently so that both report errors.
        stmt_id = len(self.statements)
        self.statements.append(None)  # type: ignore[arg-type]  # reserve the id
        try:
            (name, step, items), rhs = self.all_of([lambda: self.target(target),
                                                    lambda: self.expr(value)])
        except _Bad:
            self.statements.pop()
            raise
        source = self.content.split("#", 1)[0].strip() if "#" in self.content else \
            self.content.strip()
        stmt = _Assign(stmt_id, self.line, self.number, source, self.col(node), name, step,
                       items, op, rhs, self.text(target))
        self.statements[stmt_id] = stmt
        return stmt

    def target(self, node: ast.expr):
        subs: list[ast.Subscript] = []
        base = node
        while isinstance(base, ast.Subscript):
            subs.append(base)
            base = base.value
        subs.reverse()
        if not isinstance(base, ast.Name):
            raise self.err(node, "the left-hand side must be a gradient such as "
                           f"{self.names.example}, {self.names.example}[t] or dX[:, a:b]")
        name = base.id
        n = self.names
        if name not in n.grads:
            if name in n.readonly:
                raise self.err(base, f"{name} is the given gradient: it is read-only")
            if name in n.forward:
                grad = "d" + name
                raise self.err(base, f"{name} is a forward variable: you can only assign "
                               f"gradients such as {grad if grad in n.grads else n.example}")
            hint = self.suggest(name, n.grads)
            if hint:
                raise self.err(base, f"unknown gradient {name}{hint}")
            raise self.err(base, f"you can only assign gradients such as {n.example} "
                           f"({name} is not one)")
        step = None
        if n.grads[name]:
            if not subs:
                raise self.err(base, f"{name} has one value per step: assign {name}[t]")
            first = subs.pop(0)
            if isinstance(first.slice, ast.Slice | ast.Tuple):
                raise self.err(first.slice, f"{name} has one value per step: select the step "
                               f"first, as in {name}[t]")
            step = self.dims_expr(first.slice, "step indices")
        if len(subs) > 1:
            raise self.err(subs[1], "a target may have at most one slice, e.g. dX[:, a:b]")
        items = self.index_items(subs[0]) if subs else None
        return name, step, items

    # -- expressions --

    def index_items(self, node: ast.Subscript):
        sl = node.slice
        parts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        if len(parts) > 2:
            raise self.err(sl, "at most two indices: [rows, columns]")
        return tuple(self.all_of([lambda p=p: self.index_item(p) for p in parts]))

    def index_item(self, node: ast.expr):
        if isinstance(node, ast.Slice):
            lo, hi, st = self.all_of([
                lambda: None if node.lower is None else self.dims_expr(node.lower, "indices"),
                lambda: None if node.upper is None else self.dims_expr(node.upper, "indices"),
                lambda: None if node.step is None else self.dims_expr(node.step, "indices"),
            ])
            return _Slice(self.col(node), self.text(node), lo, hi, st)
        return self.dims_expr(node, "indices")

    def dims_expr(self, node: ast.expr, what: str):
        rule = _DIMS_RULE.format(dims=", ".join(self.names.dims) or "none")
        col, text = self.col(node), self.text(node)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.err(node, f"{what} must be whole numbers: {rule}")
            if abs(v) > MAX_LITERAL:
                raise self.err(node, f"the number {text} is unreasonably large")
            return _DInt(col, text, v)
        if isinstance(node, ast.Name):
            if node.id in self.loops:
                return _DName(col, text, node.id, True)
            if node.id in self.names.dims:
                return _DName(col, text, node.id, False)
            if node.id in self.names.forward or node.id in self.names.grads or \
                    node.id in self.names.readonly:
                raise self.err(node, f"{node.id} is a variable, not a dimension: {what} may use "
                               f"{rule}")
            hint = self.suggest(node.id, [*self.loops, *self.names.dims])
            raise self.err(node, f"unknown name {node.id}{hint}: {what} may use {rule}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            x = self.dims_expr(node.operand, what)
            return _DNeg(col, text, x) if isinstance(node.op, ast.USub) else x
        if isinstance(node, ast.BinOp) and type(node.op) in _DIM_OPS:
            a, b = self.all_of([lambda: self.dims_expr(node.left, what),
                                lambda: self.dims_expr(node.right, what)])
            return _DBin(col, text, _DIM_OPS[type(node.op)], a, b)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            raise self.err(node, f"use // for integer division in {what}")
        raise self.err(node, f"{what} must be dims expressions: {rule}")

    def expr(self, node: ast.expr):
        col, text = self.col(node), self.text(node)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, str | bytes):
                raise self.err(node, "strings are not allowed")
            if isinstance(v, bool) or v is None or v is Ellipsis or isinstance(v, complex):
                raise self.err(node, f"{text} is not allowed: only numbers")
            if not abs(v) <= MAX_LITERAL:
                raise self.err(node, f"the number {text} is unreasonably large "
                               f"(limit {MAX_LITERAL:g})")
            return _VNum(col, text, float(v))
        if isinstance(node, ast.Name):
            return self.name(node, None)
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                return self.power(node)
            if type(node.op) not in _BIN_OPS:
                sym = {ast.FloorDiv: "//", ast.Mod: "%", ast.BitXor: "^", ast.BitAnd: "&",
                       ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>"}.get(type(node.op), "?")
                hint = " (use ** for powers)" if sym == "^" else ""
                raise self.err(node, f"the operator {sym} is not allowed{hint}: use "
                               "+ - * / @ **")
            a, b = self.all_of([lambda: self.expr(node.left), lambda: self.expr(node.right)])
            return _VBin(self.op_col(node), text, _BIN_OPS[type(node.op)], a, b)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return _VNeg(col, text, self.expr(node.operand))
            if isinstance(node.op, ast.UAdd):
                return self.expr(node.operand)
            raise self.err(node, "only unary - and + are allowed")
        if isinstance(node, ast.Attribute):
            if node.attr == "T":
                return _VT(col, text, self.expr(node.value))
            raise self.attribute_error(node)
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise self.err(node, "compare two things at a time, e.g. (z5 > 0)")
            if type(node.ops[0]) not in _COMPARE_OPS:
                raise self.err(node, "only the comparisons > >= < <= are allowed")
            a, b = self.all_of([lambda: self.expr(node.left),
                                lambda: self.expr(node.comparators[0])])
            return _VCmp(self.op_col(node), text, _COMPARE_OPS[type(node.ops[0])], a, b)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Lambda):
            raise self.err(node, "lambdas are not allowed")
        if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            raise self.err(node, "comprehensions are not allowed")
        if isinstance(node, ast.JoinedStr):
            raise self.err(node, "strings are not allowed")
        if isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict):
            raise self.err(node, "lists, tuples, sets and dicts are not allowed")
        if isinstance(node, ast.Starred):
            raise self.err(node, "* unpacking is not allowed")
        if isinstance(node, ast.NamedExpr):
            raise self.err(node, ":= is not allowed")
        if isinstance(node, ast.BoolOp):
            raise self.err(node, "and/or are not allowed: multiply masks instead")
        if isinstance(node, ast.IfExp):
            raise self.err(node, "if-expressions are not allowed: use where(cond, a, b)")
        if isinstance(node, ast.Slice):
            raise self.err(node, "a slice is only allowed inside [...]")
        raise self.err(node, f"{type(node).__name__} expressions are not allowed")

    def op_col(self, node: ast.BinOp | ast.Compare) -> int:
        """Column of the operator itself, for runtime messages (between the operands)."""
        left = node.left
        right = node.right if isinstance(node, ast.BinOp) else node.comparators[0]
        start, end = getattr(left, "end_col_offset", None), getattr(right, "col_offset", None)
        if start is None or end is None or end < start:
            return self.col(node)
        gap = self.bytes[start:end].decode("utf-8", "replace")
        stripped = gap.lstrip(" )")
        return self.content_col + _char_col(self.content, start) + (len(gap) - len(stripped))

    def attribute_error(self, node: ast.Attribute) -> _Bad:
        if node.attr in FUNCTIONS:
            return self.err(node, f".{node.attr} is not allowed: the only attribute is .T "
                            f"(write np.{node.attr}(...) instead)")
        return self.err(node, f".{node.attr} is not allowed: the only attribute is .T")

    def name(self, node: ast.Name, step_node: ast.expr | None, whole: ast.expr | None = None):
        n, name = self.names, node.id
        col, text = self.col(node), self.text(whole or node)
        if name in self.loops:
            return _VIntName(col, text, _DName(col, text, name, True))
        if name in n.forward or name in n.grads or name in n.readonly:
            is_grad = name not in n.forward
            indexed = n.forward[name] if not is_grad else n.grads.get(name, n.readonly.get(name))
            if indexed and step_node is None:
                raise self.err(node, f"{name} has one value per step: write {name}[t]")
            step = self.dims_expr(step_node, "step indices") if step_node is not None else None
            return _VVar(col, text, name, is_grad, step)
        if name in n.dims:
            return _VIntName(col, text, _DName(col, text, name, False))
        if name in FUNCTIONS or name in ("range", "reversed"):
            raise self.err(node, f"{name} is a function: call it as {name}(...)")
        if name in _MODULES:
            raise self.err(node, f"{name} can only be used to call a function, e.g. {name}.exp(x)")
        hint = self.suggest(name, [*self.loops, *n.all_values()])
        raise self.err(node, f"unknown name {name}{hint}")

    def subscript(self, node: ast.Subscript):
        base = node.value
        if isinstance(base, ast.Name):
            n = self.names
            indexed = (n.forward.get(base.id) if base.id in n.forward
                       else n.grads.get(base.id, n.readonly.get(base.id)))
            if indexed:
                if isinstance(node.slice, ast.Slice | ast.Tuple):
                    raise self.err(node.slice, f"{base.id} has one value per step: select the "
                                   f"step first, as in {base.id}[t]")
                return self.name(base, node.slice, node)
        x, items = self.all_of([lambda: self.expr(base), lambda: self.index_items(node)])
        return _VSub(self.col(node.slice), self.text(node), x, items)

    def power(self, node: ast.BinOp):
        p = node.right
        sign = 1.0
        if isinstance(p, ast.UnaryOp) and isinstance(p.op, ast.USub | ast.UAdd):
            sign = -1.0 if isinstance(p.op, ast.USub) else 1.0
            p = p.operand
        if not (isinstance(p, ast.Constant) and isinstance(p.value, int | float)
                and not isinstance(p.value, bool) and abs(p.value) <= MAX_EXPONENT):
            raise self.err(node.right, f"the exponent must be a number between -{MAX_EXPONENT} "
                           f"and {MAX_EXPONENT}")
        base = self.expr(node.left)
        return _VPow(self.col(node), self.text(node), base, sign * float(p.value))

    def call(self, node: ast.Call):
        f = node.func
        if isinstance(f, ast.Name):
            fn = f.id
        elif (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
              and f.value.id in _MODULES):
            fn = f.attr
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute):
            raise self.err(f, f"{self.text(f)}(...) is not allowed: the only attribute is .T and "
                           "the only calls are to " + ", ".join(FUNCTIONS))
        elif isinstance(f, ast.Attribute) and f.attr != "T":
            raise self.attribute_error(f)
        else:
            hint = ""
            if isinstance(f, ast.Constant | ast.BinOp | ast.Subscript | ast.Call):
                hint = f" (write {self.text(f)} * (...): multiplication must be explicit)"
            raise self.err(node, f"{self.text(f)} cannot be called{hint}: the functions are "
                           + ", ".join(FUNCTIONS) + " (with or without np.)")
        if fn not in FUNCTIONS:
            hint = self.suggest(fn, FUNCTIONS)
            if fn in self.names.forward or fn in self.names.grads or fn in self.names.readonly:
                raise self.err(f, f"{fn} is a variable, not a function (write {fn} * (...): "
                               "multiplication must be explicit)")
            raise self.err(f, f"{fn}() is not allowed{hint}: the functions are "
                           + ", ".join(FUNCTIONS))
        lo, hi = FUNCTIONS[fn]
        axis_nodes = [k for k in node.keywords if k.arg == "axis"]
        others = [k for k in node.keywords if k.arg != "axis"]
        if others or (axis_nodes and fn != "sum"):
            bad = others[0] if others else axis_nodes[0]
            raise self.err(node, f"{fn}() does not take the keyword {bad.arg or '**'}")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.err(a, "* unpacking is not allowed")
        positional = list(node.args)
        axis_node = axis_nodes[0].value if axis_nodes else None
        if fn == "sum" and len(positional) == 2:
            if axis_node is not None:
                raise self.err(node, "sum() got the axis twice")
            axis_node = positional.pop()
            hi = 1
        if not lo <= len(positional) <= hi:
            want = str(lo) if lo == hi else f"{lo} or {hi}"
            raise self.err(node, f"{fn}() takes {want} argument{'s' if hi > 1 else ''}, "
                           f"got {len(positional)}")
        axis = None
        if axis_node is not None:
            if not (isinstance(axis_node, ast.Constant) and axis_node.value in (0, 1)
                    and not isinstance(axis_node.value, bool)):
                raise self.err(axis_node, "axis must be 0 (sum down columns) or 1 (sum along "
                               "rows)")
            axis = int(axis_node.value)
        args = self.all_of([lambda a=a: self.expr(a) for a in positional])
        return _VCall(self.col(node), self.text(node), fn, tuple(args), axis)


@dataclass
class _Line:
    lineno: int
    number: int | None
    indent: int
    content: str
    content_col: int
    header: bool


def _split_lines(source_lines: list[str]) -> Iterator[_Line]:
    for i, raw_line in enumerate(source_lines, start=1):
        raw = raw_line.expandtabs(4)
        number = None
        pre = 0
        start = 0
        m = _LABEL_RE.match(raw)
        if m:
            number = int(m.group(2))
            pre = len(m.group(1))
            start = m.end()
        rest = raw[start:]
        content = rest.lstrip()
        if not content or content.startswith("#"):
            continue
        content = content.rstrip()
        post = len(rest) - len(rest.lstrip())
        code = content.split("#", 1)[0].rstrip()
        # a block header; or a for loop whose colon is missing (its body is still checked)
        header = code.endswith(":") or (code.startswith("for ") and ":" not in code)
        yield _Line(i, number, pre + post, content, start + post, header)


def parse_equations(text: str, ctx: AnswerContext) -> EquationProgram:
    """Parse and check an equations answer.  Raises :class:`AnswerFormatError`."""
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    # str.splitlines(), as the rest of Nabla numbers lines (\r\n, \r, \f, \u2028 ...)
    source_lines = text.splitlines()
    if len(text) > MAX_TEXT_CHARS:
        raise AnswerFormatError([FormatError(1, 0, f"the answer is too long ({len(text)} "
                                             f"characters; limit {MAX_TEXT_CHARS})")])
    if len(source_lines) > MAX_LINES:
        raise AnswerFormatError([FormatError(1, 0, f"the answer has too many lines "
                                             f"({len(source_lines)}; limit {MAX_LINES})")])
    names = _Names(ctx)
    errors: list[FormatError] = []
    statements: list[_Assign] = []
    root: list[_Assign | _For] = []
    stack = [_Block(-1, root, None, 0, 0)]  # the open blocks, innermost last

    for ln in _split_lines(source_lines):
        if len(errors) >= MAX_ERRORS:
            break
        if "\x00" in ln.content:
            errors.append(FormatError(ln.lineno, ln.content_col + ln.content.index("\x00"),
                                      "the text contains a NUL character"))
            continue
        # A line belongs to the innermost open loop whose header is indented less.  Inside
        # a loop, unnumbered lines must line up; numbered lines may not (the labels "9." and
        # "10." differ in width, and people align either the labels or the statements).
        while len(stack) > 1 and ln.indent <= stack[-1].indent:
            _close_block(stack.pop(), errors)
        block = stack[-1]
        if block.body_indent is None:
            block.body_indent, block.body_numbered = ln.indent, ln.number is not None
        elif (len(stack) > 1 and ln.indent != block.body_indent and ln.number is None
              and not block.body_numbered):
            errors.append(FormatError(ln.lineno, ln.content_col, "the indentation does not "
                                      f"match the lines above it in the loop of line {block.line}"))
        loops = tuple(b.var for b in stack[1:] if b.var)
        node = _parse_line(ln, errors)
        checker = _LineChecker(names, ln.lineno, ln.number, ln.content, ln.content_col, loops,
                               errors, statements)
        converted = None
        if node is not None:
            # Each level of nesting takes at least one character: short lines need no walk.
            if len(ln.content) > MAX_DEPTH - 4 and depth_exceeds(node, MAX_DEPTH + 2):
                errors.append(FormatError(ln.lineno, ln.content_col, "the expression is nested "
                                          f"too deeply (limit {MAX_DEPTH})"))
            else:
                try:
                    converted = checker.statement(node)
                except _Bad:
                    pass
                except RecursionError:
                    errors.append(FormatError(ln.lineno, ln.content_col,
                                              "the expression is too complex"))
        if converted is not None:
            block.body.append(converted)
        if ln.header:
            var = None
            body: list[Any] = []
            if isinstance(converted, _For):
                var, body = converted.var, converted.body
            else:  # keep the body's names checkable despite a bad header
                m = _FOR_VAR_RE.match(ln.content)
                var = m.group(1) if m else None
            stack.append(_Block(ln.indent, body, var, ln.lineno, ln.content_col))
    while len(stack) > 1:
        _close_block(stack.pop(), errors)
    if errors:
        errors.sort(key=lambda e: (e.line, e.col))
        raise AnswerFormatError(errors, source_lines)
    assigned = frozenset(s.name for s in statements)
    return EquationProgram(ctx, tuple(source_lines), tuple(root), tuple(statements), assigned)


@dataclass
class _Block:
    indent: int  # of the loop header
    body: list[Any]
    var: str | None  # the loop variable
    line: int
    col: int
    body_indent: int | None = None  # of the first statement in the loop
    body_numbered: bool = False


def _close_block(block: _Block, errors: list[FormatError]) -> None:
    if block.body_indent is None:
        errors.append(FormatError(block.line, block.col, "this loop has no body: indent the "
                                  "statements that belong to it"))


def _parse_line(ln: _Line, errors: list[FormatError]) -> ast.stmt | None:
    src = ln.content + "\n    pass" if ln.header else ln.content
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = ast.parse(src, mode="exec")
    except SyntaxError as e:
        col = (e.offset or 1) - 1 if (e.lineno or 1) == 1 else len(ln.content)
        msg = e.msg or "invalid syntax"
        implicit = _IMPLICIT_MUL_RE.search(ln.content)
        if implicit:
            msg += f" (write {implicit.group(1)}*{implicit.group(2)}, not " \
                   f"{implicit.group(1)}{implicit.group(2)}: multiplication must be explicit)"
        if ln.header and (e.lineno or 1) != 1:
            msg = "invalid syntax"
        errors.append(FormatError(ln.lineno, ln.content_col + max(0, min(col, len(ln.content))),
                                  f"syntax error: {msg}"))
        return None
    except (MemoryError, RecursionError, ValueError, OverflowError):
        errors.append(FormatError(ln.lineno, ln.content_col, "the line is too complex to parse"))
        return None
    if len(mod.body) != 1:
        second = mod.body[1]
        errors.append(FormatError(ln.lineno, ln.content_col + _char_col(ln.content,
                                                                        second.col_offset),
                                  "write one statement per line"))
        return None
    return mod.body[0]


# ---------------------------------------------------------------------------
# Running


def _as_float_array(name: str, v) -> np.ndarray:
    if type(v) is np.ndarray and v.dtype == np.float64 and v.ndim == 2:
        return v
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}")
    return a


class PreparedValues(dict):
    """Forward values checked and converted for one program (``prepare_values``):
    :func:`evaluate_rhs` takes them as they are, which saves the conversion when
    the same values serve many calls."""


def prepare_values(program: EquationProgram, values) -> PreparedValues:
    return _prepare_values(program, values)


def _prepare_values(program: EquationProgram, values) -> dict[str, Any]:
    if isinstance(values, PreparedValues):
        return values
    vals: dict[str, Any] = PreparedValues()
    for name, spec in program.ctx.forward.items():
        if name not in values:
            raise KeyError(f"no value given for forward variable {name}")
        v = values[name]
        vals[name] = ([_as_float_array(name, x) for x in v] if _indexed(spec)
                      else _as_float_array(name, v))
    return vals


def _prepare(program: EquationProgram, values, grads):
    ctx = program.ctx
    vals = _prepare_values(program, values)
    gs: dict[str, Any] = {}
    for name, v in grads.items():
        gs[name] = ([_as_float_array(name, x) for x in v] if isinstance(v, list | tuple)
                    else _as_float_array(name, v))
    for name, spec in ctx.gradients.items():
        if name not in gs:
            gs[name] = [np.zeros(s) for s in spec] if _indexed(spec) else np.zeros(spec)
    return vals, gs


def run_equations(
    program: EquationProgram,
    values: Mapping[str, np.ndarray | list[np.ndarray]],
    grads: Mapping[str, np.ndarray | list[np.ndarray]],
    on_assign: Callable[[AssignEvent], None] | None = None,
    on_error: Callable[[AnswerRuntimeError], None] | None = None,
    *,
    strict_reads: bool = False,
) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Run a parsed answer and return the final gradients.

    ``values`` are the forward values; ``grads`` the initial gradients (zeros for
    assignable ones, the given value for read-only ones; a gradient of the
    context that is missing starts at zeros of its shape).  ``on_assign`` is
    called after every executed assignment.

    Without ``on_error`` the first runtime error is raised as
    :class:`AnswerRuntimeError`.  With it, the error is reported, the failing
    assignment (or loop) is skipped and the run continues; limits on total work
    (``fatal`` errors) still stop the run and are raised.

    With ``strict_reads``, a line that reads a gradient (other than a
    read-only one, or its own target) before any line assigned it fails:
    grading must not take the zeros a gradient starts at for a value the
    student computed.
    """
    vals, gs = _prepare(program, values, grads)
    rt = _Run(vals, gs, program.ctx.dims,
              strict=frozenset(program.ctx.readonly) if strict_reads else None)
    with np.errstate(all="ignore"):
        _run_block(program.body, rt, on_assign, on_error)
    return {k: list(v) if isinstance(v, list) else v for k, v in gs.items()}


def _run_block(body, rt: _Run, on_assign, on_error) -> None:
    for stmt in body:
        if isinstance(stmt, _Assign):
            try:
                _count_step(rt, stmt.line)
                _exec_assign(stmt, rt, on_assign)
            except AnswerRuntimeError as e:
                if on_error is None or e.fatal:
                    raise
                rt.failed.add((stmt.name, e.index))
                on_error(e)
            continue
        try:
            bounds = [a.ev(rt) for a in stmt.args]
            if len(bounds) == 3 and bounds[2] == 0:
                raise _Fail("range() step must not be zero", stmt.args[2].col)
        except _Fail as f:
            e = AnswerRuntimeError(stmt.line, f.message, col=f.col, loop_env=rt.env)
            if on_error is None:
                raise e from None
            on_error(e)
            continue
        steps = range(*bounds)
        if stmt.reverse:
            steps = reversed(steps)
        saved = rt.env.get(stmt.var)
        try:
            for t in steps:
                _count_step(rt, stmt.line)
                rt.env[stmt.var] = t
                _run_block(stmt.body, rt, on_assign, on_error)
        finally:
            if saved is None:
                rt.env.pop(stmt.var, None)
            else:
                rt.env[stmt.var] = saved


def _count_step(rt: _Run, line: int) -> None:
    rt.steps += 1
    if rt.steps > MAX_STEPS:
        raise AnswerRuntimeError(line, f"too many steps: the answer ran more than {MAX_STEPS} "
                                 "statements", loop_env=rt.env, fatal=True)


def _exec_assign(s: _Assign, rt: _Run, on_assign) -> None:
    index: tuple[int, ...] = ()
    try:
        rt.reads = []
        container = rt.grads[s.name]
        if s.step is not None:
            index = (_step_index(s.name, container, s.step, rt),)
            before = container[index[0]]
        else:
            before = container
        rt.target = (s.name, index)
        rhs = s.rhs.ev(rt)
        after, region = _apply(s, before, rhs, rt, index)
    except _Fail as f:
        raise AnswerRuntimeError(s.line, f.message, col=f.col, stmt_id=s.stmt_id,
                                 loop_env=rt.env, target=s.name, index=index,
                                 fatal=f.fatal) from None
    if index:
        container[index[0]] = after
    else:
        rt.grads[s.name] = after
    rt.assigned.add((s.name, index))
    if on_assign is not None:
        reads = tuple(dict.fromkeys(rt.reads))
        on_assign(AssignEvent(s.line, s.number, s.source, s.name, index, region, s.op,
                              _as_2d(rhs), before, after, reads, s.stmt_id, dict(rt.env)))


def _apply(s: _Assign, before: np.ndarray, rhs, rt: _Run, index):
    label = s.name + (f"[{index[0]}]" if index else "")
    if s.items is not None:
        rows, cols = _np_index(s.items, before, rt, label)
        new = before.copy()
        region = new[rows, cols]
        rtext = _region_text(rows, cols, before.shape)
        if not (_is_scalar(rhs) or rhs.shape == (1, 1) or rhs.shape == region.shape):
            verb = "assign" if s.op == "=" else "add"
            raise _Fail(f"cannot {verb} {s.rhs.text} ({_shape_text(rhs)}) into "
                        f"{label}{rtext}, which is {_shape_text(region)}", s.rhs.col)
        if s.op == "=":
            new[rows, cols] = rhs
        elif s.op == "+=":
            new[rows, cols] = region + rhs
        else:
            new[rows, cols] = region - rhs
        return new, rtext
    if s.op == "=":
        if _is_scalar(rhs):
            return np.full(before.shape, float(rhs)), None
        return rhs.copy(), None  # never alias another gradient or a caller's array
    sign = 1.0 if s.op == "+=" else -1.0
    if _is_scalar(rhs) or rhs.shape == (1, 1) or rhs.shape == before.shape:
        return before + sign * rhs, None
    # Gradients start at zero: the first += may give the gradient its shape (a transposed
    # or other-layout answer must still run so that the grader can say so).
    if (s.name, index) not in rt.assigned and not before.any():
        return sign * rhs, None
    raise _Fail(f"cannot add {s.rhs.text} ({_shape_text(rhs)}) to {label}, which is "
                f"{_shape_text(before)}", s.rhs.col)


def evaluate_rhs(
    program: EquationProgram,
    event_or_statement_id: AssignEvent | AnswerRuntimeError | int,
    values: Mapping[str, np.ndarray | list[np.ndarray]],
    lookup_grad: Callable[[str, tuple[int, ...]], np.ndarray],
    loop_env: Mapping[str, int] | None = None,
) -> np.ndarray:
    """Re-evaluate one assignment's right-hand side, reading every gradient through
    ``lookup_grad(name, index)`` (e.g. the reference values: "is this line's own rule
    right given correct inputs?").

    Pass an :class:`AssignEvent` (or an :class:`AnswerRuntimeError` of an assignment),
    whose ``stmt_id`` and ``loop_env`` are used, or a statement id and ``loop_env``.
    Returns a 2-D array (a number becomes 1×1).  Raises :class:`AnswerRuntimeError`.
    """
    if isinstance(event_or_statement_id, AssignEvent | AnswerRuntimeError):
        stmt_id = event_or_statement_id.stmt_id
        env = dict(event_or_statement_id.loop_env if loop_env is None else loop_env)
    else:
        stmt_id = event_or_statement_id
        env = dict(loop_env or {})
    if stmt_id is None or not 0 <= stmt_id < len(program.statements):
        raise ValueError(f"no assignment with id {stmt_id}")
    stmt = program.statements[stmt_id]
    rt = _Run(_prepare_values(program, values), {}, program.ctx.dims, lookup=lookup_grad)
    rt.env = env
    # Step selection of indexed gradients needs their lengths: take them from the context.
    for name, spec in program.ctx.gradients.items():
        if _indexed(spec):
            rt.grads[name] = [None] * len(spec)
    for name in program.ctx.readonly:
        if name not in rt.grads:
            fspec = program.ctx.forward.get(name[1:])
            if _indexed(fspec):
                rt.grads[name] = [None] * len(fspec)
    try:
        with np.errstate(all="ignore"):
            return _as_2d(stmt.rhs.ev(rt))
    except _Fail as f:
        raise AnswerRuntimeError(stmt.line, f.message, col=f.col, stmt_id=stmt_id, loop_env=env,
                                 target=stmt.name) from None
