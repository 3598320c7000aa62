"""Issue 9, §5: no generated mistake scores 100%, and every correct rewriting does.

Every mutant (engine.mutants) of every equations problem is graded as a whole
answer on its instance. In CI each problem runs on a sample of 3 of the seeds
0–49; ``NABLA_FUZZ=long`` runs all 50 (the figures in docs/grading.md).
"""

import dataclasses
import os
import random

import pytest

from server.engine.bank import load_bank
from server.engine.grade import grade_equations
from server.engine.instance import draw_instance, mutant_check
from server.engine.problem import grade_answer

from .course import SCAN_ANSWER, SEED_ANSWER

BANK = load_bank()
EQUATION_PROBLEMS = [s for s in BANK.values() if s.answer_kind == "equations"]
LONG = os.environ.get("NABLA_FUZZ") == "long"


def seeds_for(spec, count: int) -> list[int]:
    if LONG:
        return list(range(50))
    return sorted(random.Random(spec.id).sample(range(50), count))


def grade_every_mutant(spec, seed: int) -> list[str]:
    """What went wrong: a mutant that scored 100%, or an equivalent one that did not."""
    inst = draw_instance(spec, seed)
    check = mutant_check(spec, inst.choice_index)
    mset = check.mutants
    problems = []
    for m in mset.mutants:
        result = grade_equations(spec, inst, mset.answer(m))
        full = result.valid and result.score == 1.0
        if m.index in check.equivalent and not full:
            problems.append(f"seed {seed}: equivalent {mset.label(m)} scored {result.score}")
        elif m.index not in check.equivalent and full:
            problems.append(f"seed {seed}: {mset.label(m)} scored 100%")
    return problems


def sample_size(spec) -> int:
    """3 seeds in CI; 1 for the largest programs (LSTM and GRU cells: ~900-1500 mutants, each
    graded as a whole answer), to keep the suite fast."""
    steps = max(len(list(p.steps())) for p in spec.programs.values())
    return 3 if steps <= 16 else 1


@pytest.mark.parametrize("spec", EQUATION_PROBLEMS, ids=lambda s: s.id)
def test_no_plausible_mistake_scores_full_marks(spec):
    problems = [p for seed in seeds_for(spec, sample_size(spec))
                for p in grade_every_mutant(spec, seed)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("spec", EQUATION_PROBLEMS, ids=lambda s: s.id)
def test_no_plausible_mistake_scores_full_marks_with_rule_credit(spec):
    rules = dataclasses.replace(spec, credit="rules")
    problems = [p for seed in seeds_for(spec, 1) for p in grade_every_mutant(rules, seed)]
    assert not problems, "\n".join(problems)


REWRITINGS = {
    "mlp-relu": {
        "transposed forms": """\
dz7 = doutput
db3 = doutput
dW3 = (dz7.T @ z6.T).T
dz6 = (W3.T @ dz7.T).T
dz5 = (dz6.T * (z5 > 0)).T
dz4 = dz5
db2 = dz5
dW2 = (dz4.T @ z3.T).T
dz3 = (W2.T @ dz4.T).T
dz2 = dz3 * (z2 > 0).T
db1 = dz2
dz1 = dz2
dW1 = (dz1.T @ x.T).T
dx = (W1.T @ dz1.T).T
""",
        "masks from the relu outputs": SEED_ANSWER.replace("(z5 > 0)", "(z6 > 0)")
                                               .replace("(z2 > 0)", "(z3 > 0)"),
        ">= for >": SEED_ANSWER.replace(" > 0", " >= 0"),
        "where and maximum": SEED_ANSWER.replace("dz6 * (z5 > 0).T", "np.where(z5.T > 0, dz6, 0)")
                                      .replace("(z2 > 0)", "(np.maximum(z2, 0) / z2)"),
        "reordered independent lines": """\
dz7 = doutput
dz6 = dz7 @ W3
dz5 = dz6 * (z5 > 0).T
dz4 = dz5
dz3 = dz4 @ W2
dz2 = dz3 * (z2 > 0).T
dz1 = dz2
dx = dz1 @ W1
dW1 = x @ dz1
db1 = dz2
dW2 = z3 @ dz4
db2 = dz5
dW3 = z6 @ dz7
db3 = doutput
""",
        "compound lines": """\
dz5 = doutput @ W3 * (z5 > 0).T
dz2 = dz5 @ W2 * (z2 > 0).T
dW3 = z6 @ doutput
db3 = doutput
dW2 = z3 @ dz5
db2 = dz5
dW1 = x @ dz2
db1 = dz2
dx = dz2 @ W1
""",
        "+= throughout": SEED_ANSWER.replace(" = ", " += "),
    },
    "scan-mlp": {
        "reversed loop, equivalent masks, >=": SCAN_ANSWER
        .replace("for t in range(T - N + 1):", "for t in reversed(range(T - N + 1)):")
        .replace("(z5[t] > 0)", "(z6[t] > 0)").replace("(z2[t] > 0)", "(z2[t] >= 0)"),
        "two loops (gradients per step, then the shared ones)": """\
for t in range(T - N + 1):
    dz6[t] = dO[t] @ W3
    dz5[t] = dz6[t] * (z5[t] > 0).T
    dz3[t] = dz5[t] @ W2
    dz2[t] = dz3[t] * (z2[t] > 0).T
    dx[t] = dz2[t] @ W1
for s in range(T - N + 1):
    dX[:, s:s+N] += dx[s]
    dW1 += x[s] @ dz2[s]
    db1 += dz2[s]
    dW2 += z3[s] @ dz5[s]
    db2 += dz5[s]
    dW3 += z6[s] @ dO[s]
    db3 += dO[s]
""",
    },
    "residual-block": {
        "mask from the output, the skip added last": """\
dy = doutput * (output > 0).T
dz4 = dy
dz3 = dz4
db2 = dz4
dW2 = h @ dz3
dh = dz3 @ W2
dz2 = dh * (h > 0).T
dz1 = dz2
db1 = dz2
dW1 = x @ dz1
dx = dz1 @ W1
dx += dy
""",
        "dx in one line": """\
dy = doutput * (y > 0).T
dz2 = dy @ W2 * (z2 > 0).T
db2 = dy
dW2 = h @ dy
db1 = dz2
dW1 = x @ dz2
dx = dy + dz2 @ W1
""",
    },
    "rnn-unrolled": {
        "transposed forms, one-line sums": """\
du3 = dh3 * (1 - h3**2).T
dh2 = (Wh.T @ du3.T).T
du2 = dh2 * (1 - h2 * h2).T
dh1 = (Wh.T @ du2.T).T
du1 = dh1 * (1 - h1**2).T
dh0 = du1 @ Wh
dx3 = du3 @ Wx
dx2 = du2 @ Wx
dx1 = du1 @ Wx
db = du1 + du2 + du3
dWh = h0 @ du1 + h1 @ du2 + h2 @ du3
dWx = (du1.T @ x1.T + du2.T @ x2.T + du3.T @ x3.T).T
""",
    },
    "softmax-cross-entropy": {
        "the Jacobian is symmetric; division by p": """\
ds = -dloss
dm = ds * ones_like(m.T)
dlp = dm * y.T
dp = dlp / p.T
dz = dp @ (diag(p) - p @ p.T).T
db = dz
dW = x @ dz
dx = dz @ W
""",
    },
    "gated-unit": {
        "the gate branch first, products transposed": """\
dh = dz @ Wo
dWo = h @ dz
dg = (c * dh.T).T
dag = dg * (g * (1 - g)).T
dbg = dag
dWg = x @ dag
dx = dag @ Wg
dc = (g * dh.T).T
dac = dc * (1 - c**2).T
dbc = dac
dWc = x @ dac
dx += dac @ Wc
""",
    },
}

CASES = [(p, name) for p, texts in REWRITINGS.items() for name in texts]


@pytest.mark.parametrize("problem, name", CASES, ids=[f"{p}: {n}" for p, n in CASES])
def test_correct_rewritings_score_full_marks(problem, name):
    """On the student's instance and the hidden ones (grade_answer's legacy seeds)."""
    spec = BANK[problem]
    text = REWRITINGS[problem][name]
    for seed in seeds_for(spec, 5):
        result = grade_answer(spec, draw_instance(spec, seed), text)
        assert result.valid and result.score == 1.0, (seed, result.to_json())
