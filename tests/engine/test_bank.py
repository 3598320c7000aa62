"""Every problem in the bank, over many seeds: verified, deterministic, discriminating."""

import json

import numpy as np
import pytest

from server.engine import reference as ref
from server.engine.bank import load_bank
from server.engine.instance import draw_instance
from server.engine.ops import ELEMENTWISE
from server.engine.problem import draw
from server.engine.spec import parse_spec

BANK = load_bank()
ARRAY_PROBLEMS = [s for s in BANK.values() if s.answer_kind != "expression"]
SEEDS = range(50)
REQUIRED = {
    "rule-1a-scalar-mult",
    "rule-2a-scalar-add",
    "rule-3a-scalar-chain",
    "rule-4a-generalized-chain",
    "rule-1b-matmul",
    "rule-2b-vector-add",
    "rule-3b-jacobian",
    "rule-4b-generalized-chain",
    "rule-5-elementwise-product",
    "rule-6-elementwise-function",
    "mlp-relu",
    "scan-mlp",
    "mlp-random",
}


def test_bank_has_the_required_problems_and_more():
    missing = REQUIRED - set(BANK)
    assert not missing, f"missing from problems/: {sorted(missing)}"
    assert len(BANK) >= len(REQUIRED) + 3
    for spec in BANK.values():
        assert spec.statement, f"{spec.id} has no statement for students"


@pytest.mark.parametrize("spec", ARRAY_PROBLEMS, ids=lambda s: s.id)
def test_fifty_seeds_are_verified_deterministic_and_discriminating(spec):
    for seed in SEEDS:
        inst = draw_instance(spec, seed)  # raises if FD disagrees or no draw is acceptable
        again = draw_instance(spec, seed)
        assert json.dumps(inst.to_json()) == json.dumps(again.to_json())
        program = spec.program(inst.choice_index)
        # dims distinct wherever the ranges allow it
        values = list(inst.dims.values())
        lo = min((r[0] for r in spec.dims.values()), default=0)
        hi = max((r[1] for r in spec.dims.values()), default=0)
        if len(values) <= hi - lo + 1 and _distinct_possible(spec.dims):
            assert len(set(values)) == len(values), (spec.id, seed, inst.dims)
        # kink margins and active/inactive relu units
        for step, _loop in program.steps():
            fn = ELEMENTWISE.get(step.op)
            if fn is None or fn.kink is None:
                continue
            a = inst.values[step.args[0].name]
            a = np.concatenate([x.ravel() for x in a]) if isinstance(a, list) else a.ravel()
            assert np.min(np.abs(a)) >= spec.kink_margin
            if a.size > 1:
                assert (a > 0).any() and (a < 0).any()
        # every relevant gradient is non-zero, values as shown
        for name in program.influencing:
            g = inst.reference.get("d" + name)
            if g is None:
                continue
            parts = g if isinstance(g, list) else [g]
            assert all(np.abs(p).max() > 1e-9 for p in parts), (spec.id, seed, name)
        for name in program.leaves:
            v = inst.values[name]
            shown = np.array([[float(f"{x:.{spec.decimals}f}") for x in row] for row in v])
            assert np.array_equal(v, shown)


def _distinct_possible(ranges) -> bool:
    used: set[int] = set()
    for lo, hi in sorted(ranges.values(), key=lambda r: r[1] - r[0]):
        free = [v for v in range(lo, hi + 1) if v not in used]
        if not free:
            return False
        used.add(free[0])
    return True


def plain_finite_differences(spec, inst, h=1e-6):
    """An independent, unbatched central-difference gradient of L for every leaf entry."""
    program = spec.program(inst.choice_index)
    sched = ref.schedule(program, inst.dims)
    leaves = {n: inst.values[n].copy() for n in program.leaves}
    dgiven = inst.values["d" + spec.given]
    dgiven = dgiven if isinstance(dgiven, list) else [dgiven]
    keys = [ex.key for ex in sched if ex.step.target == spec.given]

    def L(lv):
        vals = ref.run_forward(sched, lv)
        return sum(
            float(np.sum(ref.to_layout(d, inst.layout) * vals[k])) for d, k in zip(dgiven, keys)
        )

    out = {}
    for name, v in leaves.items():
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            plus = {k: x.copy() for k, x in leaves.items()}
            minus = {k: x.copy() for k, x in leaves.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            g[idx] = (L(plus) - L(minus)) / (2 * h)
        out[name] = g
    return out


@pytest.mark.parametrize("spec", ARRAY_PROBLEMS, ids=lambda s: s.id)
def test_reference_matches_independent_finite_differences(spec):
    for seed in (0, 1, 2):
        inst = draw_instance(spec, seed)
        fd = plain_finite_differences(spec, inst)
        for name, g in fd.items():
            if spec.vars[name].role == "const":
                continue
            r = ref.to_layout(
                inst.reference["d" + name], inst.layout
            )  # back to the variable's shape
            assert np.allclose(r, g, rtol=1e-5, atol=1e-7), (spec.id, seed, name)


@pytest.mark.parametrize("spec", ARRAY_PROBLEMS, ids=lambda s: s.id)
def test_denominator_layout_references_are_transposes(spec):
    text = spec.source
    if "layout =" in text:
        text = text.replace('layout = "numerator"', 'layout = "denominator"')
    else:
        text = 'layout = "denominator"\n' + text
    other = parse_spec(text, spec.path)
    if spec.layout == "denominator":
        return
    assert other.layout == "denominator"
    for seed in (0, 7):
        a, b = draw_instance(spec, seed), draw_instance(other, seed)
        for name, g in a.reference.items():
            gs = g if isinstance(g, list) else [g]
            hs = b.reference[name] if isinstance(g, list) else [b.reference[name]]
            for x, y in zip(gs, hs):
                assert np.array_equal(x.T, y), (spec.id, name)


def test_expression_problems_draw_deterministically():
    for spec in BANK.values():
        if spec.answer_kind == "expression":
            for seed in SEEDS:
                assert draw(spec, seed).to_json() == draw(spec, seed).to_json()
