"""Validation without grading (issue 11): ``check_answer`` parses an answer and, for
equations, runs it on the instance to check every line's shape; no verdicts, no score."""

from __future__ import annotations

import pytest

from server.engine.bank import load_bank
from server.engine.problem import check_answer, draw, grade_answer, model_answer

BANK = load_bank()


def _instance(problem_id: str, seed: int = 7):
    spec = BANK[problem_id]
    return spec, draw(spec, seed)


@pytest.mark.parametrize("problem_id", ["mlp-relu", "scan-mlp", "softmax-cross-entropy",
                                        "rule-4a-generalized-chain"])
def test_the_model_answer_passes_the_check(problem_id):
    spec, inst = _instance(problem_id)
    result = check_answer(spec, inst, model_answer(spec, inst))
    assert result.valid and result.errors == [] and result.equations == []


def test_every_line_with_a_wrong_shape_or_an_unassigned_read_is_named():
    spec, inst = _instance("mlp-relu")
    text = "dx = dz1 @ W1\ndz7 = doutput\ndW3 = dz7 @ z6\ndb3 = doutput"
    result = check_answer(spec, inst, text)
    assert [e["line"] for e in result.errors] == [1, 3]
    assert "dz1 is read before any line assigns it" in result.errors[0]["message"]
    shape = result.errors[1]["message"]
    assert "inner dimensions to agree" in shape and "\n    dW3 = dz7 @ z6\n" in shape
    assert result.gradients == {}  # nothing graded


def test_a_loop_body_error_is_named_once():
    spec, inst = _instance("scan-mlp")
    body = model_answer(spec, inst).splitlines()
    loop = next(k for k, line in enumerate(body) if line.lstrip().startswith("for "))
    body.insert(loop + 1, body[loop + 1].split("=")[0] + "= dz1[t] @ x[t] @ x[t]")
    errors = check_answer(spec, inst, "\n".join(body)).errors
    assert len([e for e in errors if e["line"] == loop + 2]) == 1


def test_a_syntax_error_is_invalid():
    spec, inst = _instance("mlp-relu")
    result = check_answer(spec, inst, "dz7 = doutput +")
    assert not result.valid and "syntax error" in result.errors[0]["message"]


@pytest.mark.parametrize("text", ["dL/dx = 3*x", "dL/dx=3*x", "L' = 3*x", "  y = x"])
def test_a_left_hand_side_in_an_expression_says_write_only_the_right_hand_side(text):
    spec, inst = _instance("rule-4a-generalized-chain")
    for result in (check_answer(spec, inst, text), grade_answer(spec, inst, text)):
        assert not result.valid
        assert result.errors[0]["message"].startswith("write only the right-hand side")


def test_a_comparison_in_an_expression_is_not_taken_for_a_left_hand_side():
    spec, inst = _instance("rule-4a-generalized-chain")
    message = check_answer(spec, inst, "x == 2").errors[0]["message"]
    assert "comparisons" in message and "right-hand side" not in message
    assert check_answer(spec, inst, "3*x**2 + exp(x)").valid


def test_numpy_answers_are_checked_with_the_sandbox_check_and_never_run():
    from server.sandbox import check_source

    spec, inst = _instance("mlp-relu-numpy")
    with pytest.raises(TypeError, match="check_source"):  # the engine never imports it
        check_answer(spec, inst, "def backward(**kw):\n    return {}\n")
    ran = "def backward(**kw):\n    raise SystemExit(3)\n"  # would fail if it ran
    assert check_answer(spec, inst, ran, check_source=check_source).valid
    assert check_answer(spec, None, ran, check_source=check_source).errors == []
    invalid = check_answer(spec, inst, "def forward(**kw):\n    pass\n",
                           check_source=check_source)
    assert not invalid.valid and "backward" in invalid.errors[0]["message"]
