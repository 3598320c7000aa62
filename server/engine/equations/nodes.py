"""The answer language's nodes: limits, the public data types, and the tree a line
becomes (dims expressions, value expressions, statements) with its evaluation.

Part of the strict answer language (``server/engine/equations``): see its
``__init__`` for the whole.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    "mean": (1, 2),
    "max": (1, 2),
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
            raise _Fail(
                f"an intermediate result would have {n} elements (limit {MAX_ELEMENTS})", col
            )
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


_REDUCTIONS = {"sum": np.sum, "mean": np.mean, "max": np.max}


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
        if fn in _REDUCTIONS:  # sum, mean, max: 1×1 or along an axis, 2-D shapes kept
            v = _as_2d(vals[0])
            rt.charge(v.size, self.col)
            if self.axis is None:
                return np.full((1, 1), _REDUCTIONS[fn](v, axis=None))
            return _REDUCTIONS[fn](v, axis=self.axis, keepdims=True)
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
