"""Reverse-mode reference gradients over a compiled forward program, and
their verification by central finite differences.

Values are keyed by ``name`` for whole variables and ``(name, t)`` for
per-step values inside a loop. Gradients are computed in denominator layout
(the shape of the variable); ``to_layout`` turns them into the problem's
layout at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from server.engine.ops import forward as op_forward
from server.engine.ops import l2_norm, vjp
from server.engine.program import Loop, Program, Step

Key = str | tuple[str, int]

FD_STEP = 1e-5
FD_RTOL = 1e-6
# gradients are compared relative to their norm, floored so that a gradient
# that is (near) zero is compared absolutely instead of dividing noise by noise
FD_NORM_FLOOR = 1e-3


@dataclass(frozen=True)
class Exec:
    """One step of the program at one loop index."""

    index: int
    step: Step
    t: int | None
    key: Key
    args: tuple[Key | float, ...]
    region: tuple[tuple[int, int], tuple[int, int]] | None


def key_of(name: str, indexed: bool, t: int | None) -> Key:
    return (name, t) if indexed else name


def key_name(key: Key) -> str:
    return key if isinstance(key, str) else key[0]


def schedule(program: Program, dims: Mapping[str, int]) -> list[Exec]:
    """Unroll loops into the exact sequence of steps for these dims."""
    out: list[Exec] = []

    def add(step: Step, t: int | None, loop_var: str | None) -> None:
        env = dict(dims)
        if loop_var is not None:
            env[loop_var] = t
        args = tuple(
            a.const if a.name is None else key_of(a.name, a.indexed, t) for a in step.args
        )
        region = None
        if step.region is not None:
            region = tuple((lo.eval(env), hi.eval(env)) for lo, hi in step.region)
        out.append(Exec(len(out), step, t, key_of(step.target, step.indexed, t), args, region))

    for item in program.items:
        if isinstance(item, Loop):
            for t in range(item.start.eval(dims), item.stop.eval(dims)):
                for step in item.body:
                    add(step, t, item.var)
        else:
            add(item, None, None)
    return out


def run_forward(
    sched: list[Exec],
    leaves: Mapping[str, np.ndarray],
    perturb: Mapping[Key, np.ndarray] | None = None,
) -> dict[Key, np.ndarray]:
    """Evaluate the program. ``perturb`` adds a (batched) delta to a value
    right after it is computed, which is how finite differences reach
    intermediates as well as leaves."""
    values: dict[Key, np.ndarray] = {}
    for name, value in leaves.items():
        values[name] = value + perturb[name] if perturb and name in perturb else value
    for ex in sched:
        args = [a if isinstance(a, float) else values[a] for a in ex.args]
        out = op_forward(ex.step.op, args, ex.region)
        if perturb and ex.key in perturb:
            out = out + perturb[ex.key]
        values[ex.key] = out
    return values


@dataclass
class Backward:
    grads: dict[Key, np.ndarray]  # denominator layout
    # per variable key, the contributions in the order reverse mode adds them: (exec index, value)
    contributions: dict[Key, list[tuple[int, np.ndarray]]]


def run_backward(
    sched: list[Exec],
    values: Mapping[Key, np.ndarray],
    seeds: Mapping[Key, np.ndarray],
    no_grad: frozenset[str] = frozenset(),
) -> Backward:
    grads: dict[Key, np.ndarray] = {k: v.copy() for k, v in seeds.items()}
    contributions: dict[Key, list[tuple[int, np.ndarray]]] = {}
    for ex in reversed(sched):
        g = grads.get(ex.key)
        if g is None:
            continue
        args = [a if isinstance(a, float) else values[a] for a in ex.args]
        for i, a in enumerate(ex.args):
            if isinstance(a, float) or key_name(a) in no_grad:
                continue
            c = vjp(ex.step.op, i, g, args, values[ex.key], ex.region)
            contributions.setdefault(a, []).append((ex.index, c))
            grads[a] = grads[a] + c if a in grads else c
    return Backward(grads, contributions)


def loss(values: Mapping[Key, np.ndarray], seeds: Mapping[Key, np.ndarray]) -> np.ndarray:
    """L = <d(given), given>, per batch row when values are batched."""
    return sum((seeds[k] * values[k]).sum(axis=(-2, -1)) for k in seeds)


def finite_difference_errors(
    sched: list[Exec],
    leaves: Mapping[str, np.ndarray],
    seeds: Mapping[Key, np.ndarray],
    grads: Mapping[Key, np.ndarray],
    keys: list[Key],
    shapes: Mapping[Key, tuple[int, int]],
) -> dict[Key, float]:
    """Relative error between analytic gradients and central differences of L,
    for every key at once: all perturbations run as one batched forward pass
    (two batch rows per entry), so verification costs about one evaluation."""
    sizes = [int(np.prod(shapes[k])) for k in keys]
    total = sum(sizes)
    if total == 0:
        return {}
    rows = 2 * total
    perturb: dict[Key, np.ndarray] = {}
    offsets: dict[Key, int] = {}
    offset = 0
    for k, n in zip(keys, sizes):
        delta = np.zeros((rows, n))
        idx = np.arange(n)
        delta[offset + 2 * idx, idx] = FD_STEP
        delta[offset + 2 * idx + 1, idx] = -FD_STEP
        perturb[k] = delta.reshape((rows,) + tuple(shapes[k]))
        offsets[k] = offset
        offset += 2 * n
    values = run_forward(sched, leaves, perturb)
    L = loss(values, seeds)
    errors: dict[Key, float] = {}
    for k, n in zip(keys, sizes):
        o = offsets[k]
        fd = (L[o : o + 2 * n : 2] - L[o + 1 : o + 2 * n : 2]) / (2 * FD_STEP)
        an = grads.get(k)
        an = np.zeros(n) if an is None else an.reshape(-1)
        scale = max(l2_norm(an), l2_norm(fd), FD_NORM_FLOOR)
        errors[k] = l2_norm(fd - an) / scale
    return errors


def to_layout(grad: np.ndarray, layout: str) -> np.ndarray:
    return grad.T.copy() if layout == "numerator" else grad
