"""Scalar expression answers: the allowlist parser and the equivalence judge."""

from __future__ import annotations

import time

import pytest
import sympy

from server.engine import symbolic
from server.engine.symbolic import (
    ExpressionFormatError,
    expressions_equivalent,
    judge_expression,
    parse_scalar_expression,
)

X = sympy.Symbol("x")
Y = sympy.Symbol("y")


def parse(text, symbols=("x",), **kw):
    return parse_scalar_expression(text, symbols, **kw)


@pytest.mark.parametrize("text,expected", [
    ("2*x*cos(x**2)", 2 * X * sympy.cos(X**2)),
    ("cos(x^2)*x*2", 2 * X * sympy.cos(X**2)),
    ("x^2^3", X**8),  # ^ is ** and keeps its right associativity: x^(2^3)
    ("-x + +3", 3 - X),
    ("np.exp(x) + math.log(x) + numpy.sqrt(x)", sympy.exp(X) + sympy.log(X) + sympy.sqrt(X)),
    ("sigmoid(x)", 1 / (1 + sympy.exp(-X))),
    ("tanh(x) + tan(x) + sin(x) + abs(x) + ln(x)",
     sympy.tanh(X) + sympy.tan(X) + sympy.sin(X) + sympy.Abs(X) + sympy.log(X)),
    ("e^x * pi + np.pi - math.e", sympy.E**X * sympy.pi + sympy.pi - sympy.E),
    ("0.1 * x", X / 10),
    ("1e-3 * x", X / 1000),
    ("  x +\n 1", X + 1),
])
def test_parses_into_sympy(text, expected):
    assert sympy.simplify(parse(text) - expected) == 0
    assert parse(text) == expected


def test_two_symbols_and_plain_symbols():
    expr = parse("x*y + y^2", ("x", "y"))
    assert expr == X * Y + Y**2
    assert expr.free_symbols == {X, Y}


@pytest.mark.parametrize("text,col,words", [
    ("__import__('os')", 0, "unknown function '__import__'"),
    ("x.__class__", 0, "attribute .__class__ is not allowed"),
    ("np.linalg.norm(x)", 0, "only calls to"),
    ("'abc'", 0, "strings are not allowed"),
    ("x + 'abc'", 4, "strings are not allowed"),
    ("y + x", 0, "unknown name 'y'; known: x"),
    ("x + xx", 4, "unknown name 'xx' (did you mean x?)"),
    ("2x", 0, "write 2*x, not 2x"),
    ("3 + 2.5x", 4, "write 2.5*x, not 2.5x"),
    ("x y", 2, "write x*y, not x y"),
    ("2(x+1)", 0, "write 2*(x+1), not 2(x+1)"),
    ("x(x+1)", 0, "write x*(...), not x(...)"),
    ("(x+1)(x-1)", 0, "implicit multiplication"),
    ("sinn(x)", 0, "unknown function 'sinn' (did you mean sin?)"),
    ("sin", 0, "sin is a function"),
    ("sin(x, x)", 0, "takes exactly one argument"),
    ("lambda: 3", 0, "lambdas are not allowed"),
    ("x if x else 1", 0, "not allowed"),
    ("[x]", 0, "List is not allowed"),
    ("x @ x", 2, "operator @ is not allowed"),
    ("(x + 1) % 2", 8, "operator % is not allowed"),
    ("x ** 1000", 5, "exponent must be at most 100"),
    ("x ^ 1000", 4, "exponent must be at most 100"),
    ("9 ** 9 ** 9", 5, "exponent must be at most 100"),
    ("((10^100)^100)^100", 1, "unreasonably large"),
    # near 1, but exact: 10**8 digits would take sympy minutes
    ("(((999999999999/999999999998)^100)^100)^100", 2, "too many digits"),
    ("(1.000000000001^100)^100", 1, "too many digits"),
    ("10000000000000 * x", 0, "unreasonably large"),
    ("1/0", 0, "undefined"),
    ("x +", 0, "syntax error"),
    ("", 0, "empty"),
    ("True", 0, "not allowed"),
    ("x > 0", 0, "comparisons"),
])
def test_refusals(text, col, words):
    with pytest.raises(ExpressionFormatError) as info:
        parse(text)
    assert words in info.value.message
    assert info.value.col == col, info.value.message


def test_size_limits_and_rendering():
    with pytest.raises(ExpressionFormatError, match="too long"):
        parse("x+" * 600 + "x")
    with pytest.raises(ExpressionFormatError, match="nested too deeply|too complex"):
        parse("-" * 60 + "x")
    with pytest.raises(ExpressionFormatError, match="nested too deeply|too complex"):
        parse("sin(" * 60 + "x" + ")" * 60)
    with pytest.raises(ExpressionFormatError) as info:
        parse("1 + 2^y", what="spec")
    assert info.value.render("1 + 2^y") == (
        "col 7: unknown name 'y'; known: x\n"
        "    1 + 2^y\n"
        "          ^")


def test_spec_messages_are_generic():
    with pytest.raises(ExpressionFormatError) as info:
        parse("", what="spec")
    assert info.value.message == "the spec is empty"


# --- equivalence -------------------------------------------------------------------------


@pytest.mark.parametrize("answer,reference", [
    ("2*x*cos(x**2)", "cos(x^2)*x*2"),
    ("sigmoid(x)*(1-sigmoid(x))", "exp(-x)/(1+exp(-x))^2"),
    ("1 - tanh(x)^2", "4/(exp(x) + exp(-x))^2"),
    ("log(x*x)", "2*log(x)"),  # compared where the reference is defined (x > 0)
    ("sqrt(x^2)", "abs(x)"),
    ("(x+1)^2", "x^2 + 2*x + 1"),
    ("0.5*x", "x/2"),
    ("exp(x)^3 - exp(3*x) + x", "x"),  # cancels in floating point: looked at with 30 digits
])
def test_equivalent(answer, reference):
    judgement = judge_expression(parse(answer), parse(reference), ["x"])
    assert judgement.equal, judgement.message
    assert judgement.compared == 8


@pytest.mark.parametrize("answer,reference", [
    ("2*x*sin(x**2)", "2*x*cos(x**2)"),
    ("x*cos(x**2)", "2*x*cos(x**2)"),
    ("x^2 + 1e-3", "x^2"),
    ("sigmoid(x)", "sigmoid(x)*(1-sigmoid(x))"),
])
def test_a_wrong_answer_is_told_that_it_differs_not_what_the_value_should_be(answer, reference):
    a, r = parse(answer), parse(reference)
    judgement = judge_expression(a, r, ["x"], seed=5)
    assert (judgement.verdict, judgement.compared) == ("differs", 8)
    assert judgement.message.startswith("the answer differs from the derivative at ")
    assert "expected" not in judgement.message and "x=" not in judgement.message
    # the same answer with other seeds is compared elsewhere (per submission)
    points = [next(symbolic.sample_points(["x"], symbolic.random.Random(seed)))
              for seed in range(3)]
    assert len({p["x"] for p in points}) == 3


def test_a_wrong_sign_everywhere_is_named():
    judgement = judge_expression(parse("-2*x*cos(x**2)"), parse("2*x*cos(x**2)"), ["x"])
    assert judgement.verdict == "sign"


def test_points_are_sampled_on_both_sides_of_zero_where_L_is_defined():
    points = symbolic.sample_points(["x"], symbolic.random.Random(1))
    xs = [next(points)["x"] for _ in range(40)]
    assert min(xs) < -0.3 and max(xs) > 0.3 and all(0.3 <= abs(v) <= 2.0 for v in xs)
    # 2/sqrt(x**2) is 2/x only for x > 0 (issue 9): caught, and said so
    judgement = judge_expression(parse("2/sqrt(x**2)"), parse("2/x"), ["x"],
                                 function=parse("2*log(sqrt(x**2))"))
    assert judgement.verdict == "sign_for_negative"
    assert (
        "wrong sign for x < 0" in judgement.message and "not assumed positive" in judgement.message
    )
    # where L is defined for x > 0 only, negative points are not used
    judgement = judge_expression(parse("2/sqrt(x**2)"), parse("2/x"), ["x"],
                                 function=parse("2*log(x)"))
    assert judgement.equal and judgement.compared == 8
    # a spec's domain inside x > 0 makes x positive
    judgement = judge_expression(parse("2/sqrt(x**2)"), parse("2/x"), ["x"], domain=(0.5, 3))
    assert judgement.equal


def test_a_wrong_answer_equal_to_the_reference_at_one_point_is_caught():
    reference = parse("2*x*cos(x**2)")
    for seed in range(5):
        first = next(symbolic.sample_points(["x"], symbolic.random.Random(seed)))["x"]
        # equal to the reference at the first sample point, and nowhere else near it
        answer = reference + parse(f"(x - ({first}))")
        judgement = judge_expression(answer, reference, ["x"], seed=seed)
        assert judgement.verdict == "differs", judgement.message
        assert judgement.message.startswith("the answer differs from the derivative at 7 of the 8")


def test_points_near_a_singularity_of_the_reference_are_skipped():
    # tan has a pole at pi/2, inside the sampled range; 1/x**2 + tan(x) - tan(x) is
    # the same function, evaluated differently
    judgement = judge_expression(parse("1/cos(x)^2"), parse("1 + tan(x)^2"), ["x"], points=30)
    assert judgement.equal and judgement.compared == 30


@pytest.mark.parametrize("answer", [
    "exp(exp(exp(exp(exp(x)))))",  # issue 8: sympy's evalf never came back from this
    "exp(exp(exp(x)))",
    "exp(10^12 * x)",
    "x^100 * exp(100*x) * exp(100*x)",
    "exp(x)^100 * exp(x)^100 * exp(x)^100",
])
def test_absurd_magnitudes_are_too_large_to_evaluate(answer):
    judgement = judge_expression(parse(answer), parse("2*x*cos(x**2)"), ["x"])
    assert judgement.verdict == "too_large"
    assert judgement.message.startswith("too large to evaluate: the answer exceeds 1e+100 at x=")


def test_an_answer_undefined_where_the_reference_is_defined_is_wrong():
    judgement = judge_expression(parse("log(x - 5)"), parse("x"), ["x"])
    assert judgement.verdict == "undefined" and "undefined at x=" in judgement.message
    # x**x**x**x is not real for negative x, where the reference is
    judgement = judge_expression(parse("x**x**x**x"), parse("x"), ["x"])
    assert judgement.verdict == "undefined"


def test_evaluation_bounds_every_intermediate_value():
    evaluate = symbolic.evaluate
    assert evaluate(parse("exp(exp(exp(exp(exp(x)))))"), {"x": 1.7}).status == "too_large"
    assert evaluate(parse("exp(300)*exp(-300)"), {"x": 1}).status == "ok"  # sympy: exp(0)
    assert evaluate(parse("exp(x)^100"), {"x": 1.0}).status == "ok"
    assert evaluate(parse("exp(x)^100"), {"x": 2.5}).status == "too_large"  # e**250
    assert evaluate(parse("x**x**x**x"), {"x": 2.0}).value == 2.0**16
    assert evaluate(parse("1/(x-1)"), {"x": 1.0}).status == "undefined"
    assert evaluate(parse("log(x)"), {"x": -1.0}).status == "undefined"  # not real
    assert evaluate(parse("sqrt(x)"), {"x": 0.0}).status == "ok"
    value = evaluate(parse("abs(x)*x"), {"x": -2.0})
    assert (value.status, value.value, value.peak) == ("ok", -4.0, 4.0)


def test_symbols_are_matched_by_name():
    # a reference built elsewhere with assumptions still matches a parsed answer
    xr = sympy.Symbol("x", real=True)
    ok, why = expressions_equivalent(parse("2*x"), 2 * xr, ["x"])
    assert ok, why
    ok, why = expressions_equivalent(parse("x*y", ("x", "y")), parse("y*x", ("x", "y")),
                                     ["x", "y"])
    assert ok, why
    ok, _ = expressions_equivalent(parse("x", ("x", "y")), parse("y", ("x", "y")), ["x", "y"])
    assert not ok


def test_rtol_is_respected():
    ok, _ = expressions_equivalent(parse("x*(1 + 1e-9)"), parse("x"), ["x"])
    assert ok
    ok, _ = expressions_equivalent(parse("x*(1 + 1e-4)"), parse("x"), ["x"])
    assert not ok
    ok, _ = expressions_equivalent(parse("x*(1 + 1e-4)"), parse("x"), ["x"], rtol=1e-3)
    assert ok


def test_simplify_decides_only_when_too_few_points_can_be_compared(monkeypatch):
    calls = []
    real_simplify = sympy.simplify

    def spy(expr):
        calls.append(expr)
        return real_simplify(expr)

    monkeypatch.setattr(symbolic.sympy, "simplify", spy)
    assert judge_expression(parse("x + x"), parse("2*x"), ["x"]).equal
    assert calls == []
    # the reference is real nowhere in the sampled range: simplify decides
    judgement = judge_expression(parse("sqrt(-2 - x^2)*2"), parse("2*sqrt(-x^2 - 2)"), ["x"])
    assert judgement.equal and judgement.compared == 0 and len(calls) == 1


def test_slow_simplify_is_abandoned(monkeypatch):
    def slow_simplify(expr):
        time.sleep(0.5)
        return expr

    monkeypatch.setattr(symbolic.sympy, "simplify", slow_simplify)
    judgement = judge_expression(parse("sqrt(-2 - x^2)"), parse("sqrt(-x^2 - 2)"), ["x"],
                                 time_limit_s=0.05)
    assert judgement.verdict == "unknown" and "timed out" in judgement.message
