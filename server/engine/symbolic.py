"""Scalar expression answers: a strict parser into sympy, and an equivalence judge.

The text never reaches ``eval``, ``sympify`` or ``parse_expr``: it is parsed with
:mod:`ast`, checked against an allowlist and the sympy tree is built here, node by
node.  The same parser reads TA-written functions in problem specs
(``what="spec"``), so messages stay generic.
"""

from __future__ import annotations

import ast
import cmath
import difflib
import math
import random
import re
import threading
import warnings
from collections.abc import Iterable, Sequence
from fractions import Fraction

import sympy

from server.engine.astcheck import depth_exceeds

MAX_TEXT_CHARS = 1_000
MAX_DEPTH = 40  # nesting of the syntax tree
MAX_EXPONENT = 100  # |constant exponent|
MAX_NUMBER = sympy.Integer(10) ** 100  # largest constant the expression may produce
MAX_LITERAL = 10**12

# At most this many simplifications may still be running in the background after
# their caller stopped waiting (a thread cannot be killed); beyond that the numeric
# check alone decides.
_BACKGROUND_SLOTS = threading.BoundedSemaphore(2)

_MODULES = ("np", "numpy", "math")


def _sigmoid(x):
    return 1 / (1 + sympy.exp(-x))


FUNCTIONS = {
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "exp": sympy.exp,
    "log": sympy.log,
    "ln": sympy.log,
    "sqrt": sympy.sqrt,
    "tanh": sympy.tanh,
    "sigmoid": _sigmoid,
    "abs": sympy.Abs,
}
CONSTANTS = {"e": sympy.E, "pi": sympy.pi}

_IMPLICIT_MUL_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?)(?![eE][-+]?\d)([A-Za-z_]\w*)")
_ADJACENT_RE = re.compile(r"[\w)]\s+[A-Za-z_(]")


class ExpressionFormatError(Exception):
    """The text is not a valid expression.

    ``col`` is a 0-based column in the text with line breaks read as spaces (an
    expression is one logical line).
    """

    def __init__(self, message: str, col: int = 0):
        self.message = message
        self.col = col
        super().__init__(f"col {col + 1}: {message}")

    def render(self, text: str) -> str:
        flat = _flatten(text)
        return f"col {self.col + 1}: {self.message}\n    {flat}\n    {' ' * min(self.col, len(flat))}^"


def _flatten(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ").replace("\t", " ")


class _Parser:
    def __init__(self, source: str, symbols: dict[str, sympy.Symbol], what: str,
                 col_map: list[int]):
        self.source = source  # the text with ^ replaced by **
        self.symbols = symbols
        self.what = what
        self.col_map = col_map  # source column -> column of the text as written

    def where(self, node: ast.AST) -> int:
        offset = getattr(node, "col_offset", 0)
        col = len(self.source.encode("utf-8")[:offset].decode("utf-8", "ignore"))
        return self.col_map[min(col, len(self.col_map) - 1)]

    def operator_col(self, node: ast.BinOp) -> int:
        """Column of a binary operator: the first non-blank, non-")" after the left operand."""
        start, end = node.left.end_col_offset, node.right.col_offset
        if start is None or end is None or end < start or node.end_lineno != 1:
            return self.where(node)
        raw = self.source.encode("utf-8")
        gap = raw[start:end].decode("utf-8", "ignore")
        skipped = len(gap) - len(gap.lstrip(" )"))
        col = len(raw[:start].decode("utf-8", "ignore")) + skipped
        return self.col_map[min(col, len(self.col_map) - 1)]

    def fail(self, node: ast.AST, message: str) -> ExpressionFormatError:
        return ExpressionFormatError(message, self.where(node))

    def known(self) -> str:
        return ", ".join(self.symbols) or "none"

    def check_size(self, value: sympy.Expr, node: ast.AST) -> sympy.Expr:
        if value.is_Number and value.is_finite and abs(value) > MAX_NUMBER:
            raise self.fail(node, "a number in the expression is unreasonably large")
        return value

    def build(self, node: ast.AST) -> sympy.Expr:
        if isinstance(node, ast.Expression):
            return self.build(node.body)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, int | float):
                kind = "strings are" if isinstance(v, str | bytes) else f"{v!r} is"
                raise self.fail(node, f"{kind} not allowed: only numbers, "
                                f"{self.known()}, + - * / ** and functions")
            if not abs(v) <= MAX_LITERAL:
                raise self.fail(node, f"the number {v!r} is unreasonably large")
            if isinstance(v, int):
                return sympy.Integer(v)
            fr = Fraction(repr(v))  # exact decimal: 0.1 is 1/10
            return sympy.Rational(fr.numerator, fr.denominator)
        if isinstance(node, ast.Name):
            if node.id in self.symbols:
                return self.symbols[node.id]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise self.fail(node, f"{node.id} is a function: write {node.id}(...)")
            close = difflib.get_close_matches(node.id, [*self.symbols, *CONSTANTS], n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise self.fail(node, f"unknown name '{node.id}'{hint}; known: {self.known()}")
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return self.check_size(-self.build(node.operand), node)
            if isinstance(node.op, ast.UAdd):
                return self.build(node.operand)
            raise self.fail(node, "only unary - and + are allowed")
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in _MODULES:
                if node.attr in CONSTANTS:
                    return CONSTANTS[node.attr]
                if node.attr in FUNCTIONS:
                    raise self.fail(node, f"{node.attr} is a function: write "
                                    f"{node.value.id}.{node.attr}(...)")
            raise self.fail(node, f"attribute .{node.attr} is not allowed")
        if isinstance(node, ast.Lambda):
            raise self.fail(node, "lambdas are not allowed")
        if isinstance(node, ast.Compare | ast.BoolOp | ast.IfExp):
            raise self.fail(node, "comparisons and conditions are not allowed")
        if isinstance(node, ast.JoinedStr):
            raise self.fail(node, "strings are not allowed")
        return_kind = type(node).__name__
        raise self.fail(node, f"{return_kind} is not allowed: only numbers, {self.known()}, "
                        "+ - * / ** and functions")

    def binop(self, node: ast.BinOp) -> sympy.Expr:
        op = node.op
        if isinstance(op, ast.Pow):
            base = self.build(node.left)
            exponent = self.build(node.right)
            if exponent.is_Number and abs(exponent) > MAX_EXPONENT:
                raise self.fail(node.right, f"the exponent must be at most {MAX_EXPONENT} in "
                                "size")
            if base.is_Number and exponent.is_Number and abs(base) > MAX_NUMBER:
                raise self.fail(node, "a number in the expression is unreasonably large")
            return self.check_size(base**exponent, node)
        builders = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
                    ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}
        if type(op) not in builders:
            names = {ast.MatMult: "@", ast.FloorDiv: "//", ast.Mod: "%", ast.BitXor: "^",
                     ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>"}
            raise ExpressionFormatError(f"the operator {names.get(type(op), '?')} is not allowed: "
                                        "use + - * / ** (or ^)", self.operator_col(node))
        a, b = self.build(node.left), self.build(node.right)
        return self.check_size(builders[type(op)](a, b), node)

    def call(self, node: ast.Call) -> sympy.Expr:
        f = node.func
        if isinstance(f, ast.Name):
            name = f.id
        elif (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
              and f.value.id in _MODULES):
            name = f.attr
        elif isinstance(f, ast.Constant | ast.BinOp | ast.UnaryOp | ast.Call):
            raise self.fail(node, "implicit multiplication is not accepted: write 2*(x+1), not "
                            "2(x+1)")
        else:
            raise self.fail(node, "only calls to " + ", ".join(FUNCTIONS) + " are allowed")
        if name not in FUNCTIONS:
            if name in self.symbols or name in CONSTANTS:
                raise self.fail(node, f"implicit multiplication is not accepted: write "
                                f"{name}*(...), not {name}(...)")
            close = difflib.get_close_matches(name, list(FUNCTIONS), n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise self.fail(node, f"unknown function '{name}'{hint}; the functions are "
                            + ", ".join(FUNCTIONS))
        if len(node.args) != 1 or node.keywords or isinstance(node.args[0], ast.Starred):
            raise self.fail(node, f"{name}() takes exactly one argument")
        return self.check_size(FUNCTIONS[name](self.build(node.args[0])), node)


def _replace_carets(line: str, shift: int) -> tuple[str, list[int]]:
    """Replace ``^`` by ``**``, mapping each source column back to a column of the text."""
    out, cmap = [], []
    for col, ch in enumerate(line):
        if ch == "^":
            out.append("**")
            cmap.extend((col + shift, col + shift))
        else:
            out.append(ch)
            cmap.append(col + shift)
    cmap.append(len(line) + shift)  # one past the end
    return "".join(out), cmap


def parse_scalar_expression(text: str, symbols: Iterable[str], *,
                            what: str = "answer") -> sympy.Expr:
    """Parse a scalar expression in ``symbols`` into sympy.

    Accepted: numbers, the symbols, ``e`` and ``pi``, ``+ - * / **`` (``^`` is a
    power), unary ``-``, and calls to sin cos tan exp log (ln) sqrt tanh sigmoid abs,
    with or without an ``np.``/``numpy.``/``math.`` prefix.  Symbols are plain
    ``sympy.Symbol(name)``.  Raises :class:`ExpressionFormatError` with a column.
    """
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    names = list(symbols)
    for n in names:
        if not n.isidentifier():
            raise ValueError(f"symbol names must be identifiers, got {n!r}")
    syms = {n: sympy.Symbol(n) for n in names}
    if len(text) > MAX_TEXT_CHARS:
        raise ExpressionFormatError(f"the {what} is too long ({len(text)} characters; limit "
                                    f"{MAX_TEXT_CHARS})")
    flat = _flatten(text)
    body = flat.strip()
    if not body:
        raise ExpressionFormatError(f"the {what} is empty")
    if "\x00" in flat:
        raise ExpressionFormatError("the text contains a NUL character", flat.index("\x00"))
    source, col_map = _replace_carets(body, len(flat) - len(flat.lstrip()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval")
    except SyntaxError as e:
        col = col_map[max(0, min((e.offset or 1) - 1, len(col_map) - 1))]
        msg = f"syntax error: {e.msg}"
        m = _IMPLICIT_MUL_RE.search(body)
        if m:
            col = m.start(1) + len(flat) - len(flat.lstrip())
            msg += (f" (implicit multiplication is not accepted: write {m.group(1)}*{m.group(2)}, "
                    f"not {m.group(1)}{m.group(2)})")
        elif _ADJACENT_RE.search(body):
            msg += " (implicit multiplication is not accepted: write x*y, not x y)"
        raise ExpressionFormatError(msg, col) from None
    except (MemoryError, RecursionError, ValueError, OverflowError):
        raise ExpressionFormatError(f"the {what} is too complex") from None
    if depth_exceeds(tree, MAX_DEPTH):
        raise ExpressionFormatError(f"the {what} is nested too deeply (limit {MAX_DEPTH})")
    parser = _Parser(source, syms, what, col_map)
    try:
        expr = parser.build(tree)
    except RecursionError:
        raise ExpressionFormatError(f"the {what} is too complex") from None
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        raise ExpressionFormatError(f"the {what} is undefined (a division by zero?)")
    return expr


# ---------------------------------------------------------------------------
# Equivalence


class _Unsupported(Exception):
    pass


_CMATH = {
    sympy.sin: cmath.sin, sympy.cos: cmath.cos, sympy.tan: cmath.tan, sympy.exp: cmath.exp,
    sympy.log: cmath.log, sympy.tanh: cmath.tanh, sympy.Abs: abs,
}


def _fast_value(expr: sympy.Expr, env: dict[str, complex], cache: dict) -> complex:
    """Evaluate our own sympy tree in complex floating point (no code generation)."""
    hit = cache.get(expr)
    if hit is not None:
        return hit
    if expr.is_Symbol:
        v = env[expr.name]
    elif expr.is_Number:
        v = complex(float(expr))
    elif expr is sympy.E:
        v = complex(math.e)
    elif expr is sympy.pi:
        v = complex(math.pi)
    elif expr.is_Add:
        v = sum((_fast_value(a, env, cache) for a in expr.args), 0j)
    elif expr.is_Mul:
        v = 1 + 0j
        for a in expr.args:
            v *= _fast_value(a, env, cache)
    elif expr.is_Pow:
        base, exponent = expr.args
        b = _fast_value(base, env, cache)
        if exponent.is_Integer:
            v = b ** int(exponent)
        else:
            v = b ** _fast_value(exponent, env, cache)
    elif expr.func in _CMATH and len(expr.args) == 1:
        v = complex(_CMATH[expr.func](_fast_value(expr.args[0], env, cache)))
    else:
        raise _Unsupported
    cache[expr] = v
    return v


def _real(value: complex) -> complex | None:
    if not (math.isfinite(value.real) and math.isfinite(value.imag)):
        return None
    if abs(value.imag) > 1e-9 * max(1.0, abs(value.real)):
        return None  # outside the real domain
    return complex(value.real)


def _numeric(expr: sympy.Expr, point: dict[str, float], precise: bool = False
             ) -> complex | None:
    """The value of ``expr`` at ``point``, or None where it is undefined or not real."""
    if not precise:
        try:
            return _real(_fast_value(expr, {k: complex(v) for k, v in point.items()}, {}))
        except (ZeroDivisionError, OverflowError, ValueError):
            return None
        except (_Unsupported, TypeError, RecursionError):
            pass  # a node we do not know (e.g. from a TA's reference): let sympy evaluate
    subs = {s: sympy.Float(point[s.name], 30) for s in expr.free_symbols if s.name in point}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = complex(expr.evalf(30, subs=subs))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, ArithmeticError):
        return None
    return _real(value)


def _simplifies_to_zero(diff: sympy.Expr, time_limit_s: float) -> tuple[bool | None, str]:
    """(True/False, "") if sympy decides within the time limit, else (None, why not)."""
    if not _BACKGROUND_SLOTS.acquire(blocking=False):
        return None, "simplification skipped: earlier ones are still running"
    result: list[bool] = []

    def work() -> None:
        # No warnings.catch_warnings() here: it is not thread-safe and would race with
        # the caller's own warning filters.
        try:
            result.append(sympy.simplify(diff) == 0)
        except Exception:  # sympy can fail in many ways; the numeric check decides then
            pass
        finally:
            _BACKGROUND_SLOTS.release()

    thread = threading.Thread(target=work, name="nabla-simplify", daemon=True)
    thread.start()
    thread.join(time_limit_s)
    return (result[0], "") if result else (None, "simplification timed out")


def _close(a: complex, b: complex, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-12


def _fmt(v: complex) -> str:
    return f"{v.real:.6g}"


def expressions_equivalent(answer: sympy.Expr, reference: sympy.Expr, symbols: Sequence[str], *,
                           rtol: float = 1e-6, points: int = 8, seed: int = 0,
                           time_limit_s: float = 1.0) -> tuple[bool, str]:
    """Judge whether ``answer`` equals ``reference``; returns (equal, reason).

    Both are evaluated at ``points`` random points with every symbol in
    [0.3, 2.0] (points where either is undefined or not real are skipped).  A
    disagreement decides "not equal".  When they agree, ``simplify(answer -
    reference) == 0`` is tried under ``time_limit_s``; numeric agreement is
    authoritative when simplification times out or is inconclusive.
    """
    names = list(dict.fromkeys([*symbols, *sorted(
        s.name for s in (answer.free_symbols | reference.free_symbols))]))
    canon = {n: sympy.Symbol(n, positive=True) for n in names}

    def canonical(e: sympy.Expr) -> sympy.Expr:
        return e.xreplace({s: canon[s.name] for s in e.free_symbols if s.name in canon})

    a, r = canonical(answer), canonical(reference)
    rng = random.Random(seed)
    agreed = 0
    tries = 0
    while agreed < points and tries < points * 4:
        tries += 1
        point = {n: round(rng.uniform(0.3, 2.0), 6) for n in names}
        at = ", ".join(f"{n}={point[n]:.6g}" for n in names) or "any point"
        va, vr = _numeric(a, point), _numeric(r, point)
        if va is None or vr is None or not _close(va, vr, rtol):
            # floating point may lose digits (cancellation): look again with 30 digits
            va, vr = _numeric(a, point, precise=True), _numeric(r, point, precise=True)
        if vr is None:
            continue
        if va is None:
            return False, f"the answer is undefined at {at}, where the expected value is {_fmt(vr)}"
        if not _close(va, vr, rtol):
            return False, f"at {at} the answer is {_fmt(va)} but the expected value is {_fmt(vr)}"
        agreed += 1
    symbolic, why = _simplifies_to_zero(a - r, time_limit_s)
    if symbolic:
        return True, f"equal: simplify(answer - expected) = 0 and they agree at {agreed} points"
    if agreed >= 2:
        why = why or "sympy could not simplify the difference to 0"
        return True, f"equal: they agree at {agreed} random points ({why})"
    return False, "could not confirm equality: the expressions could not be compared numerically"
