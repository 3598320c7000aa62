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
from dataclasses import dataclass
from fractions import Fraction

import sympy

from server.engine.astcheck import depth_exceeds

MAX_TEXT_CHARS = 1_000
MAX_DEPTH = 40  # nesting of the syntax tree
MAX_EXPONENT = 100  # |constant exponent|
MAX_NUMBER = sympy.Integer(10) ** 100  # largest constant the expression may produce
MAX_LITERAL = 10**12
MAX_DIGITS = 200  # digits of a numerator or denominator (1.000001**100**100 is near 1, but
#                   exact: its 10**8 digits would take sympy minutes)

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
        return (
            f"col {self.col + 1}: {self.message}\n    {flat}\n    {' ' * min(self.col, len(flat))}^"
        )


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
        if value.is_Rational and max(abs(value.p), value.q).bit_length() > MAX_DIGITS * 3.33:
            raise self.fail(node, "a number in the expression has too many digits")
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
            if base.is_Rational and exponent.is_Rational and abs(exponent) > 1:
                # an exact power has |exponent| times the digits: refuse it before sympy
                # computes it
                bits = max(abs(base.p), base.q).bit_length() * abs(exponent)
                if bits > MAX_DIGITS * 3.33:
                    large = float(exponent) * math.log10(abs(float(base))) > 100
                    raise self.fail(node, "a number in the expression is unreasonably large"
                                    if large else "a number in the expression has too many "
                                    "digits")
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
# Evaluation with bounded magnitudes
#
# A student's expression is first evaluated in complex float64, node by node,
# with every intermediate value bounded: ``exp(exp(exp(exp(exp(x)))))`` is
# "too large" after three nodes, instead of reaching mpmath with a number of
# 10**126 digits. sympy's evalf (30 digits) only ever sees an answer whose
# float evaluation stayed below PRECISE_LIMIT everywhere.

MAGNITUDE_LIMIT = 1e100  # |any intermediate value| beyond this: too large to evaluate
PRECISE_LIMIT = 1e30  # the 30-digit re-evaluation runs only below this (mpmath stays cheap)
REFERENCE_LIMIT = 1e12  # a reference this large is near a singularity: not a sample point
CONDITION_LIMIT = 1e4  # relative sensitivity of the reference beyond which a point is skipped
SAMPLE_MAGNITUDE = (0.3, 2.0)  # |symbol| at sample points, on both sides of zero


class _Unsupported(Exception):
    pass


class _TooLarge(Exception):
    pass


_CMATH = {
    sympy.sin: cmath.sin, sympy.cos: cmath.cos, sympy.tan: cmath.tan, sympy.exp: cmath.exp,
    sympy.log: cmath.log, sympy.tanh: cmath.tanh, sympy.Abs: abs,
}


def _sign(v: complex) -> complex:
    if v.imag:
        raise ValueError("sign of a complex number")
    return complex((v.real > 0) - (v.real < 0))


_CMATH[sympy.sign] = _sign


@dataclass(frozen=True)
class Evaluation:
    """An expression's value at a point, in float64 with bounded magnitudes."""

    status: str  # ok | undefined (domain error, division by zero, not real) | too_large
    #              | unsupported (a node this evaluator does not know)
    value: float | None = None
    peak: float = 0.0  # the largest |intermediate value| met


class _FloatEvaluator:
    def __init__(self, env: dict[str, complex]):
        self.env = env
        self.cache: dict[sympy.Expr, complex] = {}
        self.peak = 0.0

    def value(self, expr: sympy.Expr) -> complex:
        hit = self.cache.get(expr)
        if hit is not None:
            return hit
        v = self._compute(expr)
        if not (math.isfinite(v.real) and math.isfinite(v.imag)):
            raise _TooLarge  # inf or nan only come from an overflow here
        magnitude = abs(v)
        if magnitude > MAGNITUDE_LIMIT:
            raise _TooLarge
        self.peak = max(self.peak, magnitude)
        self.cache[expr] = v
        return v

    def _compute(self, expr: sympy.Expr) -> complex:
        if expr.is_Symbol:
            return self.env[expr.name]
        if expr.is_Number:
            return complex(float(expr))
        if expr is sympy.E:
            return complex(math.e)
        if expr is sympy.pi:
            return complex(math.pi)
        if expr.is_Add:
            return sum((self.value(a) for a in expr.args), 0j)
        if expr.is_Mul:
            v = 1 + 0j
            for a in expr.args:
                v *= self.value(a)
                if not (math.isfinite(v.real) and math.isfinite(v.imag)):
                    raise _TooLarge
            return v
        if expr.is_Pow:
            base, exponent = expr.args
            b = self.value(base)
            if exponent.is_Integer:
                return b ** int(exponent)  # |exponent| <= MAX_EXPONENT for answers
            e = self.value(exponent)
            if b == 0 and e.real > 0:
                return 0j
            # |b**e| = exp(e.real*log|b| - e.imag*arg b): refuse before Python overflows
            if b and e.real * math.log(abs(b)) - e.imag * cmath.phase(b) > 700:
                raise _TooLarge
            return b ** e
        if expr.func in _CMATH and len(expr.args) == 1:
            return complex(_CMATH[expr.func](self.value(expr.args[0])))
        raise _Unsupported


def evaluate(expr: sympy.Expr, point: dict[str, float]) -> Evaluation:
    """``expr`` at ``point`` in float64, never through sympy's evalf (a pure helper).

    Every intermediate value is bounded by MAGNITUDE_LIMIT: beyond it, or on an
    overflow, the status is ``too_large`` and evaluation stops there.
    """
    evaluator = _FloatEvaluator({k: complex(v) for k, v in point.items()})
    try:
        value = evaluator.value(expr)
    except _TooLarge:
        return Evaluation("too_large", peak=math.inf)
    except OverflowError:
        return Evaluation("too_large", peak=math.inf)
    except (ZeroDivisionError, ValueError):
        return Evaluation("undefined", peak=evaluator.peak)
    except (_Unsupported, KeyError, TypeError, RecursionError):
        return Evaluation("unsupported", peak=evaluator.peak)
    real = _real(value)
    if real is None:
        return Evaluation("undefined", peak=evaluator.peak)
    return Evaluation("ok", real, evaluator.peak)


def _real(value: complex) -> float | None:
    if abs(value.imag) > 1e-9 * max(1.0, abs(value.real)):
        return None  # outside the real domain
    return value.real


def _precise(expr: sympy.Expr, point: dict[str, float]) -> float | None:
    """The value with 30 digits (sympy's evalf). Only for bounded expressions: see
    PRECISE_LIMIT; a TA's reference with nodes the float evaluator does not know."""
    subs = {s: sympy.Float(point[s.name], 30) for s in expr.free_symbols if s.name in point}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = complex(expr.evalf(30, subs=subs))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, ArithmeticError):
        return None
    if not (math.isfinite(value.real) and math.isfinite(value.imag)):
        return None
    return _real(value)


def _trusted(expr: sympy.Expr, point: dict[str, float]) -> tuple[float | None, float]:
    """(value, peak) of the problem's own function or reference (written by the course
    staff); the value is None where it is undefined, not real or too large."""
    e = evaluate(expr, point)
    if e.status == "unsupported":
        return _precise(expr, point), 0.0
    return (e.value if e.status == "ok" else None), e.peak


# ---------------------------------------------------------------------------
# Equivalence


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


def _close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-12


def _at(point: dict[str, float]) -> str:
    return ", ".join(f"{n}={v:.6g}" for n, v in point.items()) or "any point"


@dataclass(frozen=True)
class Judgement:
    """How an answer compares with the reference. The message never gives a
    value of the reference (it would be an oracle for the answer)."""

    verdict: str  # equal | sign | sign_for_negative | differs | undefined | too_large | unknown
    message: str
    compared: int  # sample points at which both were compared

    @property
    def equal(self) -> bool:
        return self.verdict == "equal"


def sample_points(names: Sequence[str], rng: random.Random,
                  domain: tuple[float, float] | None = None):
    """Endless sample points: each symbol with |value| in SAMPLE_MAGNITUDE, the first
    one alternately positive and negative, the others of a random sign; or uniform
    in ``domain`` when the problem gives one."""
    k = 0
    while True:
        point = {}
        for i, name in enumerate(names):
            if domain is not None:
                point[name] = round(rng.uniform(*domain), 6)
                continue
            negative = (k % 2 == 1) if i == 0 else rng.random() < 0.5
            magnitude = round(rng.uniform(*SAMPLE_MAGNITUDE), 6)
            point[name] = -magnitude if negative else magnitude
        k += 1
        yield point


def _well_conditioned(reference: sympy.Expr, point: dict[str, float], value: float) -> bool:
    """False near a pole or a zero of the reference, where a relative comparison means
    nothing: its relative change for a relative step of 1e-7 exceeds 1e-7 * CONDITION_LIMIT."""
    if abs(value) > REFERENCE_LIMIT:
        return False
    step = 1e-7
    moved, _ = _trusted(reference, {n: v * (1 + step) for n, v in point.items()})
    if moved is None:
        return False
    change = abs(moved - value)
    return change == 0 or change <= step * CONDITION_LIMIT * abs(value)


def judge_expression(answer: sympy.Expr, reference: sympy.Expr, symbols: Sequence[str], *,
                     function: sympy.Expr | None = None, rtol: float = 1e-6, points: int = 8,
                     seed: int = 0, domain: tuple[float, float] | None = None,
                     time_limit_s: float = 1.0) -> Judgement:
    """Compare ``answer`` with ``reference`` at ``points`` random points.

    Points are drawn on both sides of zero (or in ``domain``); a point is used only
    where ``function`` (the L the reference is the derivative of, if given) and the
    reference are defined, real and finite, and the reference is well conditioned.
    Symbols are real, and positive only if ``domain`` lies in x > 0. The answer is
    evaluated in float64 with bounded magnitudes (``evaluate``); a disagreement in
    floating point is looked at again with 30 digits when the magnitudes allow.
    Only when fewer than two points could be compared is ``simplify(answer -
    reference) == 0`` tried, under ``time_limit_s``.
    """
    names = list(dict.fromkeys([*symbols, *sorted(
        s.name for s in (answer.free_symbols | reference.free_symbols))]))
    positive = domain is not None and domain[0] > 0
    canon = {n: sympy.Symbol(n, positive=True) if positive else sympy.Symbol(n, real=True)
             for n in names}

    def canonical(e: sympy.Expr) -> sympy.Expr:
        return e.xreplace({s: canon[s.name] for s in e.free_symbols if s.name in canon})

    a, r = canonical(answer), canonical(reference)
    f = canonical(function) if function is not None else None
    compared: list[tuple[dict[str, float], float, float]] = []
    candidates = sample_points(names, random.Random(seed), domain)
    for _ in range(points * 6):
        if len(compared) >= points:
            break
        point = next(candidates)
        if f is not None and _trusted(f, point)[0] is None:
            continue  # outside the domain of L
        vr, peak = _trusted(r, point)
        if vr is None or not _well_conditioned(r, point, vr):
            continue
        ea = evaluate(a, point)
        if ea.status == "too_large":
            return Judgement("too_large", "too large to evaluate: the answer exceeds "
                             f"{MAGNITUDE_LIMIT:.0e} at {_at(point)}", len(compared))
        if ea.status == "undefined":
            return Judgement("undefined", f"the answer is undefined at {_at(point)}, where the "
                             "derivative is defined", len(compared))
        if ea.status != "ok":
            continue
        va = ea.value
        assert va is not None
        peak = max(peak, ea.peak, 1.0)
        if not _close(va, vr, rtol) and peak <= PRECISE_LIMIT and abs(va - vr) <= 1e-9 * peak:
            # a difference that rounding could explain (cancellation in floating point):
            # look again with 30 digits
            pa, pr = _precise(a, point), _precise(r, point)
            if pa is not None and pr is not None:
                va, vr = pa, pr
        compared.append((point, va, vr))
    return _verdict(compared, names, a, r, rtol, time_limit_s)


def _verdict(compared, names, a, r, rtol, time_limit_s) -> Judgement:
    n = len(compared)
    equal = [_close(va, vr, rtol) for _, va, vr in compared]
    if n >= 2 and all(equal):
        return Judgement("equal", f"equal at {n} random points", n)
    if n < 2:
        symbolic, why = _simplifies_to_zero(a - r, time_limit_s)
        if symbolic:
            return Judgement("equal", "equal: simplify(answer - expected) = 0", n)
        return Judgement("unknown", "could not confirm equality: the expressions could not be "
                         "compared numerically" + (f" ({why})" if why else ""), n)
    negated = [_close(-va, vr, rtol) for _, va, vr in compared]
    if all(negated):
        return Judgement("sign", "the answer has the wrong sign", n)
    v = names[0]
    if all(e if p[v] > 0 else g for (p, _, _), e, g in zip(compared, equal, negated)):
        return Judgement("sign_for_negative", f"the answer agrees for {v} > 0 but has the wrong "
                         f"sign for {v} < 0: {v} is not assumed positive "
                         f"(sqrt({v}**2) is |{v}|, not {v})", n)
    wrong = n - sum(equal)
    return Judgement("differs", f"the answer differs from the derivative at {wrong} of the {n} "
                     "random points checked", n)


def expressions_equivalent(answer: sympy.Expr, reference: sympy.Expr, symbols: Sequence[str],
                           **options) -> tuple[bool, str]:
    """(equal, reason): ``judge_expression`` as a pair."""
    judgement = judge_expression(answer, reference, symbols, **options)
    return judgement.equal, judgement.message
