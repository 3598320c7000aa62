"""The backward-equations language: parsing, refusals, strict evaluation, carry-forward."""

from __future__ import annotations

import numpy as np
import pytest

from server.engine.equations import (
    MAX_LINES,
    MAX_STEPS,
    MAX_TEXT_CHARS,
    AnswerContext,
    AnswerFormatError,
    AnswerRuntimeError,
    AssignEvent,
    FormatError,
    evaluate_rhs,
    parse_equations,
    run_equations,
)

from .course import SEED_ANSWER

# --- the two-hidden-layer MLP of docs/design.md section 3, numerator layout ------------

N, H1, H2, K = 3, 5, 4, 2
DIMS = {"N": N, "H1": H1, "H2": H2, "K": K}
FORWARD = {
    "x": (N, 1), "W1": (H1, N), "b1": (H1, 1), "W2": (H2, H1), "b2": (H2, 1),
    "W3": (K, H2), "b3": (K, 1),
    "z1": (H1, 1), "z2": (H1, 1), "z3": (H1, 1), "z4": (H2, 1), "z5": (H2, 1),
    "z6": (H2, 1), "z7": (K, 1), "output": (K, 1),
}
# numerator layout: the derivative w.r.t. an r×c variable is c×r
GRADIENTS = {"d" + k: (c, r) for k, (r, c) in FORWARD.items() if k != "output"}
MLP = AnswerContext(FORWARD, GRADIENTS, frozenset({"doutput"}), DIMS)

ASKED = ["dx", "dW1", "db1", "dW2", "db2", "dW3", "db3"]


def relu(v):
    return np.maximum(v, 0.0)


def mlp_forward(x, W1, b1, W2, b2, W3, b3):
    z1 = W1 @ x
    z2 = z1 + b1
    z3 = relu(z2)
    z4 = W2 @ z3
    z5 = z4 + b2
    z6 = relu(z5)
    z7 = W3 @ z6
    return dict(x=x, W1=W1, b1=b1, W2=W2, b2=b2, W3=W3, b3=b3, z1=z1, z2=z2, z3=z3, z4=z4,
                z5=z5, z6=z6, z7=z7, output=z7 + b3)


def mlp_instance(seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(FORWARD[k]) for k in ["x", "W1", "b1", "W2", "b2", "W3",
                                                            "b3"]}
    values = mlp_forward(**params)
    dout = rng.standard_normal((1, K))
    return values, dout


def mlp_reference(values, dout):
    """Independent computation: ordinary (denominator-layout) backprop, transposed at the end."""
    v = values
    g7 = dout.T
    g6 = v["W3"].T @ g7
    g5 = g6 * (v["z5"] > 0)
    g3 = v["W2"].T @ g5
    g2 = g3 * (v["z2"] > 0)
    den = {
        "dW3": g7 @ v["z6"].T, "db3": g7, "dW2": g5 @ v["z3"].T, "db2": g5,
        "dW1": g2 @ v["x"].T, "db1": g2, "dx": v["W1"].T @ g2,
        "dz7": g7, "dz6": g6, "dz5": g5, "dz4": g5, "dz3": g3, "dz2": g2, "dz1": g2,
    }
    return {k: g.T for k, g in den.items()}


def loss(params, dout):
    return float((dout @ mlp_forward(**params)["output"])[0, 0])


def test_reference_agrees_with_finite_differences():
    values, dout = mlp_instance(3)
    ref = mlp_reference(values, dout)
    params = {k: values[k] for k in ["x", "W1", "b1", "W2", "b2", "W3", "b3"]}
    for name in params:
        numeric = np.zeros_like(params[name])
        for idx in np.ndindex(*params[name].shape):
            hi = {k: p.copy() for k, p in params.items()}
            lo = {k: p.copy() for k, p in params.items()}
            hi[name][idx] += 1e-6
            lo[name][idx] -= 1e-6
            numeric[idx] = (loss(hi, dout) - loss(lo, dout)) / 2e-6
        np.testing.assert_allclose(ref["d" + name], numeric.T, rtol=1e-5, atol=1e-8)


def initial_grads(dout):
    return {"doutput": dout}


def run_text(text, ctx=MLP, seed=0, **kw):
    values, dout = mlp_instance(seed)
    return run_equations(parse_equations(text, ctx), values, initial_grads(dout), **kw)


def strip_numbers(text):
    return "\n".join(line.split(". ", 1)[1] if ". " in line else line
                     for line in text.splitlines())


VARIANTS = {
    "numbered": SEED_ANSWER,
    "paren-numbered": SEED_ANSWER.replace(". ", ") "),
    "unnumbered": strip_numbers(SEED_ANSWER),
    "np-functions": SEED_ANSWER.replace(
        "5. dz5 = dz6 * (z5 > 0).T", "5. dz5 = np.where(z5.T > 0, dz6, 0)"
    ).replace("10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3 * numpy.maximum(z2 > 0, 0).T"),
    "bare-functions": SEED_ANSWER.replace(
        "5. dz5 = dz6 * (z5 > 0).T", "5. dz5 = where(z5.T > 0, dz6, 0)"),
    "plus-equals-comments": "# the cheap trick: gradients start at zero\n\n" + "\n".join(
        line.replace(" = ", " += ") + "   # step" for line in SEED_ANSWER.splitlines()),
    "crlf-tabs": SEED_ANSWER.replace("\n", "\r\n").replace(". ", ".\t"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seed_answer_reproduces_reference(variant, seed):
    values, dout = mlp_instance(seed)
    program = parse_equations(VARIANTS[variant], MLP)
    out = run_equations(program, values, initial_grads(dout))
    ref = mlp_reference(values, dout)
    for name in ref:
        assert out[name].shape == ref[name].shape, name
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_events_describe_every_assignment():
    values, dout = mlp_instance(0)
    events: list[AssignEvent] = []
    text = "# header comment\n\n" + SEED_ANSWER
    run_equations(parse_equations(text, MLP), values, initial_grads(dout), events.append)
    assert [e.number for e in events] == list(range(1, 15))
    assert [e.line for e in events] == list(range(3, 17))
    e = events[4]
    assert (e.target, e.op, e.index, e.region) == ("dz5", "=", (), None)
    assert e.source == "dz5 = dz6 * (z5 > 0).T"
    assert e.reads == (("dz6", ()),)
    assert not e.before.any()
    np.testing.assert_array_equal(e.after, e.rhs)
    assert events[0].reads == (("doutput", ()),)
    assert events[2].reads == (("dz7", ()),)


def test_inputs_are_not_mutated():
    values, dout = mlp_instance(0)
    grads = initial_grads(dout)
    dout_copy = dout.copy()
    x_copy = values["x"].copy()
    run_equations(parse_equations(SEED_ANSWER + "dx += dx\ndz1 -= 1\n", MLP), values, grads)
    np.testing.assert_array_equal(grads["doutput"], dout_copy)
    np.testing.assert_array_equal(values["x"], x_copy)


# --- a scan (shared MLP applied to windows of a series) ----------------------------------

T_LEN, WIN, H, KO = 7, 3, 4, 2
STEPS = T_LEN - WIN + 1


def scan_context():
    per = lambda shape: [shape] * STEPS  # noqa: E731
    forward = {"X": (T_LEN, 1), "W1": (H, WIN), "b1": (H, 1), "W2": (KO, H),
               "x": per((WIN, 1)), "z1": per((H, 1)), "z2": per((H, 1)), "z3": per((H, 1)),
               "O": per((KO, 1))}
    gradients = {"dX": (1, T_LEN), "dW1": (WIN, H), "db1": (1, H), "dW2": (H, KO),
                 "dx": per((1, WIN)), "dz1": per((1, H)), "dz2": per((1, H)),
                 "dz3": per((1, H))}
    return AnswerContext(forward, gradients, frozenset({"dO"}), {"T": T_LEN, "N": WIN, "H": H})


def scan_instance(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((T_LEN, 1))
    W1, b1, W2 = (rng.standard_normal((H, WIN)), rng.standard_normal((H, 1)),
                  rng.standard_normal((KO, H)))
    v = {"X": X, "W1": W1, "b1": b1, "W2": W2, "x": [], "z1": [], "z2": [], "z3": [], "O": []}
    for t in range(STEPS):
        v["x"].append(X[t:t + WIN])
        v["z1"].append(W1 @ v["x"][t])
        v["z2"].append(v["z1"][t] + b1)
        v["z3"].append(relu(v["z2"][t]))
        v["O"].append(W2 @ v["z3"][t])
    dO = [rng.standard_normal((1, KO)) for _ in range(STEPS)]
    return v, dO


def scan_reference(v, dO):
    dX, dW1, db1, dW2 = np.zeros((T_LEN, 1)), np.zeros((H, WIN)), np.zeros((H, 1)), \
        np.zeros((KO, H))
    for t in range(STEPS):
        g = dO[t].T
        dW2 += g @ v["z3"][t].T
        g = (v["W2"].T @ g) * (v["z2"][t] > 0)
        db1 += g
        dW1 += g @ v["x"][t].T
        dX[t:t + WIN] += v["W1"].T @ g
    return {"dX": dX.T, "dW1": dW1.T, "db1": db1.T, "dW2": dW2.T}


SCAN_ANSWER = """\
1. for t in range(T - N + 1):
2.     dz3[t] = dO[t] @ W2
3.     dW2 += z3[t] @ dO[t]
4.     dz2[t] = dz3[t] * (z2[t] > 0).T
5.     db1 += dz2[t]
6.     dz1[t] = dz2[t]
7.     dW1 += x[t] @ dz1[t]
8.     dx[t] = dz1[t] @ W1
9.     dX[:, t:t+N] += dx[t]
"""


def check_scan(text, seed=0):
    v, dO = scan_instance(seed)
    events: list[AssignEvent] = []
    out = run_equations(parse_equations(text, scan_context()), v, {"dO": dO}, events.append)
    ref = scan_reference(v, dO)
    for name, value in ref.items():
        np.testing.assert_allclose(out[name], value, rtol=1e-12, atol=1e-14, err_msg=name)
    return out, events


def test_scan_loop_with_accumulation():
    out, events = check_scan(SCAN_ANSWER)
    assert len(events) == 8 * STEPS
    slices = [e for e in events if e.target == "dX"]
    assert [e.region for e in slices] == [f"[:, {t}:{t + WIN}]" for t in range(STEPS)]
    assert [e.loop_env for e in slices] == [{"t": t} for t in range(STEPS)]
    dz2 = [e for e in events if e.target == "dz2"]
    assert [e.index for e in dz2] == [(t,) for t in range(STEPS)]
    assert dz2[1].reads == (("dz3", (1,)),)
    assert len(out["dz2"]) == STEPS


def test_scan_reversed_unnumbered_and_two_digit_labels():
    body = strip_numbers(SCAN_ANSWER).replace("range(T - N + 1)", "reversed(range(T - N + 1))")
    check_scan(body)
    # labels of different widths; the body is indented after its label
    relabeled = "\n".join(f"{i + 8}. {line.split('. ', 1)[1]}"
                          for i, line in enumerate(SCAN_ANSWER.splitlines()))
    check_scan(relabeled + "\n17. dW2 += 0\n")


def test_nested_loops_and_chained_subscripts():
    text = SCAN_ANSWER.replace("9.     dX[:, t:t+N] += dx[t]", "") + """\
for t in range(T - N + 1):
    for i in range(N):
        dX[:, t + i:t + i + 1] += dx[t][:, i]
"""
    check_scan(text)
    # chained subscripts on the right and a sliced element target on the left
    text = SCAN_ANSWER.replace("dx[t] = dz1[t] @ W1", "dx[t][:, :-1] = (dz1[t] @ W1)[:, :-1]")
    text = text.replace("dX[:, t:t+N] += dx[t]",
                        "dX[:, t:t+N] += dx[t]\n       dX[:, t+N-1:t+N] += dz1[t] @ W1[:, N-1]")
    check_scan(text)


def test_loop_variable_only_in_scope_inside_its_loop():
    text = "for t in range(T):\n    dX[:, t] = 1\ndX[:, t] = 2\n"
    with pytest.raises(AnswerFormatError) as info:
        parse_equations(text, scan_context())
    assert [e.line for e in info.value.errors] == [3]
    assert "unknown name t" in info.value.errors[0].message


# --- refusals ---------------------------------------------------------------------------


def refused(text, ctx=MLP):
    with pytest.raises(AnswerFormatError) as info:
        parse_equations(text, ctx)
    errors = info.value.errors
    assert errors and all(isinstance(e, FormatError) for e in errors)
    return errors


def only(errors):
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("text,line,words", [
    ("dz7 = doutput\ndz6 = dz7 @ (W3", 2, "syntax error"),
    ("dz7 = doutput\ndz6 = = W3", 2, "syntax error"),
    ("dz6 = x.__class__", 1, ".__class__ is not allowed"),
    ("dz6 = np.linalg.inv(W3)", 1, "np.linalg.inv(...) is not allowed"),
    ("dz6 = x.sum()", 1, "write np.sum(...)"),
    ("dz6 = __import__('os')", 1, "__import__() is not allowed"),
    ("dz6 = open(x)", 1, "open() is not allowed"),
    ("dz6 = eval(x)", 1, "eval() is not allowed"),
    ("dz6 = print(x)", 1, "print() is not allowed"),
    ("dz6 = np.dot(x, x)", 1, "dot() is not allowed"),
    ("import os", 1, "imports are not allowed"),
    ("from numpy import exp", 1, "imports are not allowed"),
    ("dz6 = 'abc'", 1, "strings are not allowed"),
    ("dz6 = f'{x}'", 1, "strings are not allowed"),
    ("dz6 = (lambda: 3)", 1, "lambdas are not allowed"),
    ("dz6 = [v for v in x]", 1, "comprehensions are not allowed"),
    ("dz6 = sum(v for v in x)", 1, "comprehensions are not allowed"),
    ("if x > 0:\n    dz6 = 1", 1, "'if' statements are not allowed"),
    ("while 1:\n    dz6 = 1", 1, "'while' statements are not allowed"),
    ("def f():\n    dz6 = 1", 1, "'functiondef' statements are not allowed"),
    ("with x:\n    dz6 = 1", 1, "'with' statements are not allowed"),
    ("dz6 = dz7 @ W3\nprint(dz6)", 2, "a line must assign a gradient"),
    ("dW_3 = z6 @ dz7", 1, "did you mean dW3?"),
    ("dW3 = z6 @ dz_7", 1, "did you mean dz7"),
    ("dW3 = z6 @ q", 1, "unknown name q"),
    ("z1 = W1 @ x", 1, "you can only assign gradients such as dz1"),
    ("foo = W1 @ x", 1, "you can only assign gradients such as"),
    ("N = 3", 1, "you can only assign gradients such as"),
    ("doutput = dz7", 1, "read-only"),
    ("dz6 = dz7 @ W3 ** x", 1, "exponent must be a number"),
    ("dz6 = dz7 @ W3 ** 10", 1, "exponent must be a number between -4 and 4"),
    ("dz6 = z6 ** (2 + 1)", 1, "exponent must be a number"),
    ("for t in range(x):\n    dz6 = 1", 1, "x is a variable, not a dimension"),
    ("for t in range(2.5):\n    dz6 = 1", 1, "whole numbers"),
    ("for t in range(N / 2):\n    dz6 = 1", 1, "use // for integer division"),
    ("for t in range(len(x)):\n    dz6 = 1", 1, "range bounds must be dims expressions"),
    ("for t in x:\n    dz6 = 1", 1, "a loop must be for t in range(...)"),
    ("for t in range(1, 2, 3, 4):\n    dz6 = 1", 1, "range() takes 1 to 3 bounds"),
    ("for z1 in range(N):\n    dz6 = 1", 1, "would hide a variable"),
    ("for N in range(3):\n    dz6 = 1", 1, "would hide a variable"),
    ("for exp in range(3):\n    dz6 = 1", 1, "would hide a variable"),
    ("for t in range(3):\n    for t in range(2):\n        dz6 = 1", 2, "would hide"),
    ("dz6 = 2000000 * z6.T", 1, "unreasonably large"),
    ("dz6 = 1e300 * z6.T", 1, "unreasonably large"),
    ("dz6 = 2z6", 1, "write 2*z6, not 2z6"),
    ("dz6 = 2(z6)", 1, "multiplication must be explicit"),
    ("dz6 = z6(z6)", 1, "multiplication must be explicit"),
    ("dz6 = True", 1, "only numbers"),
    ("dz6 = 1j", 1, "only numbers"),
    ("dz6 = x % 2", 1, "operator % is not allowed"),
    ("dz6 = x ^ 2", 1, "use ** for powers"),
    ("dz6 = 0 < z6 < 1", 1, "compare two things at a time"),
    ("dz6 = z6 == 0", 1, "only the comparisons"),
    ("dz6 = z6 > 0 and z6 < 1", 1, "and/or are not allowed"),
    ("dz6 = z6 if z6 else z6", 1, "if-expressions are not allowed"),
    ("dz6 = ~z6", 1, "only unary - and +"),
    ("dz6 = [z6]", 1, "lists, tuples, sets and dicts"),
    ("dz6 = dz7 = W3", 1, "assign one gradient per line"),
    ("dz6, dz5 = 1, 2", 1, "the left-hand side must be a gradient"),
    ("dz6 *= 2", 1, "only =, += and -= are allowed"),
    ("dz6: int = 2", 1, "annotations are not allowed"),
    ("dz6 = 1; dz5 = 2", 1, "one statement per line"),
    ("dz6 = sum(z6, axis=2)", 1, "axis must be 0"),
    ("dz6 = sum(z6, keepdims=True)", 1, "does not take the keyword keepdims"),
    ("dz6 = outer(z6)", 1, "outer() takes 2 arguments"),
    ("dz6 = exp(*z6)", 1, "unpacking is not allowed"),
    ("dz6 = z6[:, :, 1]", 1, "at most two indices"),
    ("dz6 = z6[x]", 1, "x is a variable, not a dimension"),
    ("dz6 = z6[0.5]", 1, "whole numbers"),
    ("dz6 = exp", 1, "exp is a function"),
    ("dz6 = np", 1, "np can only be used to call a function"),
    ("dz6 = z6 // 2", 1, "operator // is not allowed"),
    ("dz6 = dz6[:, 0][0][0]\ndz6[0][1] = 3", 2, "at most one slice"),
    ("for t in range(3):\ndz6 = 1", 1, "this loop has no body"),
    ("dz6 = (y := 3)", 1, ":= is not allowed"),
    ("dz6 = 1 \x00", 1, "NUL"),
])
def test_refusals(text, line, words):
    errors = refused(text)
    assert any(e.line == line and words in e.message for e in errors), errors


def test_indexed_names_need_a_step():
    ctx = scan_context()
    e = only(refused("for t in range(3):\n    dW1 += x @ dz1[t]", ctx))
    assert (e.line, e.col) == (2, 11) and "x has one value per step: write x[t]" in e.message
    e = only(refused("dz1 = 0", ctx))
    assert "dz1 has one value per step: assign dz1[t]" in e.message
    e = only(refused("dW1 = x[:, 0]", ctx))
    assert "select the step first" in e.message
    e = only(refused("dO[0] = x[0]", ctx))
    assert "read-only" in e.message


def test_all_errors_are_collected_with_carets():
    text = "1. dW_3 = z6 @ dz7\n2. db3 = doutput\n3. dz6 = dz7 @ W3.__dict__ + open('x')\n" \
           "4. z1 = 2\n5. dz5 = dz6 ** q"
    with pytest.raises(AnswerFormatError) as info:
        parse_equations(text, MLP)
    errors = info.value.errors
    assert [e.line for e in errors] == [1, 3, 3, 4, 5]
    rendered = errors[0].render(text.split("\n"))
    assert rendered == ("line 1: unknown gradient dW_3 (did you mean dW3?)\n"
                        "    1. dW_3 = z6 @ dz7\n"
                        "       ^")
    caret = errors[1].render(text.split("\n")).splitlines()[2]
    assert caret.index("^") - 4 == text.split("\n")[2].index("W3.__dict__")
    assert "line 5:" in str(info.value) and "q" in str(info.value)


def test_size_limits():
    e = only(refused("dz6 = 1\n" * (MAX_LINES + 1)))
    assert "too many lines" in e.message
    e = only(refused("dz6 = " + "1 + " * (MAX_TEXT_CHARS // 4) + "1"))
    assert "too long" in e.message
    e = only(refused("dz6 = " + "(" * 40 + "z6" + ")" * 40 + " + " + "-" * 40 + "z6"))
    assert "nested too deeply" in e.message
    e = only(refused("dz6 = " + "(" * 300 + "z6" + ")" * 300))
    assert e.line == 1 and ("too complex" in e.message or "syntax error" in e.message
                            or "nested too deeply" in e.message)


def test_gradient_shapes_follow_assignments():
    # Transposed and other-layout answers must run so that the grader can name them.
    out = run_text(SEED_ANSWER.replace("3. dW3 = z6 @ dz7", "3. dW3 = dz7.T @ z6.T"))
    assert out["dW3"].shape == (K, H2)
    out = run_text("dW3 += dz7.T @ z6.T\ndz7 = doutput\ndW3 += dz7.T @ z6.T")
    assert out["dW3"].shape == (K, H2)
    out = run_text("db1 = 0\ndb2 = 2.5")
    assert out["db1"].shape == (1, H1) and not out["db1"].any()
    np.testing.assert_array_equal(out["db2"], np.full((1, H2), 2.5))


# --- runtime errors ---------------------------------------------------------------------


def runtime_error(text, ctx=MLP, **kw):
    with pytest.raises(AnswerRuntimeError) as info:
        if ctx is MLP:
            run_text(text, **kw)
        else:
            v, dO = scan_instance()
            run_equations(parse_equations(text, ctx), v, {"dO": dO}, **kw)
    return info.value


def test_strict_elementwise_shapes():
    text = SEED_ANSWER.replace("10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3 * (z5 > 0).T")
    e = runtime_error(text)
    assert e.line == 10 and e.target == "dz2" and e.stmt_id == 9
    assert "dz3 is 1×5 but (z5 > 0).T is 1×4" in e.message
    assert e.render(text.split("\n")).splitlines()[2].index("^") == \
        text.split("\n")[9].index("*") + 4
    # 1×4 * 4×1 is never a 4×4 outer product
    e = runtime_error("dz7 = doutput\ndz6 = dz7 @ W3\ndz5 = dz6 * z5")
    assert e.line == 3 and "dz6 is 1×4 but z5 is 4×1" in e.message
    e = runtime_error("dz6 = z6.T + b1.T")
    assert "z6.T is 1×4 but b1.T is 1×5" in e.message
    e = runtime_error("dz6 = where(z6 > 0, b1, z6).T")
    assert "b1 is 5×1" in e.message
    e = runtime_error("dz6 = (z6 > b1).T")
    assert "z6 is 4×1 but b1 is 5×1" in e.message


def test_numbers_and_one_by_one_broadcast():
    out = run_text("dz7 = doutput\ndb3 = 2 * dz7 + sum(dz7) - 1")
    values, dout = mlp_instance(0)
    np.testing.assert_allclose(out["db3"], 2 * dout + dout.sum() - 1)


def test_matmul_inner_dimensions():
    e = runtime_error("dz7 = doutput\ndz6 = dz7 @ W3.T")
    assert e.line == 2 and "@ needs the inner dimensions to agree: dz7 is 1×2 but W3.T is 4×2" \
        in e.message
    e = runtime_error("dz6 = 2 @ z6")
    assert "is a number" in e.message


def test_slice_target_shape_is_strict():
    ctx = scan_context()
    e = runtime_error("for t in range(T - N + 1):\n    dX[:, t:t+N] += dz1[t]", ctx)
    assert e.line == 2 and "cannot add dz1[t] (1×4) into dX[:, 0:3], which is 1×3" in e.message
    e = runtime_error("dW1 = ones_like(dW1)\ndW1 += dX", ctx)
    assert "cannot add dX (1×7) to dW1, which is 3×4" in e.message


def test_step_index_out_of_range():
    ctx = scan_context()
    e = runtime_error("for t in range(T):\n    dz1[t] = 1", ctx)
    assert e.line == 2 and "dz1[t] is dz1[5], out of range: dz1 has steps 0..4" in e.message
    e = runtime_error("for t in range(T - N + 1):\n    dz1[t] = z1[t - 1].T", ctx)
    assert "z1[-1], out of range" in e.message
    e = runtime_error("dX = X[9].T", ctx)
    assert "row index 9 = 9 is out of range for X, which is 7×1" in e.message


def test_too_many_steps():
    ctx = scan_context()
    e = runtime_error("for t in range(T * 1000):\n    for s in range(1000):\n        dW1 += 1",
                      ctx)
    assert "too many steps" in e.message and e.fatal
    assert MAX_STEPS < 7000 * 1000


def test_on_error_reports_and_continues():
    text = SEED_ANSWER.replace("10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3 * (z5 > 0).T")
    errors: list[AnswerRuntimeError] = []
    events: list[AssignEvent] = []
    out = run_text(text, on_assign=events.append, on_error=errors.append)
    assert [e.line for e in errors] == [10]
    assert [e.line for e in events] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14]
    assert not out["dz2"].any() and not out["dx"].any()


# --- functions --------------------------------------------------------------------------


def test_functions():
    values, dout = mlp_instance(0)
    z2, z5, W2, x = values["z2"], values["z5"], values["W2"], values["x"]
    cases = {
        "dz1 = sigmoid(z2).T": (1 / (1 + np.exp(-z2))).T,
        "dz1 = np.tanh(z2).T + numpy.exp(z2).T": np.tanh(z2).T + np.exp(z2).T,
        "dz1 = log(abs(z2)).T * sqrt(abs(z2.T))": np.log(abs(z2)).T * np.sqrt(abs(z2.T)),
        "dz1 = sum(W2, axis=0)": W2.sum(axis=0, keepdims=True),
        "dz4 = np.sum(W2, 1).T": W2.sum(axis=1, keepdims=True).T,
        "db3 = sum(W2) * ones_like(doutput)": np.full((1, K), W2.sum()),
        "dW1 = diag(z2)[0:N, :]": np.diag(z2.ravel())[:N],
        "dx = diag(W2[:, 0:4]).T[:, 0:3]": np.diag(W2[:, :4]).reshape(1, -1)[:, :3],
        "dW1 = outer(x, z2.T)": np.outer(x, z2),
        "dz1 = maximum(z2, 0).T + zeros_like(z2.T)": np.maximum(z2, 0).T,
        "dz1 = where(z2 > 0, z2, 0.5 * z2).T": np.where(z2 > 0, z2, 0.5 * z2).T,
        "dz4 = (z5 >= 0).T - (z5 <= 0).T + (z5 < 1).T": ((z5 >= 0).astype(float)
                                                         - (z5 <= 0) + (z5 < 1)).T,
        "dz1 = z2.T ** 2 / 4 + z2.T ** -1 + +z2.T": z2.T ** 2 / 4 + 1 / z2.T + z2.T,
        "dz1 = W2[1] + W2[-1, :] + W2[0:1, :]": W2[1:2] + W2[-1:] + W2[0:1],
        "dz1 = z2[::2].T[:, 0:1] * N + H1 / 2": z2[::2].T[:, :1] * N + 2.5,
    }
    for text, expected in cases.items():
        target = text.split(" = ")[0]
        out = run_equations(parse_equations(text, MLP), values, initial_grads(dout))
        np.testing.assert_allclose(out[target], expected, rtol=1e-12, err_msg=text)


def test_function_runtime_errors():
    e = runtime_error("dW1 = diag(W2)")
    assert "diag needs a vector (n×1 or 1×n) or a square matrix" in e.message
    e = runtime_error("dW1 = outer(outer(outer(W2, W2), W2), outer(W2, W2))")
    assert "elements" in e.message


def test_math_domain_errors_give_values_not_warnings():
    out = run_text("dz1 = log(-abs(z2)).T + 1 / (z2.T - z2.T)")
    assert np.isnan(out["dz1"]).all() or not np.isfinite(out["dz1"]).any()


# --- carry-forward ------------------------------------------------------------------------


def test_evaluate_rhs_with_reference_inputs():
    values, dout = mlp_instance(0)
    ref = mlp_reference(values, dout)
    ref["doutput"] = dout
    wrong = SEED_ANSWER.replace("10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3")
    program = parse_equations(wrong, MLP)
    events: list[AssignEvent] = []
    out = run_equations(program, values, initial_grads(dout), events.append)
    assert not np.allclose(out["dW1"], ref["dW1"])  # the slip propagated
    lookup = lambda name, index: ref[name]  # noqa: E731
    by_line = {e.line: e for e in events}
    # line 13 is right given correct inputs; line 10 is not
    np.testing.assert_allclose(evaluate_rhs(program, by_line[13], values, lookup), ref["dW1"])
    assert not np.allclose(evaluate_rhs(program, by_line[10], values, lookup), ref["dz2"])
    # a statement id with an explicit loop environment works too
    np.testing.assert_allclose(evaluate_rhs(program, by_line[14].stmt_id, values, lookup, {}),
                               ref["dx"])
    assert program.statement_line(by_line[14].stmt_id) == 14


def test_evaluate_rhs_in_loops_and_after_runtime_errors():
    ctx = scan_context()
    v, dO = scan_instance(0)
    # line 4 uses the mask of the wrong step: its rule is wrong even with correct inputs
    text = SCAN_ANSWER.replace("(z2[t] > 0)", "(z2[0] > 0)")
    program = parse_equations(text, ctx)
    events: list[AssignEvent] = []
    run_equations(program, v, {"dO": dO}, events.append)
    correct = {"dz3": [dO[t] @ v["W2"] for t in range(STEPS)], "dO": dO}
    lookup = lambda name, index: correct[name][index[0]]  # noqa: E731
    line4 = [e for e in events if e.line == 4]
    assert line4[0].loop_env == {"t": 0}
    np.testing.assert_allclose(evaluate_rhs(program, line4[0], v, lookup),
                               correct["dz3"][0] * (v["z2"][0] > 0).T)
    got = evaluate_rhs(program, line4[2], v, lookup)
    assert got.shape == (1, H) and np.allclose(got, correct["dz3"][2] * (v["z2"][0] > 0).T)
    # an assignment that failed at run time can still be re-evaluated with correct inputs
    bad = "for t in range(T - N + 1):\n    dz3[t] = dz2[t] @ W2\n"
    errors: list[AnswerRuntimeError] = []
    program = parse_equations(bad, ctx)
    run_equations(program, v, {"dO": dO}, on_error=errors.append)
    assert len(errors) == STEPS and errors[3].loop_env == {"t": 3}
    fixed = lambda name, index: np.ones((1, KO))  # noqa: E731
    assert evaluate_rhs(program, errors[3], v, fixed).shape == (1, H)


# --- layout of lines and blocks -----------------------------------------------------------


def test_block_structure():
    ctx = scan_context()
    v, dO = scan_instance(0)

    def lines_run(text):
        events: list[AssignEvent] = []
        run_equations(parse_equations(text, ctx), v, {"dO": dO}, events.append)
        return [(e.line, e.index) for e in events]

    assert lines_run("for t in range(2): dz1[t] = dO[t] @ W2") == [(1, (0,)), (1, (1,))]
    # a comment at column 0 does not close the loop; a blank line does not either
    assert lines_run("for t in range(2):\n# note\n    dz1[t] = 1\n\n    dz2[t] = 2\ndW1 = 0") == [
        (3, (0,)), (5, (0,)), (3, (1,)), (5, (1,)), (6, ())]
    # numbered nested loops
    text = "1. for t in range(2):\n2.     for s in range(t, 3):\n3.         dz1[s] += 1\n4. db1 = 1"
    assert lines_run(text) == [(3, (0,)), (3, (1,)), (3, (2,)), (3, (1,)), (3, (2,)), (4, ())]


def test_unaligned_lines_in_a_loop_are_refused():
    e = only(refused("for t in range(3):\n    dz1[t] = 1\n  dz2[t] = 1", scan_context()))
    assert e.line == 3 and "indentation does not match" in e.message


def test_a_header_without_colon_does_not_cascade():
    e = only(refused("for t in range(3)\n    dz1[t] = 1", scan_context()))
    assert e.line == 1 and "expected ':'" in e.message


def test_lines_are_numbered_like_str_splitlines():
    text = "dz7 = doutput\rdz6 = q\r\ndz5 = r\u2028dz4 = s"
    errors = refused(text)
    assert [e.line for e in errors] == [2, 3, 4]
    assert [e.line for e in errors] == [i + 1 for i, line in enumerate(text.splitlines())
                                        if "= doutput" not in line]


def test_results_do_not_alias_each_other_or_the_inputs():
    values, dout = mlp_instance(0)
    out = run_equations(parse_equations("dz7 = doutput\ndb3 = dz7\ndx = x.T", MLP), values,
                        initial_grads(dout))
    assert not np.shares_memory(out["dz7"], dout)
    assert not np.shares_memory(out["db3"], out["dz7"])
    assert not np.shares_memory(out["dx"], values["x"])
