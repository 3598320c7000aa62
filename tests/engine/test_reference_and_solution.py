"""Broken problems are refused; model solutions read like the course's."""

import pytest

from server.engine import ops
from server.engine.bank import load_bank
from server.engine.instance import BrokenProblemError, draw_instance
from server.engine.solution import model_solution

BANK = load_bank()

COURSE_MLP = """\
1. dz7 = doutput
2. db3 = doutput
3. dW3 = z6 @ dz7
4. dz6 = dz7 @ W3
5. dz5 = dz6 * (z5 > 0).T
6. dz4 = dz5
7. db2 = dz5
8. dW2 = z3 @ dz4
9. dz3 = dz4 @ W2
10. dz2 = dz3 * (z2 > 0).T
11. dz1 = dz2
12. db1 = dz2
13. dW1 = x @ dz1
14. dx = dz1 @ W1"""


def test_mlp_relu_model_solution_is_the_course_answer():
    spec = BANK["mlp-relu"]
    assert model_solution(spec, spec.program(())) == COURSE_MLP


def test_scan_model_solution_accumulates_shared_parameters_and_slices():
    spec = BANK["scan-mlp"]
    text = model_solution(spec, spec.program(()))
    lines = text.splitlines()
    assert lines[0] == "for t in range(T - N + 1):"
    assert "    3. dW3 += z6[t] @ dz7[t]" in lines
    assert "    1. dz7[t] = dO[t]" in lines
    assert lines[-1] == "    15. dX[:, t:t + N] += dx[t]"


def test_a_wrong_backward_rule_is_refused_naming_the_variable(monkeypatch):
    real = ops.vjp

    def broken(op, i, g, args, out, region=None):
        value = real(op, i, g, args, out, region)
        return value * 1.01 if op == "matmul" and i == 0 else value

    monkeypatch.setattr("server.engine.reference.vjp", broken)
    with pytest.raises(BrokenProblemError) as info:
        draw_instance(BANK["mlp-relu"], 0)
    assert info.value.variable in {"W1", "W2", "W3"}
    assert "disagrees with finite differences" in str(info.value)
