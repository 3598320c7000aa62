"""Broken problems are refused; model solutions read like the course's."""

import numpy as np
import pytest

from server.engine import ops
from server.engine.bank import load_bank
from server.engine.instance import BrokenProblemError, draw_instance
from server.engine.solution import model_solution

from .course import SEED_ANSWER

BANK = load_bank()



def test_mlp_relu_model_solution_is_the_course_answer():
    spec = BANK["mlp-relu"]
    lines = SEED_ANSWER.splitlines()
    # the derived program takes the operands of z2 = z1 + b1 in order (dz1, then db1)
    lines[10], lines[11] = "11. dz1 = dz2", "12. db1 = dz2"
    assert model_solution(spec, spec.program(())) == "\n".join(lines)


def test_scan_model_solution_accumulates_shared_parameters_and_slices():
    spec = BANK["scan-mlp"]
    text = model_solution(spec, spec.program(()))
    lines = text.splitlines()
    assert lines[0] == "for t in range(T - N + 1):"
    assert "    3. dW3 += z6[t] @ dz7[t]" in lines
    assert "    1. dz7[t] = dO[t]" in lines
    assert lines[-1] == "    15. dX[:, t:t + N] += dx[t]"


def _broken_vjp(op, i, g, args, out, region=None, real=ops.vjp):
    """The engine's backward rules, with the matmul's first input's 1% off."""
    value = real(op, i, g, args, out, region)
    return value * 1.01 if op == "matmul" and i == 0 else value


def test_a_wrong_backward_rule_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setattr("server.engine.reference.vjp", _broken_vjp)
    with pytest.raises(BrokenProblemError) as info:
        draw_instance(BANK["mlp-relu"], 0)
    assert info.value.variable in {"W1", "W2", "W3"}
    assert "disagrees with finite differences" in str(info.value)


def test_l2_norm_is_numpys_norm_bit_for_bit():
    """The graders' and the draw's fast norm returns exactly what np.linalg.norm
    does (the same ravel order and dot), so scores and draws do not move."""
    from server.engine.ops import l2_norm

    rng = np.random.default_rng(7)
    arrays = [rng.normal(size=shape) * scale
              for shape in [(1, 1), (3, 1), (1, 5), (4, 7), (9, 3), (0, 3), (6,)]
              for scale in (1e-9, 1.0, 3e7)]
    arrays += [a.T for a in arrays] + [a[::2] for a in arrays]  # views in other orders
    arrays += [np.arange(6).reshape(2, 3), np.float64(2.5) * np.ones((2, 2)),
               rng.normal(size=(5, 3)).astype(np.float32)]
    for a in arrays:
        assert l2_norm(a) == float(np.linalg.norm(a)), a.shape
        assert isinstance(l2_norm(a), float)


def test_hidden_draws_are_checked_by_finite_differences_once_per_structure_and_dims(monkeypatch):
    from server.engine import instance as engine_instance

    spec = BANK["mlp-relu"]
    own = draw_instance(spec, 5)
    seeds = engine_instance.legacy_hidden_seeds(own)
    monkeypatch.setattr(engine_instance, "_VERIFIED", set())
    real, calls = engine_instance._verify, []
    monkeypatch.setattr(engine_instance, "_verify",
                        lambda *a, **k: calls.append(k.get("mode")) or real(*a, **k))
    first = engine_instance.draw_hidden_instances(spec, own, seeds)
    assert len(calls) == len({tuple(sorted(h.dims.items())) for h in first}) >= 1
    again = engine_instance.draw_hidden_instances(spec, own, seeds)
    assert len(calls) == len({tuple(sorted(h.dims.items())) for h in first})  # no new check
    for a, b in zip(first, again):  # the same values whichever way: stored seeds regrade alike
        assert a.dims == b.dims
        assert all(np.array_equal(a.values[k], b.values[k]) for k in a.values)
    draw_instance(spec, 5)  # the student's own instance is always checked
    assert len(calls) == len({tuple(sorted(h.dims.items())) for h in first}) + 1
    # hidden draws along random directions; a draw for staff (the default) entry by entry
    assert set(calls[:-1]) == {"directional"} and calls[-1] == "full"


def test_a_wrong_backward_rule_is_refused_on_a_hidden_draw_too(monkeypatch):
    from server.engine import instance as engine_instance

    spec = BANK["mlp-relu"]
    own = draw_instance(spec, 6)
    monkeypatch.setattr(engine_instance, "_VERIFIED", set())
    monkeypatch.setattr("server.engine.reference.vjp", _broken_vjp)
    with pytest.raises(BrokenProblemError):
        engine_instance.draw_hidden_instances(spec, own, [11, 12])
