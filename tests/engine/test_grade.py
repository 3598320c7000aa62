"""Grading backward equations: verdicts, carry-forward, scores (issue 3 acceptance)."""

import json

import pytest

from server.engine.bank import load_bank
from server.engine.grade import VERDICTS, grade_equations
from server.engine.instance import draw_instance
from server.engine.problem import model_answer

from .course import SEED_ANSWER

BANK = load_bank()
MLP = BANK["mlp-relu"]
SCAN = BANK["scan-mlp"]


SCAN_ANSWER = """\
for t in range(T - N + 1):
    dz7[t] = dO[t]
    db3 += dO[t]
    dW3 += z6[t] @ dz7[t]
    dz6[t] = dz7[t] @ W3
    dz5[t] = dz6[t] * (z5[t] > 0).T
    dz4[t] = dz5[t]
    db2 += dz5[t]
    dW2 += z3[t] @ dz4[t]
    dz3[t] = dz4[t] @ W2
    dz2[t] = dz3[t] * (z2[t] > 0).T
    dz1[t] = dz2[t]
    db1 += dz2[t]
    dW1 += x[t] @ dz1[t]
    dx[t] = dz1[t] @ W1
    dX[:, t:t+N] += dx[t]
"""


def grade(spec, text, seed=3):
    return grade_equations(spec, draw_instance(spec, seed), text)


def line(result, number):
    return next(e for e in result.equations if e.line == number)


EQUATION_PROBLEMS = [s for s in BANK.values() if s.answer == "equations"]


@pytest.mark.parametrize("spec", EQUATION_PROBLEMS, ids=lambda s: s.id)
def test_model_solution_scores_one_on_fifty_seeds(spec):
    for seed in range(50):
        inst = draw_instance(spec, seed)
        result = grade_equations(spec, inst, model_answer(spec, inst))
        assert result.valid and result.score == 1.0, (spec.id, seed, result.to_json())


@pytest.mark.parametrize("variant", ["numbered", "plain", "np"])
def test_seed_answer_scores_one(variant):
    text = SEED_ANSWER
    if variant != "numbered":
        text = "\n".join(ln.split(". ", 1)[1] for ln in text.splitlines())
    if variant == "np":
        text = text.replace("(z5 > 0)", "np.where(z5 > 0, 1, 0)").replace("(z2 > 0)", "np.maximum(z2 > 0, 0)")
    for seed in range(10):
        result = grade(MLP, text, seed)
        assert result.score == 1.0, result.to_json()
        assert all(e.verdict == "correct" and e.rule_correct for e in result.equations)


def test_mask_from_z5_on_line_10_is_a_shape_message():
    result = grade(MLP, SEED_ANSWER.replace("10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3 * (z5 > 0).T"))
    ten = line(result, 10)
    assert ten.verdict == "wrong_shape" and ten.rule_correct is False
    assert "(z5 > 0).T is 1×" in ten.message and "must come from z2" in ten.message
    assert result.score < 1
    assert all(line(result, n).rule_correct for n in (11, 12, 13, 14))


def test_transposed_weight_gradient():
    result = grade(MLP, SEED_ANSWER.replace("3. dW3 = z6 @ dz7", "3. dW3 = dz7.T @ z6.T"))
    assert line(result, 3).verdict == "transposed"
    assert result.gradients["dW3"].verdict == "transposed"
    assert "numerator layout" in result.gradients["dW3"].message
    assert result.score == pytest.approx(6 / 7, abs=1e-6)


def test_sign_slip():
    result = grade(MLP, SEED_ANSWER.replace("8. dW2 = z3 @ dz4", "8. dW2 = -z3 @ dz4"))
    assert line(result, 8).verdict == "sign"
    assert result.gradients["dW2"].verdict == "sign"


def test_missing_relu_mask_is_incorrect_and_later_lines_are_rule_correct():
    result = grade(MLP, SEED_ANSWER.replace("10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3"))
    ten = line(result, 10)
    assert ten.verdict == "incorrect" and ten.rule_correct is False
    assert "mask" in ten.message
    for n in (11, 12, 13, 14):
        later = line(result, n)
        assert later.rule_correct is True and "line 10" in later.message
    assert result.score == pytest.approx(4 / 7, abs=1e-6)


def test_missing_dx_scores_six_sevenths():
    text = "\n".join(ln for ln in SEED_ANSWER.splitlines() if not ln.startswith("14."))
    result = grade(MLP, text)
    assert result.gradients["dx"].verdict == "missing"
    assert result.score == pytest.approx(6 / 7, abs=1e-6)


def test_whole_answer_in_denominator_layout_is_wrong_layout():
    text = """
dz7 = doutput
db3 = doutput
dW3 = dz7 @ z6.T
dz6 = W3.T @ dz7
dz5 = dz6 * (z5 > 0)
dz4 = dz5
db2 = dz5
dW2 = dz4 @ z3.T
dz3 = W2.T @ dz4
dz2 = dz3 * (z2 > 0)
db1 = dz2
dz1 = dz2
dW1 = dz1 @ x.T
dx = W1.T @ dz1
"""
    result = grade(MLP, text)
    verdicts = [v.verdict for v in result.gradients.values()]
    # db3 = doutput is right in either layout; everything else is named as the other layout
    assert verdicts.count("wrong_layout") == 6 and verdicts.count("correct") == 1, result.to_json()
    assert "denominator layout" in result.gradients["dW1"].message
    assert result.score == pytest.approx(1 / 7, abs=1e-6)


def test_scan_loop_with_accumulation_scores_one():
    for seed in range(10):
        assert grade(SCAN, SCAN_ANSWER, seed).score == 1.0


def test_scan_reversed_loop_scores_one():
    text = SCAN_ANSWER.replace("for t in range(T - N + 1):", "for t in reversed(range(T - N + 1)):")
    assert grade(SCAN, text).score == 1.0


@pytest.mark.parametrize("old, new, gradient", [
    ("dW3 += z6[t] @ dz7[t]", "dW3 = z6[t] @ dz7[t]", "dW3"),
    ("dX[:, t:t+N] += dx[t]", "dX[:, t:t+N] = dx[t]", "dX"),
])
def test_scan_equals_instead_of_plus_equals_is_missing_accumulation(old, new, gradient):
    result = grade(SCAN, SCAN_ANSWER.replace(old, new))
    assert result.gradients[gradient].verdict == "missing_accumulation", result.to_json()
    number = next(i for i, ln in enumerate(SCAN_ANSWER.splitlines(), 1) if old in ln)
    assert line(result, number).verdict == "missing_accumulation"
    assert result.score < 1


def test_invalid_answer_reports_line_and_caret_and_scores_zero():
    result = grade(MLP, SEED_ANSWER.replace("3. dW3 = z6 @ dz7", "3. dW_3 = z6 @ dz7"))
    assert not result.valid and result.score == 0
    assert result.errors[0]["line"] == 3
    assert "did you mean dW3" in result.errors[0]["message"]
    assert "^" in result.errors[0]["message"]


def test_runtime_shape_error_on_an_asked_gradient():
    result = grade(MLP, SEED_ANSWER.replace("13. dW1 = x @ dz1", "13. dW1 = dz1 @ x"))
    thirteen = line(result, 13)
    assert thirteen.verdict == "wrong_shape" and "1×" in thirteen.message
    assert result.gradients["dW1"].verdict == "incorrect"


def test_wrong_shape_states_layout_rule():
    result = grade(MLP, SEED_ANSWER.replace("2. db3 = doutput", "2. db3 = doutput @ doutput.T"))
    assert result.gradients["db3"].verdict == "wrong_shape"
    assert "1×1 but should be 1×" in result.gradients["db3"].message
    assert "numerator layout" in result.gradients["db3"].message


def test_cheap_trick_plus_equals_everywhere_scores_one():
    text = SEED_ANSWER.replace(" = ", " += ")
    assert grade(MLP, text).score == 1.0


def test_rules_credit_counts_lines():
    import dataclasses

    spec = dataclasses.replace(MLP, credit="rules")
    result = grade(spec, SEED_ANSWER.replace("10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3"))
    assert result.score == pytest.approx(13 / 14, abs=1e-6)


def test_verdict_vocabulary_and_json_shape():
    result = grade(MLP, SEED_ANSWER)
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) == {"valid", "score", "errors", "equations", "gradients"}
    assert set(data["equations"][0]) == {"line", "target", "verdict", "rule_correct", "message"}
    for e in data["equations"]:
        assert e["verdict"] in VERDICTS
    assert set(data["gradients"]) == {"dx", "dW1", "db1", "dW2", "db2", "dW3", "db3"}


def test_wrong_activation_derivative_is_named():
    spec = BANK["rule-6-elementwise-function"]
    inst = next(i for i in (draw_instance(spec, s) for s in range(40)) if "tanh" in i.forward)
    z = inst.forward.split("=")[0].strip()
    x = inst.forward.split("(")[1].split(")")[0]
    text = f"d{x} = d{z} * ({z} * (1 - {z})).T"  # the sigmoid formula applied to tanh
    result = grade_equations(spec, inst, text)
    assert result.equations[0].verdict == "incorrect"
    assert "derivative formula of sigmoid" in result.equations[0].message
