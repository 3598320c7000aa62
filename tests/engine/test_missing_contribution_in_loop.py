"""A gradient that misses every contribution of one step inside a loop (a
shared parameter used twice per step) is named like one outside a loop: the
step, the line to add, and the line after which to add it."""

from server.engine.problem import draw, grade_answer, model_answer
from server.engine.spec import parse_spec

SPEC = '''
id = "loop-shared"
title = "A scan that adds its bias twice per step"
answer = "equations"
statement = "b2 is added twice at every step."

[dims]
T  = [6, 8]
N  = [3, 4]
H  = [3, 5]
K  = [2, 3]

[vars]
X  = { shape = ["T", 1],   role = "input" }
W1 = { shape = ["H", "N"], role = "param" }
b1 = { shape = ["H", 1],   role = "param" }
W2 = { shape = ["K", "H"], role = "param" }
b2 = { shape = ["K", 1],   role = "param" }

forward = """
for t in range(T - N + 1):
    x[t] = X[t:t+N]
    z1[t] = W1 @ x[t]
    z2[t] = z1[t] + b1
    z3[t] = relu(z2[t])
    z4[t] = W2 @ z3[t]
    z5[t] = z4[t] + b2
    z6[t] = tanh(z5[t])
    O[t] = z6[t] + b2
"""
given = "O"
ask = ["X", "W1", "b1", "W2", "b2"]
'''


def test_a_missing_contribution_inside_a_loop_is_named():
    spec = parse_spec(SPEC, "loop-shared.toml")
    for seed in (1, 2, 3):
        inst = draw(spec, seed)
        model = model_answer(spec, inst)
        assert grade_answer(spec, inst, model, hidden_seeds=()).score == 1.0
        lines = model.splitlines()
        dropped = next(i for i, line in enumerate(lines) if line.endswith("db2 += dz5[t]"))
        answer = "\n".join(lines[:dropped] + lines[dropped + 1:])
        result = grade_answer(spec, inst, answer, hidden_seeds=())
        db2 = result.gradients["db2"]
        assert db2.verdict == "missing_accumulation"
        assert "through 'z5[t] = z4[t] + b2': add db2 += dz5[t] inside 'for t in range(" \
            in db2.message
        # the line that writes dz5[t] is flagged: add the contribution after it
        writes = next(i for i, line in enumerate(lines) if ". dz5[t] = " in line) + 1
        assert f"after line {writes}" in db2.message
        flagged = [e for e in result.equations if e.verdict == "missing_accumulation"]
        assert [e.line for e in flagged] == [writes]
        assert "db2 += dz5[t]" in flagged[0].message
        # every other gradient is right
        assert {g for g, r in result.gradients.items() if r.verdict != "correct"} == {"db2"}


def test_a_gradient_used_once_per_step_is_not_called_missing():
    """Contributions of one step only (dW1, one per loop step) are not 'missing a
    contribution' when the gradient is wrong: there is no other step to name."""
    spec = parse_spec(SPEC, "loop-shared.toml")
    inst = draw(spec, 1)
    model = model_answer(spec, inst)
    answer = model.replace("dW1 += x[t] @ dz1[t]", "dW1 += 2 * x[t] @ dz1[t]")
    assert answer != model
    result = grade_answer(spec, inst, answer, hidden_seeds=())
    assert result.gradients["dW1"].verdict != "missing_accumulation"
