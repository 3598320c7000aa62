"""The spec attacks of issue 22, as texts: each made a web worker spend minutes or
gigabytes before the checks ran in the judge under a budget. Shared by the engine
tests (tests/engine/test_budget.py) and the live ones (tests/web/test_spec_attacks_live.py).

Each entry: name -> (spec text, words its refusal must contain).
"""

from __future__ import annotations

NESTED_EXP = '''id = "attack-exp"
title = "Nested exp"
answer = "expression"
given = "L"
ask = ["x"]
forward = """
g1 = exp(exp(exp(exp(exp(x)))))
L = a*g1
"""
[constants]
a = [2, 5]
'''

HUGE_EXPONENT = '''id = "attack-power"
title = "A huge exponent"
answer = "expression"
given = "L"
ask = ["x"]
forward = """
L = x**a
"""
[constants]
a = 100000000
'''

POWER_TOWER = '''id = "attack-tower"
title = "A tower of powers"
answer = "expression"
given = "L"
ask = ["x"]
forward = """
g1 = (x + a)**a
g2 = (g1 + a)**a
g3 = (g2 + a)**a
L = (g3 + a)**a
"""
[constants]
a = [50, 99]
'''

BIG_DIMS = '''id = "attack-dims"
title = "Big dims"
given = "z2"
ask = ["W", "x"]
forward = """
z1 = W @ x
z2 = tanh(z1)
"""
[dims]
N = 100
M = 100
[vars]
W = { shape = ["M", "N"], role = "param" }
x = { shape = ["N", 1], role = "input" }
'''

HUGE_DIMS = BIG_DIMS.replace("= 100\n", "= 1000\n").replace("attack-dims", "attack-dims-1000")

LONG_LOOP = '''id = "attack-loop"
title = "A long scan"
given = "O"
ask = ["W1", "b1", "W2"]
forward = """
for t in range(T - N + 1):
    x[t] = X[t:t+N]
    z1[t] = W1 @ x[t]
    z2[t] = z1[t] + b1
    z3[t] = tanh(z2[t])
    O[t] = W2 @ z3[t]
"""
[dims]
T = 400
N = 3
H = 4
K = 2
[vars]
X = { shape = ["T", 1], role = "input" }
W1 = { shape = ["H", "N"], role = "param" }
b1 = { shape = ["H", 1], role = "param" }
W2 = { shape = ["K", "H"], role = "param" }
'''


def _many_choices() -> str:
    lines = ["z0 = W @ x"] + [f"z{i} = {{a{i % 9}}}(z{i - 1})" for i in range(1, 199)]
    choose = "\n".join(f'a{k} = ["tanh", "sigmoid"]' for k in range(9))
    return ('id = "attack-choices"\ntitle = "Many choices"\ngiven = "z198"\n'
            'ask = ["W", "x"]\nforward = """\n' + "\n".join(lines) + '\n"""\n'
            '[dims]\nN = [2, 4]\nM = [2, 4]\n[choose]\n' + choose + "\n[vars]\n"
            'W = { shape = ["M", "N"], role = "param" }\n'
            'x = { shape = ["N", 1], role = "input" }\n')


MANY_CHOICES = _many_choices()
DEEP_ARRAYS = 'id = "deep"\nx = ' + "[" * 49_000 + "]" * 49_000 + "\n"
DEEP_TABLES = 'id = "deep"\nx = ' + "{a=" * 24_000 + "1" + "}" * 24_000 + "\n"

ATTACKS: dict[str, tuple[str, list[str]]] = {
    "nested exp": (NESTED_EXP, ["too large to evaluate"]),
    "huge exponent": (HUGE_EXPONENT, ["constants a reaches 100000000", "±100"]),
    "power tower": (POWER_TOWER, ["too large to evaluate"]),
    "big dims": (BIG_DIMS, ["dims N reaches 100", "limit is 32"]),
    "huge dims": (HUGE_DIMS, ["dims N reaches 1000", "limit is 32"]),
    "long loop": (LONG_LOOP, ["dims T reaches 400", "limit is 32"]),
    "many choices": (MANY_CHOICES, ["512 combinations", "limit is 256"]),
    "deep arrays": (DEEP_ARRAYS, ["nest more than 16 levels"]),
    "deep tables": (DEEP_TABLES, ["nest more than 16 levels"]),
}
