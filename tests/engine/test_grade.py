"""Grading backward equations: verdicts, carry-forward, scores (issue 3 acceptance)."""

import json

import pytest

from server.engine.bank import load_bank
from server.engine.grade import grade_equations
from server.engine.instance import draw_instance, legacy_hidden_seeds
from server.engine.problem import grade_answer, model_answer
from server.engine.results import VERDICTS, GradientResult, weighted_score
from server.engine.spec import parse_spec

from .course import SCAN_ANSWER, SEED_ANSWER, right_only_on_its_own_instance

BANK = load_bank()
MLP = BANK["mlp-relu"]
SCAN = BANK["scan-mlp"]


def grade(spec, text, seed=3):
    return grade_equations(spec, draw_instance(spec, seed), text)


def line(result, number):
    return next(e for e in result.equations if e.line == number)


EQUATION_PROBLEMS = [s for s in BANK.values() if s.answer_kind == "equations"]


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
        text = text.replace("(z5 > 0)", "np.where(z5 > 0, 1, 0)").replace(
            "(z2 > 0)", "np.maximum(z2 > 0, 0)"
        )
    for seed in range(10):
        result = grade(MLP, text, seed)
        assert result.score == 1.0, result.to_json()
        assert all(e.verdict == "correct" and e.rule_correct for e in result.equations)


def test_mask_from_z5_on_line_10_is_a_shape_message():
    result = grade(
        MLP, SEED_ANSWER.replace("10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3 * (z5 > 0).T")
    )
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


# --------------------------------------------------------------------------- issue 9

WEIGHTED_MLP = parse_spec(MLP.source + "\n[weights]\nW1 = 3\n", "mlp-relu-weighted.toml")


def test_weights_count_in_the_total_so_the_model_answer_scores_one():
    assert WEIGHTED_MLP.weights["W1"] == 3.0
    for seed in range(5):
        inst = draw_instance(WEIGHTED_MLP, seed)
        assert grade_equations(WEIGHTED_MLP, inst, model_answer(WEIGHTED_MLP, inst)).score == 1.0
    wrong_w1 = grade(WEIGHTED_MLP, SEED_ANSWER.replace("13. dW1 = x @ dz1", "13. dW1 = -x @ dz1"))
    assert wrong_w1.score == pytest.approx(6 / 9, abs=1e-6)  # 7 gradients, weights 1 and W1 = 3
    wrong_dx = grade(WEIGHTED_MLP, SEED_ANSWER.replace("14. dx = dz1 @ W1", "14. dx = -dz1 @ W1"))
    assert wrong_dx.score == pytest.approx(8 / 9, abs=1e-6)


def test_weighted_score_is_never_above_one():
    correct, wrong = GradientResult("correct"), GradientResult("sign")
    assert weighted_score({"dW1": correct, "dx": correct}, {"W1": 5, "x": 1}) == 1.0
    assert weighted_score({"dW1": correct, "dx": wrong}, {"W1": 3}) == 0.75
    assert weighted_score({"dW1": wrong}, {}) == 0.0
    assert weighted_score({}, {"W1": 2}) == 0.0


@pytest.mark.parametrize("credit", ["gradients", "rules"])
def test_reading_an_unassigned_gradient_is_an_error_at_its_line(credit):
    import dataclasses

    spec = dataclasses.replace(MLP, credit=credit)
    nothing = "dW1 = x @ dz1\ndx = dz1 @ W1\n"  # scored 1.0 with rule credit before issue 9
    result = grade(spec, nothing)
    assert result.valid and result.score == 0.0
    first = line(result, 1)
    assert first.verdict == "incorrect" and first.rule_correct is False
    assert "dz1 is read before any line assigns it" in first.message
    # the second line is charged for its own read, not with a cascade of the first
    assert "dz1 is read before any line assigns it" in line(result, 2).message


def test_a_line_may_read_its_own_target_which_starts_at_zero():
    text = SEED_ANSWER.replace("13. dW1 = x @ dz1", "13. dW1 = dW1 + x @ dz1")
    assert grade(MLP, text).score == 1.0


def test_after_a_failed_line_later_lines_are_judged_by_their_rule():
    result = grade(MLP, SEED_ANSWER.replace("12. dz1 = dz2", "12. dz1 = dz2 @ W2"))
    assert line(result, 12).verdict == "wrong_shape"
    assert line(result, 13).rule_correct and "read before" not in line(result, 13).message


def test_two_independent_mistakes_are_each_blamed_on_the_lines_that_read_them():
    text = (SEED_ANSWER.replace("3. dW3 = z6 @ dz7", "3. dW3 = -z6 @ dz7")
            .replace("10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3"))
    result = grade(MLP, text)
    assert line(result, 3).verdict == "sign" and line(result, 10).rule_correct is False
    for n in (11, 12, 13, 14):  # they read dz2 (line 10), not dW3 (line 3, the first wrong)
        assert line(result, n).message == "right rule; the value carries the mistake from line 10"
    both = SEED_ANSWER.replace("4. dz6 = dz7 @ W3", "4. dz6 = -dz7 @ W3").replace(
        "10. dz2 = dz3 * (z2 > 0).T", "10. dz2 = dz3")
    result = grade(MLP, both)
    assert line(result, 9).message == "right rule; the value carries the mistake from line 4"
    assert line(result, 11).message == (
        "right rule; the value carries the mistakes from lines 4 and 10")


def test_rule_credit_charges_a_missing_accumulation_and_a_contribution_added_twice():
    import dataclasses

    scan = dataclasses.replace(SCAN, credit="rules")
    result = grade(scan, SCAN_ANSWER.replace("dW3 += z6[t] @ dz7[t]", "dW3 = z6[t] @ dz7[t]"))
    number = next(i for i, ln in enumerate(SCAN_ANSWER.splitlines(), 1) if "dW3 +=" in ln)
    assert line(result, number).rule_correct is False and result.score < 1
    rnn = dataclasses.replace(BANK["rnn-unrolled"], credit="rules")
    inst = draw_instance(rnn, 2)
    text = model_answer(rnn, inst)
    assert grade_equations(rnn, inst, text).score == 1.0
    twice = text.replace("db += du2", "db += du3")  # du3 was already added on line 3
    assert grade_equations(rnn, inst, twice).score < 1


def test_equations_are_also_checked_on_hidden_instances():
    seed, text = right_only_on_its_own_instance(MLP)
    inst = draw_instance(MLP, seed)
    assert grade_answer(MLP, inst, text, hidden_seeds=()).score == 1.0  # right on its own instance
    result = grade_answer(MLP, inst, text)  # None: the instance's legacy hidden seeds
    assert result.score < 1
    five = line(result, 5)
    assert five.verdict == "incorrect" and five.rule_correct is False
    assert "hidden check 1 of 2" in five.message and "right on your instance" in five.message
    assert result.gradients["db2"].verdict == "incorrect"
    assert "hidden check" in result.gradients["db2"].message
    assert not any(ch.isdigit() for ch in five.message.replace("1 of 2", ""))  # no values
    same = grade_answer(MLP, inst, text, hidden_seeds=legacy_hidden_seeds(inst))
    assert same.to_json() == result.to_json()


def test_a_correct_answer_is_correct_on_the_hidden_instances():
    for seed in range(10):
        inst = draw_instance(MLP, seed)
        result = grade_answer(MLP, inst, SEED_ANSWER, hidden_seeds=[seed + 1000, seed + 2000])
        assert result.score == 1.0 and all(e.verdict == "correct" for e in result.equations)
