"""Issue 16: the operations a deep-learning course needs (reductions with an axis,
explicit broadcasting, division by an array, sqrt, max with its argmax mask, a row-wise
softmax, strided windows) in forward programs and in answers, and the course's problems:
each listed, its model answer right, and plausible wrong answers getting the intended
verdicts and messages. The torch.autograd cross-check on 50 seeds is in
test_torch_crosscheck.py, the operations' forward and VJP against finite differences
and torch in test_ops.py and test_torch_crosscheck.py."""

from __future__ import annotations

import numpy as np
import pytest

from server.engine.bank import load_bank
from server.engine.equations import (
    AnswerContext,
    AnswerFormatError,
    AnswerRuntimeError,
    parse_equations,
    run_equations,
)
from server.engine.grade import grade_equations
from server.engine.instance import draw_instance
from server.engine.problem import model_answer
from server.engine.spec import SpecError, parse_spec

BANK = load_bank()
COURSE = ("mlp-batch", "l2-regularised", "layernorm", "batchnorm-train", "attention-head",
          "conv1d-stride", "maxpool1d", "lstm-cell", "gru-cell")


def test_the_bank_lists_every_course_problem():
    assert set(COURSE) <= set(BANK)
    for pid in COURSE:
        assert BANK[pid].statement


# --------------------------------------------------------------------------- forward programs

SPEC = '''
id = "ops"
title = "ops"
answer = "equations"
given = "y"
ask = ["X"]
forward = """
{forward}
"""
[dims]
N = [2, 4]
B = [3, 5]
[vars]
X = {{ shape = ["N", "B"], role = "input" }}
D = {{ shape = ["N", "B"], role = "input" }}
o = {{ shape = ["N", 1], role = "const", dist = "ones" }}
'''


def compile_forward(forward: str):
    return parse_spec(SPEC.format(forward=forward), "ops.toml")


@pytest.mark.parametrize("line, op, shape", [
    ("y = sum(X, axis=0)", "sum_axis0", "1×B"),
    ("y = sum(X, axis=1)", "sum_axis1", "N×1"),
    ("y = mean(X, axis=0)", "mean_axis0", "1×B"),
    ("y = np.mean(X, axis=1)", "mean_axis1", "N×1"),
    ("y = mean(X)", "mean", "1×1"),
    ("y = max(X, axis=0)", "max_axis0", "1×B"),
    ("y = max(X, axis=1)", "max_axis1", "N×1"),
    ("y = softmax(X, axis=1)", "softmax_axis1", "N×B"),
    ("y = X / D", "div", "N×B"),
    ("y = 1 / X", "div", "N×B"),
    ("y = sqrt(X)", "sqrt", "N×B"),
])
def test_the_new_operations_compile_with_their_shapes(line, op, shape):
    from server.engine.dimexpr import shape_text

    program = compile_forward(line).program(())
    step = program.items[0]
    assert step.op == op
    assert shape_text(program.shapes["y"]) == shape


@pytest.mark.parametrize("line, message", [
    ("y = max(X)", "max is written max(X, axis=0) or max(X, axis=1): say which axis"),
    ("y = sum(X, axis=2)", "sum is written sum(X) or sum(X, axis=0) or sum(X, axis=1)"),
    ("y = sum(X, keepdims=True)", "sum is written sum(X)"),
    ("y = softmax(X, axis=0)", "softmax is written softmax(X) or softmax(X, axis=1)"),
    ("y = mean(X, axis=True)", "axis=0 reduces down the columns"),
    # no silent broadcasting: a column and a matrix are not added, nor divided
    ("z = sum(X, axis=1)\ny = X - z", "element-wise - needs equal shapes"),
    ("z = sum(X, axis=0)\ny = X / z", "element-wise / needs equal shapes"),
    ("y = X + o", "element-wise + needs equal shapes"),
])
def test_operations_are_as_strict_as_before(line, message):
    with pytest.raises(SpecError) as caught:
        compile_forward(line)
    assert message in str(caught.value)


def test_a_bias_is_broadcast_explicitly_with_a_ones_constant():
    spec = BANK["mlp-batch"]
    inst = draw_instance(spec, 1)
    assert (inst.values["ones"] == 1.0).all() and inst.values["ones"].shape == (1, inst.dims["B"])
    answer = model_answer(spec, inst)
    assert "db1 = dc1 @ ones.T" in answer and "ones_like(per) / B" in answer
    # the answer language's sum with an axis is the same gradient
    same = answer.replace("db1 = dc1 @ ones.T", "db1 = sum(dc1, axis=1)")
    assert grade_equations(spec, inst, same).score == 1.0


def test_a_ones_constant_is_a_row_or_a_column():
    bad = SPEC.replace('dist = "ones" }}', 'dist = "ones" }}\nP = {{ shape = ["N", "B"], '
                       'role = "const", dist = "ones" }}')
    with pytest.raises(SpecError) as caught:
        parse_spec(bad.format(forward="y = X + D"), "ops.toml")
    assert "a ones variable (to broadcast with @) must be a row or a column" in str(caught.value)


def test_strided_windows_are_scans_with_overlapping_slices():
    spec = BANK["conv1d-stride"]
    program = spec.program(())
    loop = program.items[0]
    assert loop.body[0].region_text == ("2 * t:2 * t + K", ":")
    inst = draw_instance(spec, 4)
    answer = model_answer(spec, inst)
    assert "dX[:, 2 * t:2 * t + K] += dx[t]" in answer
    assert grade_equations(spec, inst, answer).score == 1.0


@pytest.mark.parametrize("rhs, expected", [
    ("ones_like(X) @ diag(mean(X, axis=0))", lambda x: np.tile(x.mean(axis=0), (3, 1))),
    ("diag(max(X, axis=1)) @ ones_like(X)", lambda x: np.tile(x.max(axis=1, keepdims=True),
                                                               (1, 4))),
    ("X * sum(X) / mean(X) / 12", lambda x: x),
    ("np.max(X) * ones_like(X)", lambda x: np.full((3, 4), x.max())),
])
def test_the_answer_language_has_the_reductions(rhs, expected):
    x = np.random.default_rng(1).uniform(0.5, 1.5, (3, 4))
    ctx = AnswerContext(forward={"X": (3, 4)}, gradients={"dX": (3, 4)})
    result = run_equations(parse_equations(f"dX = {rhs}", ctx), {"X": x},
                           {"dX": np.zeros((3, 4))})
    np.testing.assert_allclose(result["dX"], expected(x), rtol=1e-12)


@pytest.mark.parametrize("rhs, message", [
    ("X * mean(X, axis=0)", "element-wise * needs equal shapes"),
    ("max(X, axis=2) * X", "axis must be 0 (max down the columns) or 1 (max along the rows)"),
    ("mean(X, 0, axis=1)", "mean() got the axis twice"),
])
def test_the_answer_language_reductions_are_strict(rhs, message):
    ctx = AnswerContext(forward={"X": (3, 4)}, gradients={"dX": (3, 4)})
    with pytest.raises((AnswerFormatError, AnswerRuntimeError)) as caught:
        program = parse_equations(f"dX = {rhs}", ctx)
        run_equations(program, {"X": np.ones((3, 4))}, {"dX": np.zeros((3, 4))})
    assert message in str(caught.value) or any(
        message in e.message for e in getattr(caught.value, "errors", ()))


def test_answers_do_not_broadcast_either():
    spec = BANK["layernorm"]
    inst = draw_instance(spec, 3)
    answer = model_answer(spec, inst).replace(
        "dX += ones_like(X) @ diag(dmu) / N", "dX += dmu / N")
    result = grade_equations(spec, inst, answer)
    line = next(e for e in result.equations if e.target == "dX" and e.verdict != "correct")
    assert line.verdict == "wrong_shape"
    assert "cannot add dmu / N (1×" in line.message


# --------------------------------------------------------------------------- wrong answers

# (problem, the model line's text, the wrong text, the first wrong line's verdict and a
# part of its message, the verdict on one asked gradient). Seed 3 throughout.
WRONG = [
    # mlp-batch (tanh on seed 3)
    ("mlp-batch", "db1 = dc1 @ ones.T", "db1 = dc1", "wrong_shape",
     "db1 is not summed over the batch: 'c1 = b1 @ ones' copies b1 to every sample, so "
     "db1 = dc1 @ ones.T", "db1", "wrong_shape"),
    ("mlp-batch", "db2 = dc2 @ ones.T", "db2 = sum(dc2, axis=0)", "wrong_shape",
     "db2 is summed over the wrong axis (axis=0)", "db2", "wrong_shape"),
    ("mlp-batch", "ones_like(per) / B", "ones_like(per)", "incorrect",
     "dper is missing the mean's 1/B", "dW1", "incorrect"),
    ("mlp-batch", "dW1 = dz1 @ X.T", "dW1 = X @ dz1.T", "transposed", "transpose", "dW1",
     "transposed"),
    ("mlp-batch", "dz2 = dh * (1 - h**2)", "dz2 = dh * (1 - z2**2)", "incorrect",
     "derivative at the wrong variable: for 'h = tanh(z2)' the derivative is (1 - h**2), "
     "not (1 - z2**2)", "dW1", "incorrect"),
    ("mlp-batch", "dX = W1.T @ dz1", "dX = -W1.T @ dz1", "sign", "wrong sign", "dX", "sign"),
    # l2-regularised
    ("l2-regularised", "dW += dz @ X.T", "dW = dz @ X.T", "missing_accumulation", "use '+='",
     "dW", "missing_accumulation"),
    ("l2-regularised", " / (K * B)", "", "incorrect", "ds is missing the mean's 1/K * B",
     "db", "incorrect"),
    ("l2-regularised", "dr = 0.1 * dreg", "dr = dreg", "incorrect",
     "dr is missing the factor 0.1 of 'reg = 0.1 * r'", "dW", "incorrect"),
    ("l2-regularised", "dW = dw2 * (2 * W)", "dW = dw2 * W", "incorrect", "dW", "dW",
     "incorrect"),
    ("l2-regularised", "db = dc @ ones.T", "db = dc", "wrong_shape",
     "db is not summed over the batch", "db", "wrong_shape"),
    ("l2-regularised", "db = dc @ ones.T", "db = sum(dc, axis=0)", "wrong_shape",
     "db is summed over the wrong axis (axis=0)", "db", "wrong_shape"),
    ("l2-regularised", "dX = W.T @ dz", "dX = W @ dz.T", "wrong_shape",
     "@ needs the inner dimensions to agree", "dX", "incorrect"),
    ("l2-regularised", "dX = W.T @ dz", "dX = -W.T @ dz", "sign", "wrong sign", "dX", "sign"),
    # layernorm
    ("layernorm", "dX += ones_like(X) @ diag(dmu) / N", "dX += ones_like(X) @ diag(dmu)",
     "incorrect", "dX is missing the mean's 1/N", "dX", "incorrect"),
    ("layernorm", "dxc += dsq", "dxc = dsq", "missing_accumulation", "use '+='", "dX",
     "incorrect"),
    ("layernorm", "dX += ones_like(X) @ diag(dmu) / N", "", "missing_accumulation",
     "after this line, add the contribution of dmu to dX through 'mu = mean(X, axis=0)': "
     "dX += ones_like(X) @ diag(dmu) / N", "dX", "missing_accumulation"),
    ("layernorm", "dS = -dxh * xh / S", "dS = dxh * xh / S", "sign", "wrong sign", "dX",
     "incorrect"),
    ("layernorm", "dg = dG @ oB.T", "dg = dG", "wrong_shape",
     "dg is not summed over the batch: 'G = g @ oB' copies g", "dg", "wrong_shape"),
    ("layernorm", "db = dBb @ oB.T", "db = oB @ dBb.T", "transposed", "transpose", "db",
     "transposed"),
    # batchnorm-train
    ("batchnorm-train", "dX += diag(dmu) @ ones_like(X) / B",
     "dX += diag(dmu) @ ones_like(X)", "incorrect", "dX is missing the mean's 1/B", "dX",
     "incorrect"),
    ("batchnorm-train", "dg = dG @ oB.T", "dg = dG", "wrong_shape",
     "dg is not summed over the batch", "dg", "wrong_shape"),
    ("batchnorm-train", "dsq = diag(dvar) @ ones_like(sq) / B",
     "dsq = ones_like(sq) @ diag(dvar) / B", "wrong_shape",
     "@ needs the inner dimensions to agree", "dX", "incorrect"),
    ("batchnorm-train", "dsd = dS @ oB.T", "dsd = dS", "wrong_shape", "should be", "dX",
     "incorrect"),
    ("batchnorm-train", "dX = dxc", "dX = -dxc", "sign", "wrong sign", "dX", "incorrect"),
    ("batchnorm-train", "dve = dsd * (0.5 / sd)", "dve = dsd * (0.5 / ve)", "incorrect",
     "derivative at the wrong variable: for 'sd = sqrt(ve)'", "dX", "incorrect"),
    # attention-head
    ("attention-head", "dS = 0.5 * dSs", "dS = dSs", "incorrect",
     "dS is missing the factor 0.5 of 'Ss = 0.5 * S': a constant scale (such as attention's "
     "1/sqrt(d))", "dWq", "incorrect"),
    ("attention-head", "dSs = A * (dA - (dA * A) @ ones_like(A.T @ A))", "dSs = A * dA",
     "incorrect", "dSs leaves out the - a a^T part of the softmax Jacobian", "dWk",
     "incorrect"),
    ("attention-head", "dSs = A * (dA - (dA * A) @ ones_like(A.T @ A))",
     "dSs = A * (1 - A) * dA", "incorrect",
     "dSs uses only the diagonal of the softmax Jacobian", "dWk", "incorrect"),
    ("attention-head", "dX += dQ @ Wq.T", "dX = dQ @ Wq.T", "missing_accumulation",
     "use '+='", "dX", "missing_accumulation"),
    ("attention-head", "dWq = X.T @ dQ", "dWq = dQ.T @ X", "transposed", "transpose", "dWq",
     "transposed"),
    ("attention-head", "dV = A.T @ dO", "dV = A @ dO", "incorrect", "dV", "dWv", "incorrect"),
    ("attention-head", "dKt = dKT.T", "dKt = dKT", "transposed", "transpose", "dWk",
     "incorrect"),
    # conv1d-stride
    ("conv1d-stride", "dX[:, 2 * t:2 * t + K] += dx[t]", "dX[:, 2 * t:2 * t + K] = dx[t]",
     "missing_accumulation", "the windows overlap, so use '+='", "dX",
     "missing_accumulation"),
    ("conv1d-stride", "db += da[t]", "db = da[t]", "missing_accumulation", "use '+='", "db",
     "missing_accumulation"),
    ("conv1d-stride", "(a[t] > 0)", "(z[t] > 0)", "incorrect", "da", "dW", "incorrect"),
    ("conv1d-stride", "dW += x[t] @ dz[t]", "dW += dz[t] @ x[t]", "wrong_shape",
     "@ needs the inner dimensions to agree", "dW", "incorrect"),
    ("conv1d-stride", "dx[t] = dz[t] @ W", "dx[t] = -dz[t] @ W", "sign", "wrong sign", "dX",
     "sign"),
    # maxpool1d
    ("maxpool1d", "(x[t] >= diag(m[t]) @ ones_like(x[t])).T", "ones_like(x[t]).T",
     "incorrect", "dx sends the gradient of 'm[t] = max(x[t], axis=1)' to every element; a "
     "maximum passes it only to the largest entry", "dX", "incorrect"),
    ("maxpool1d", "dX[2 * t:2 * t + K, :] += dx[t]", "dX[2 * t:2 * t + K, :] = dx[t]",
     "missing_accumulation", "the windows overlap, so use '+='", "dX",
     "missing_accumulation"),
    ("maxpool1d", "dW += m[t] @ dO[t]", "dW = m[t] @ dO[t]", "missing_accumulation",
     "use '+='", "dW", "missing_accumulation"),
    ("maxpool1d", "x[t] >= diag", "x[t] <= diag", "incorrect", "dx", "dX", "incorrect"),
    ("maxpool1d", "dm[t] = dO[t] @ W", "dm[t] = -dO[t] @ W", "sign", "wrong sign", "dX",
     "sign"),
    # lstm-cell
    ("lstm-cell", "do4 = do * (o * (1 - o)).T", "do4 = do * (o4 * (1 - o4)).T", "incorrect",
     "the derivative is (o * (1 - o)), not (o4 * (1 - o4))", "dWo", "incorrect"),
    ("lstm-cell", "dc = dtc * (1 - tc**2).T", "dc = dtc * (1 - c**2).T", "incorrect",
     "for 'tc = tanh(c)' the derivative is (1 - tc**2), not (1 - c**2)", "dWf", "incorrect"),
    ("lstm-cell", "dh0 += do2 @ Uo", "dh0 = do2 @ Uo", "missing_accumulation", "use '+='",
     "dh0", "missing_accumulation"),
    ("lstm-cell", "dc0 = dc1 * f.T", "dc0 = dc1 * f", "wrong_shape",
     "element-wise * needs equal shapes", "dc0", "incorrect"),
    ("lstm-cell", "dx += df1 @ Wf", "", "missing_accumulation",
     "after this line, add the contribution of df1 to dx through 'f1 = Wf @ x': "
     "dx += df1 @ Wf", "dx", "missing_accumulation"),
    ("lstm-cell", "dtc = dh * o.T", "dtc = -dh * o.T", "sign", "wrong sign", "dWf", "sign"),
    # gru-cell
    ("gru-cell", "dz += -du", "dz += du", "sign", "wrong sign", "dWz", "incorrect"),
    ("gru-cell", "dh0 += drh * r.T", "", "missing_accumulation",
     "after this line, add the contribution of drh to dh0 through 'rh = r * h0'", "dh0",
     "missing_accumulation"),
    ("gru-cell", "dn4 = dn * (1 - n**2).T", "dn4 = dn * (1 - n4**2).T", "incorrect",
     "derivative at the wrong variable", "dWn", "incorrect"),
    ("gru-cell", "dz += -du", "dz = -du", "missing_accumulation", "use '+='", "dWz",
     "incorrect"),
    ("gru-cell", "dUn = rh @ dn2", "dUn = h0 @ dn2", "incorrect", "dUn", "dUn", "incorrect"),
]


def test_every_course_problem_has_five_wrong_answers():
    for pid in COURSE:
        assert sum(case[0] == pid for case in WRONG) >= 5, pid


@pytest.mark.parametrize("pid, old, new, verdict, message, gradient, final", WRONG,
                         ids=[f"{c[0]}:{c[2] or 'without ' + c[1]}" for c in WRONG])
def test_a_wrong_answer_gets_the_intended_verdict(pid, old, new, verdict, message, gradient,
                                                   final):
    spec = BANK[pid]
    inst = draw_instance(spec, 3)
    answer = model_answer(spec, inst)
    assert old in answer
    result = grade_equations(spec, inst, answer.replace(old, new, 1))
    assert result.valid and result.score < 1.0
    wrong = [e for e in result.equations if e.verdict != "correct"]
    assert wrong[0].verdict == verdict, wrong[0].to_json()
    assert message in wrong[0].message, wrong[0].to_json()
    assert result.gradients[gradient].verdict == final, result.gradients[gradient]


# --------------------------------------------------------------------------- named mistakes
# on problems beyond the course's nine (each named mistake is tested on two problems or more)

GLOBAL_MAX = parse_spec('''
id = "global-max"
title = "A linear layer over the maxima of the columns"
answer = "equations"
statement = "Max over each column, then a linear layer."
given = "y"
ask = ["X", "W"]
forward = """
m = max(X, axis=0)
mt = m.T
y = W @ mt
"""
[dims]
N = [3, 5]
B = [2, 4]
K = [2, 3]
[vars]
X = { shape = ["N", "B"], role = "input" }
W = { shape = ["K", "B"], role = "param" }
''', "global-max.toml")


@pytest.mark.parametrize("spec, old, new, message", [
    (BANK["softmax-cross-entropy"], "dz = dp @ (diag(p) - p @ p.T)",
     "dz = dp * (p * (1 - p)).T", "dz uses only the diagonal of the softmax Jacobian"),
    (BANK["softmax-cross-entropy"], "dz = dp @ (diag(p) - p @ p.T)", "dz = dp @ diag(p)",
     "dz leaves out the - a a^T part of the softmax Jacobian of 'p = softmax(z)'"),
    (GLOBAL_MAX, "(X >= ones_like(X) @ diag(m)).T", "ones_like(X).T",
     "dX sends the gradient of 'm = max(X, axis=0)' to every element"),
])
def test_named_mistakes_on_other_problems(spec, old, new, message):
    inst = draw_instance(spec, 2)
    answer = model_answer(spec, inst)
    assert grade_equations(spec, inst, answer).score == 1.0
    assert old in answer, answer
    result = grade_equations(spec, inst, answer.replace(old, new))
    wrong = [e for e in result.equations if e.verdict != "correct"]
    assert wrong[0].verdict == "incorrect" and message in wrong[0].message, wrong[0].to_json()


def test_mlp_random_draws_four_hidden_layers_too():
    spec = BANK["mlp-random"]
    insts = [draw_instance(spec, seed) for seed in range(50)]
    depths = {inst.choices.get("depth") for inst in insts}
    assert depths == {"two", "three", "four"}
    four = next(inst for inst in insts if inst.choices.get("depth") == "four")
    assert "act4" in four.choices and "z12 = " in four.forward
    assert grade_equations(spec, four, model_answer(spec, four)).score == 1.0
