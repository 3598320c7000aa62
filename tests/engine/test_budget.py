"""A spec's budget: every limit is checked before anything is drawn, each refusal names
its line and the limit; the bank fits with room to spare; the costliest accepted
spec stays cheap; the finite-difference checks are bounded in memory."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from server.engine import authoring, budget
from server.engine import reference as ref
from server.engine.bank import load_bank
from server.engine.spec import SpecError, parse_spec
from tests.spec_attacks import ATTACKS, BIG_DIMS, LONG_LOOP

LOOP_AT_THE_LIMITS = '''id = "worst-loop"
title = "A scan as long as the budget allows"
given = "O"
ask = ["W1", "b1", "W2"]
forward = """
for t in range(T - N + 1):
    x[t] = X[t:t+N]
    z1[t] = W1 @ x[t]
    z2[t] = z1[t] + b1
    z3[t] = tanh(z2[t])
    z4[t] = W2 @ z3[t]
    O[t] = sigmoid(z4[t])
"""
[dims]
T = [30, 32]
N = [3, 4]
H = [8, 10]
K = [5, 6]
[vars]
X = { shape = ["T", 1], role = "input" }
W1 = { shape = ["H", "N"], role = "param" }
b1 = { shape = ["H", 1], role = "param" }
W2 = { shape = ["K", "H"], role = "param" }
'''


def refused(text: str) -> list:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "attack.toml")
    return info.value.issues


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_of_the_report_is_refused_in_milliseconds_naming_the_limit(name):
    text, words = ATTACKS[name]
    start = time.perf_counter()
    result = authoring.check_text(text, "attack.toml")
    elapsed = time.perf_counter() - start
    message = " ".join(r.message for r in result.refused)
    assert result.refused and all(w in message for w in words), message
    assert elapsed < 2, f"{name}: {elapsed:.1f} s to refuse"  # minutes before the budget


def test_refusals_name_the_line_of_what_is_too_large():
    text = BIG_DIMS
    lines = {i.line for i in refused(text)}
    assert lines == {text.splitlines().index("N = 100") + 1,
                     text.splitlines().index("M = 100") + 1}
    loop = refused(LONG_LOOP)
    assert loop[0].line == LONG_LOOP.splitlines().index("T = 400") + 1


def test_steps_and_entries_are_counted_with_the_largest_dims_before_any_draw():
    # every dim within its limit, but 30 steps x 8 lines is over the unrolled limit
    text = LOOP_AT_THE_LIMITS.replace(
        "    O[t] = sigmoid(z4[t])",
        "    z5[t] = sigmoid(z4[t])\n    z6[t] = tanh(z5[t])\n    O[t] = sigmoid(z6[t])")
    issues = refused(text)
    assert "runs 240 steps once its loops are unrolled" in issues[0].message
    assert "limit is 200" in issues[0].message
    assert issues[0].line == text.splitlines().index("for t in range(T - N + 1):") + 1
    one_big = BIG_DIMS.replace("N = 100", "N = [30, 32]").replace("M = 100", "M = [31, 32]")
    assert parse_spec(one_big)  # 1024 entries: the limit itself
    wide = one_big.replace('W = { shape = ["M", "N"]', 'W = { shape = ["M", "2*N"]').replace(
        'x = { shape = ["N", 1]', 'x = { shape = ["2*N", 1]')
    issue = refused(wide)[0]
    assert "W has 2048 entries with the largest dims (N = 32, M = 32)" in issue.message
    assert issue.line == wide.splitlines().index(
        'W = { shape = ["M", "2*N"], role = "param" }') + 1


def test_an_expression_too_large_once_substituted_is_refused_at_parse():
    doubling = "\n".join(["g1 = x*x"] + [f"g{i} = g{i - 1}*g{i - 1} + g{i - 1}"
                                          for i in range(2, 14)] + ["L = g13"])
    text = ('id = "doubling"\ntitle = "t"\nanswer = "expression"\ngiven = "L"\nask = ["x"]\n'
            f'forward = """\n{doubling}\n"""\n')
    issue = refused(text)[0]
    assert "nodes once every definition is substituted" in issue.message
    assert f"limit is {budget.MAX_EXPRESSION_NODES}" in issue.message


def test_the_toml_depth_scan_ignores_brackets_in_strings_and_comments():
    forward = '"""\nx[t] = X[t:t+N]  # [[[[\n"""'
    assert budget.toml_too_deep(f"forward = {forward}\n# {'[' * 40}\n", 16) is None
    assert budget.toml_too_deep("a = '" + "[" * 40 + "'\nb = \"[\\\"[[\"\n", 16) is None
    assert budget.toml_too_deep("a = [[[[1]]]]\n", 3) == 1
    assert budget.toml_too_deep("x = 1\ny = " + "{a = " * 20, 16) == 2
    start = time.perf_counter()
    assert budget.toml_too_deep("[" * 1_000_000, 16) == 1  # stops at the first excess
    assert time.perf_counter() - start < 0.5


def test_the_bank_fits_its_budget_with_room_to_spare():
    for key, spec in load_bank().items():
        for program in spec.programs.values():
            cost = budget.cost(program, spec.dims)
            assert cost.steps <= budget.MAX_STEPS // 2, key
            assert cost.total_entries <= budget.MAX_TOTAL_ENTRIES // 2, key
        assert all(hi <= budget.MAX_DIM // 2 for _, hi in spec.dims.values()), key


def test_the_costliest_spec_the_budget_accepts_checks_in_seconds():
    start = time.perf_counter()
    result = authoring.check_text(LOOP_AT_THE_LIMITS, "worst.toml")
    assert result.refused == [] and result.meta["id"] == "worst-loop"
    assert time.perf_counter() - start < 30  # ~1.5 s on the machine of the figures


def test_the_full_finite_difference_check_is_chunked_and_equals_one_batch(monkeypatch):
    """Entry by entry, in passes of bounded size: the same errors as one batch, and
    the memory of a pass stays near its cap whatever the number of entries."""
    spec = parse_spec(BIG_DIMS.replace("N = 100", "N = [30, 32]").replace(
        "M = 100", "M = [31, 32]"))
    from server.engine.instance import _draw_values, draw_dims

    program = spec.program(())
    rng = np.random.default_rng(3)
    draw = _draw_values(spec, program, draw_dims(spec.dims, rng), rng, None, None, "test")
    keys = list(draw.values)
    shapes = {k: draw.values[k].shape for k in keys}
    args = (draw.sched, draw.leaves, draw.seeds, draw.back.grads, keys, shapes)
    whole = ref.finite_difference_errors(*args)
    monkeypatch.setattr(ref, "FD_BATCH_FLOATS", 1 << 14)  # many small passes
    tracemalloc.start()
    chunked = ref.finite_difference_errors(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert chunked.keys() == whole.keys()
    assert all(abs(chunked[k] - whole[k]) < 1e-9 and whole[k] < ref.FD_RTOL for k in keys)
    entries = sum(int(np.prod(s)) for s in shapes.values())
    # one batch would hold 2 x entries rows of every value: ~ 2 * 1100**2 floats = 19 MB
    assert peak < 8 * (2 * entries) * 64 + (4 << 20), peak


def test_the_directional_check_catches_a_wrong_rule_that_a_draw_would_hide(monkeypatch):
    spec = load_bank()["mlp-relu"]
    from server.engine.instance import BrokenProblemError, draw_instance
    from server.engine.ops import vjp as real_vjp

    def wrong_tanh_free(op, i, g, args, out, region):  # matmul's rule off by 0.1%
        c = real_vjp(op, i, g, args, out, region)
        return c * 1.001 if op == "matmul" and i == 0 else c

    draw_instance(spec, 8, verify="directional")  # the right rules pass
    monkeypatch.setattr(ref, "vjp", wrong_tanh_free)
    with pytest.raises(BrokenProblemError):
        draw_instance(spec, 8, verify="directional")
