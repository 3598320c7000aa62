"""Every operation of the table (server/engine/ops.py): its rule text parses in the
answer language and computes its vector-Jacobian product, and the VJP agrees
with finite differences; and a new operation added by following docs/design.md
("How to add an operation") is compiled, drawn, verified, solved and graded."""

from __future__ import annotations

import numpy as np
import pytest

from server.engine import ops
from server.engine.equations import AnswerContext, parse_equations, run_equations
from server.engine.ops import OPS, Elementwise, Operation

SHAPES = {"matmul": [(3, 4), (4, 2)], "softmax": [(4, 1)], "slice": [(5, 3)],
          "softmax_axis1": [(3, 4)]}
REGION = ((1, 4), (0, 2))  # rows 1:4, columns 0:2 of a slice
REGION_TEXT = ("1:4", "0:2")


def operands(name: str, rng) -> list:
    op = OPS[name]
    shapes = SHAPES.get(name, [(3, 2)] * op.arity)
    args = [rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape) for shape in shapes]
    if op.positive_domain or op.kink is not None:
        args = [np.abs(a) + 0.2 for a in args]  # away from a kink, inside the domain
    if op.constants == "second":  # a / 4
        args[1] = 4.0
    return args


def region(name: str):
    return REGION if OPS[name].syntax == "slice" else None


def region_text(name: str, args) -> tuple[str, str]:
    """A slice's bounds, or the operand's shape for an operation whose rule reads it."""
    return tuple(str(n) for n in args[0].shape) if OPS[name].shape_text else REGION_TEXT


@pytest.mark.parametrize("name", sorted(OPS))
def test_the_vjp_agrees_with_finite_differences(name):
    rng = np.random.default_rng(7)
    args = operands(name, rng)
    out = ops.forward(name, args, region(name))
    g = rng.normal(size=np.shape(out))
    h = 1e-6
    for i, a in enumerate(args):
        if not isinstance(a, np.ndarray):
            continue  # a constant has no gradient
        grad = ops.vjp(name, i, g, args, out, region(name))
        numeric = np.zeros_like(a)
        for index in np.ndindex(a.shape):
            plus, minus = [x.copy() if isinstance(x, np.ndarray) else x for x in args], \
                [x.copy() if isinstance(x, np.ndarray) else x for x in args]
            plus[i][index] += h
            minus[i][index] -= h
            numeric[index] = (np.sum(g * ops.forward(name, plus, region(name)))
                              - np.sum(g * ops.forward(name, minus, region(name)))) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7, err_msg=f"{name}[{i}]")


@pytest.mark.parametrize("layout", ["numerator", "denominator"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_the_rule_text_parses_and_computes_the_vjp(name, layout):
    rng = np.random.default_rng(3)
    args = operands(name, rng)
    out = ops.forward(name, args, region(name))
    g = rng.normal(size=np.shape(out))
    names = [f"a{i}" if isinstance(a, np.ndarray) else "4" for i, a in enumerate(args)]
    flip = (lambda shape: shape[::-1]) if layout == "numerator" else (lambda shape: shape)
    layout_value = (lambda v: v.T) if layout == "numerator" else (lambda v: v)
    forward = {n: a.shape for n, a in zip(names, args) if isinstance(a, np.ndarray)}
    forward["z"] = out.shape
    gradients = {"d" + n: flip(shape) for n, shape in forward.items()}
    ctx = AnswerContext(forward=forward, gradients=gradients, readonly=frozenset({"dz"}))
    values = {n: a for n, a in zip(names, args) if isinstance(a, np.ndarray)} | {"z": out}
    for i, arg_name in enumerate(names):
        if arg_name == "4":
            continue
        suffix, rhs = ops.rule_text(name, i, "dz", names, "z", layout,
                                     region_text(name, args))
        program = parse_equations(f"d{arg_name}{suffix} = {rhs}", ctx)
        grads = {key: np.zeros(shape) for key, shape in gradients.items()}
        grads["dz"] = layout_value(g)
        result = run_equations(program, values, grads)
        expected = layout_value(ops.vjp(name, i, g, args, out, region(name)))
        np.testing.assert_allclose(result["d" + arg_name], expected, rtol=1e-12, atol=1e-12,
                                   err_msg=f"{name}[{i}] {layout}: d{arg_name}{suffix} = {rhs}")


def test_every_operation_has_mathml():
    import sympy

    for name, op in OPS.items():
        args = [sympy.MatrixSymbol(f"a{i}", sympy.Symbol("N"), sympy.Symbol("N"))
                for i in range(op.arity)]
        if op.constants == "second":
            args[1] = sympy.Integer(4)
        assert "<m" in op.mathml(args, REGION_TEXT), name


# --- a new operation, added as docs/design.md says -------------------------------------

SPEC = '''
id = "toy-cube"
title = "Cube"
answer = "equations"
given = "y"
ask = ["x", "W"]
forward = """
z = W @ x
y = cube(z)
"""
[dims]
N = [2, 4]
M = [3, 5]
[vars]
x = { shape = ["N", 1], role = "input" }
W = { shape = ["M", "N"], role = "param" }
'''


@pytest.fixture
def cube(monkeypatch):
    # The one record (here through the element-wise helper, as relu and tanh are):
    # forward, derivative, the derivative as answer-language text.
    fn = Elementwise("cube", lambda a: a**3, lambda a, z: 3.0 * a**2, "(3 * {a}**2)")
    monkeypatch.setitem(OPS, "cube", ops.elementwise_op(fn))
    return OPS["cube"]


def test_a_new_operation_is_compiled_drawn_solved_and_graded(cube):
    from server.engine.problem import draw, grade_answer, model_answer
    from server.engine.spec import parse_spec

    assert isinstance(cube, Operation)
    spec = parse_spec(SPEC, "toy-cube.toml")
    assert spec.program(()).items[1].op == "cube"
    inst = draw(spec, 1)  # the reference is checked against finite differences here
    answer = model_answer(spec, inst)
    assert "(3 * z**2)" in answer
    assert grade_answer(spec, inst, answer).score == 1.0
    wrong = answer.replace("(3 * z**2)", "(2 * z**2)")
    assert grade_answer(spec, inst, wrong).score < 1.0


def test_without_the_record_the_operation_is_unknown():
    from server.engine.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC, "toy-cube.toml")
    assert "unknown operation 'cube'" in str(caught.value)
