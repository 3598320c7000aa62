"""Property-based tests: whatever a student types, the parsers answer with a verdict or a
format error, and running a parsed answer either finishes or raises AnswerRuntimeError."""

from __future__ import annotations

import ast

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.equations import (
    AnswerContext,
    AnswerFormatError,
    AnswerRuntimeError,
    parse_equations,
    run_equations,
)
from server.engine.symbolic import ExpressionFormatError, parse_scalar_expression

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A small MLP with one indexed (per-step) variable so that loops and steps are exercised.
N, H, K, T = 3, 4, 2, 3
FORWARD = {"x": (N, 1), "W1": (H, N), "b1": (H, 1), "z1": (H, 1), "z2": (H, 1),
           "W2": (K, H), "output": (K, 1), "s": [(H, 1)] * T}
GRADIENTS = {"dx": (1, N), "dW1": (N, H), "db1": (1, H), "dz1": (1, H), "dz2": (1, H),
             "dW2": (H, K), "ds": [(1, H)] * T}
CTX = AnswerContext(FORWARD, GRADIENTS, frozenset({"doutput"}), {"N": N, "H": H, "K": K, "T": T})
RNG = np.random.default_rng(0)
VALUES = {k: [RNG.standard_normal(s) for s in v] if isinstance(v, list) else
          RNG.standard_normal(v) for k, v in FORWARD.items()}
GRADS = {"doutput": RNG.standard_normal((1, K))}

SEED = """\
1. dz2 = doutput @ W2
2. dW2 = z1 @ doutput
3. dz1 = dz2 * (z1 > 0).T
4. db1 = dz1
5. dW1 = x @ dz1
6. dx = dz1 @ W1
7. for t in range(T):
8.     ds[t] = dz1 + s[t].T
9.     dz2 += ds[t][:, 0:H]
"""


def check(text: str) -> None:
    try:
        program = parse_equations(text, CTX)
    except AnswerFormatError as e:
        assert e.errors
        for err in e.errors:
            assert err.line >= 1 and err.col >= 0 and err.message
            err.render(text.split("\n"))
        return
    for on_error in (None, lambda e: None):
        try:
            out = run_equations(program, VALUES, GRADS, on_assign=lambda e: None,
                                on_error=on_error)
        except AnswerRuntimeError as e:
            assert e.line >= 1 and e.message
            continue
        assert set(GRADIENTS) <= set(out)


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text):
    check(text)


TOKENS = ["dz1", "dz2", "dW1", "dx", "ds", "s", "x", "z1", "W1", "W2", "doutput", "t", "T", "N",
          "H", "0", "1", "2.5", "-", "+", "*", "/", "@", "**", "(", ")", "[", "]", ":", ",", ".T",
          " ", "  ", "\n", "    ", "=", "+=", "-=", ">", "np.", "sum", "exp", "diag", "outer",
          "where", "for ", " in ", "range", "reversed", "#", "1. ", "10) ", "axis=0", "'", "^",
          "lambda", "import", "__class__", "open", "1e7", "\t"]


@FUZZ
@given(st.data())
def test_mutated_answers(data):
    text = SEED
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        token = data.draw(st.sampled_from(TOKENS))
        if kind == "insert":
            text = text[:pos] + token + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + data.draw(st.integers(1, 5)):]
        else:
            text = text[:pos] + token + text[pos + len(token):]
    check(text)


# --- random Python syntax trees ---------------------------------------------------------

NAMES = ["x", "W1", "W2", "z1", "z2", "b1", "s", "dz1", "dz2", "ds", "doutput", "dW1", "t", "i",
         "N", "H", "T", "np", "exp", "sum", "foo", "dW_1", "__import__", "open", "print"]
FUNCS = ["sigmoid", "tanh", "exp", "log", "sqrt", "abs", "sum", "diag", "outer", "where",
         "maximum", "ones_like", "zeros_like", "eval", "open", "getattr", "len", "range"]

names = st.sampled_from(NAMES).map(lambda n: ast.Name(n, ast.Load()))
constants = st.one_of(
    st.integers(-3, 6), st.sampled_from([0.5, 1e7, -2.0, 1e-3]), st.sampled_from(["s", True, None]),
).map(ast.Constant)
leaves = st.one_of(names, constants)


def extend(children):
    binop = st.builds(ast.BinOp, children, st.sampled_from(
        [ast.Add(), ast.Sub(), ast.Mult(), ast.Div(), ast.MatMult(), ast.Pow(), ast.FloorDiv(),
         ast.Mod()]), children)
    unary = st.builds(ast.UnaryOp, st.sampled_from([ast.USub(), ast.UAdd(), ast.Not()]),
                      children)
    compare = st.builds(lambda a, op, b: ast.Compare(a, [op], [b]), children,
                        st.sampled_from([ast.Gt(), ast.GtE(), ast.Lt(), ast.LtE(), ast.Eq()]),
                        children)
    func = st.one_of(
        st.sampled_from(FUNCS).map(lambda f: ast.Name(f, ast.Load())),
        st.sampled_from(FUNCS).map(lambda f: ast.Attribute(ast.Name("np", ast.Load()), f,
                                                           ast.Load())),
    )
    call = st.builds(lambda f, args, axis: ast.Call(f, args, [ast.keyword("axis", ast.Constant(
        axis))] if axis is not None else []), func, st.lists(children, max_size=3),
        st.sampled_from([None, 0, 1, 2]))
    attr = st.builds(lambda v, a: ast.Attribute(v, a, ast.Load()), children,
                     st.sampled_from(["T", "T", "shape", "__class__"]))
    index = st.one_of(children, st.builds(ast.Slice, st.none() | children,
                                          st.none() | children))
    sub = st.builds(lambda v, items: ast.Subscript(
        v, items[0] if len(items) == 1 else ast.Tuple(items, ast.Load()), ast.Load()),
        children, st.lists(index, min_size=1, max_size=3))
    return st.one_of(binop, unary, compare, call, attr, sub)


expressions = st.recursive(leaves, extend, max_leaves=12)

targets = st.one_of(
    st.sampled_from(["dz1", "dz2", "dW1", "dx", "doutput", "z1", "foo", "ds"]).map(
        lambda n: ast.Name(n, ast.Store())),
    st.builds(lambda n, i: ast.Subscript(ast.Name(n, ast.Load()), i, ast.Store()),
              st.sampled_from(["ds", "dz1", "dW1"]), expressions),
)


def assignment(expr_strategy):
    return st.one_of(
        st.builds(lambda t, v: ast.Assign([t], v), targets, expr_strategy),
        st.builds(lambda t, op, v: ast.AugAssign(t, op, v), targets,
                  st.sampled_from([ast.Add(), ast.Sub(), ast.Mult()]), expr_strategy),
    )


def loops(body):
    rng = st.builds(lambda args: ast.Call(ast.Name("range", ast.Load()), args, []),
                    st.lists(st.one_of(names, constants, expressions), min_size=1, max_size=3))
    it = st.one_of(rng, rng.map(lambda r: ast.Call(ast.Name("reversed", ast.Load()), [r], [])),
                   expressions)
    return st.builds(lambda var, i, b: ast.For(ast.Name(var, ast.Store()), i, b, []),
                     st.sampled_from(["t", "i", "x", "N"]), it, st.lists(body, min_size=1,
                                                                         max_size=3))


statements = st.recursive(assignment(expressions), loops, max_leaves=6)


@FUZZ
@given(st.lists(statements, min_size=1, max_size=6))
def test_random_syntax_trees(body):
    module = ast.fix_missing_locations(ast.Module(body, []))
    try:
        text = ast.unparse(module)
    except Exception:  # noqa: BLE001 - some random trees cannot be printed; nothing to test
        return
    check(text)


# --- scalar expressions -----------------------------------------------------------------


def check_expression(text: str) -> None:
    try:
        parse_scalar_expression(text, ["x", "y"])
    except ExpressionFormatError as e:
        assert e.message and e.col >= 0
        e.render(text)


@FUZZ
@given(st.text(max_size=200))
def test_random_expression_text(text):
    check_expression(text)


@FUZZ
@given(expressions)
def test_random_expression_trees(tree):
    try:
        text = ast.unparse(ast.fix_missing_locations(ast.Expression(tree)))
    except Exception:  # noqa: BLE001
        return
    check_expression(text.replace("np.", "math.").replace("W1", "x").replace("z1", "y"))


# --- random programs in the accepted grammar: they must parse, then run or fail cleanly ---

VALUE_LEAVES = ["x", "W1", "W2", "z1", "z2", "b1", "dz1", "dz2", "dW1", "dx", "doutput", "N",
                "H", "0", "1", "2.5", "s[0]", "ds[T - 1]", "s[1][0:2]"]
UNARY = ["sigmoid", "tanh", "exp", "log", "sqrt", "abs", "diag", "ones_like", "zeros_like",
         "np.exp", "numpy.tanh", "np.sum"]
INDEXES = ["[0]", "[0:2]", "[:, 1:H]", "[-1, :]", "[1:N, ::2]", "[N - 1]", "[:, H // 2:]"]


def grammar(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "/", "@"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, st.sampled_from(["2", "3", "-1", "0.5", "4"])).map(
            lambda t: f"({t[0]}) ** {t[1]}"),
        children.map(lambda a: f"-({a})"),
        children.map(lambda a: f"({a}).T"),
        st.tuples(children, st.sampled_from([">", ">=", "<", "<="]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(UNARY), children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(children, st.sampled_from(["", ", axis=0", ", axis=1", ", 1"])).map(
            lambda t: f"sum({t[0]}{t[1]})"),
        st.tuples(st.sampled_from(["outer", "maximum", "np.maximum"]), children, children).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(children, children, children).map(lambda t: f"where({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(children, st.sampled_from(INDEXES)).map(lambda t: f"({t[0]}){t[1]}"),
    )


valid_expressions = st.recursive(st.sampled_from(VALUE_LEAVES), grammar, max_leaves=8)
valid_targets = st.sampled_from(["dz1", "dz2", "dW1", "dx", "ds[1]", "dW1[:, 0:2]", "dx[0]",
                                 "ds[T - 1][:, 1:]"])
valid_lines = st.tuples(valid_targets, st.sampled_from(["=", "+=", "-="]), valid_expressions).map(
    lambda t: f"{t[0]} {t[1]} {t[2]}")
loop_lines = st.tuples(st.sampled_from(["range(T)", "reversed(range(1, T))", "range(0, T, 2)"]),
                       st.lists(valid_lines, min_size=1, max_size=3),
                       st.sampled_from(["ds[t]", "ds[t][:, 0:2]"]), valid_expressions).map(
    lambda t: f"for t in {t[0]}:\n" + "".join(f"    {b}\n" for b in t[1])
    + f"    {t[2]} += {t[3].replace('s[0]', 's[t]')}")


@FUZZ
@given(st.lists(st.one_of(valid_lines, loop_lines), min_size=1, max_size=5), st.booleans())
def test_random_valid_programs(lines, numbered):
    text = "\n".join(f"{i}. {line}" if numbered and "\n" not in line else line
                     for i, line in enumerate(lines, start=1))
    program = parse_equations(text, CTX)  # the grammar is accepted: no AnswerFormatError
    for on_error in (None, lambda e: None):
        try:
            out = run_equations(program, VALUES, GRADS, on_error=on_error)
        except AnswerRuntimeError as e:
            assert e.line >= 1 and e.message
            continue
        for name, v in out.items():
            for a in v if isinstance(v, list) else [v]:
                assert a.dtype == np.float64 and a.ndim == 2, name
