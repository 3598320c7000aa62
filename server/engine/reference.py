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

from server.engine import progress
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


# A batched forward pass holds (rows × every value's entries) floats: the rows of one
# pass are capped so that it stays near 32 MB whatever the spec's dims (the budget,
# server/engine/budget.py, caps the entries; this caps the memory of checking them).
FD_BATCH_FLOATS = 1 << 22
DIRECTIONS = 2  # random directions per value in a directional check


def finite_difference_errors(
    sched: list[Exec],
    leaves: Mapping[str, np.ndarray],
    seeds: Mapping[Key, np.ndarray],
    grads: Mapping[Key, np.ndarray],
    keys: list[Key],
    shapes: Mapping[Key, tuple[int, int]],
    what: str = "",
) -> dict[Key, float]:
    """Relative error between analytic gradients and central differences of L, for
    every entry of every key: two batch rows (plus and minus a step) per entry, run
    as batched forward passes of at most ``FD_BATCH_FLOATS`` floats each, so the
    check costs a few evaluations of the program and bounded memory."""
    sizes = {k: int(np.prod(shapes[k])) for k in keys}

    def step(row: np.ndarray, item: tuple[Key, int]) -> None:
        row[item[1]] = FD_STEP

    entries = [(k, i) for k in keys for i in range(sizes[k])]
    differences = iter(_central_differences(entries, step, sched, leaves, seeds, shapes,
                                            f"the finite-difference check of{{}}, {what}"))
    errors: dict[Key, float] = {}
    for k in keys:
        fd = np.fromiter(differences, float, count=sizes[k])
        an = grads.get(k)
        an = np.zeros(sizes[k]) if an is None else an.reshape(-1)
        scale = max(l2_norm(an), l2_norm(fd), FD_NORM_FLOOR)
        errors[k] = l2_norm(fd - an) / scale
    return errors


def directional_errors(
    sched: list[Exec],
    leaves: Mapping[str, np.ndarray],
    seeds: Mapping[Key, np.ndarray],
    grads: Mapping[Key, np.ndarray],
    keys: list[Key],
    shapes: Mapping[Key, tuple[int, int]],
    what: str = "",
    seed: int = 0,
) -> dict[Key, float]:
    """The cheap check: per key, central differences of L along ``DIRECTIONS`` random
    unit directions v against ``<gradient, v>``, relative to the gradient's norm
    (``|<g, v>| <= |g|``). Four batch rows per key instead of two per entry: what a
    student's draw uses, the spec's saved check having verified every entry."""
    rng = np.random.default_rng(seed)
    directions = {}
    for k in keys:
        v = rng.standard_normal((DIRECTIONS, int(np.prod(shapes[k]))))
        directions[k] = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)

    def step(row: np.ndarray, item: tuple[Key, int]) -> None:
        row[:] = FD_STEP * directions[item[0]][item[1]]

    items = [(k, d) for k in keys for d in range(DIRECTIONS)]
    differences = _central_differences(items, step, sched, leaves, seeds, shapes,
                                       f"the directional finite-difference check of{{}}, {what}")
    errors: dict[Key, float] = dict.fromkeys(keys, 0.0)
    for (k, d), fd in zip(items, differences):
        g = grads.get(k)
        g = np.zeros(directions[k].shape[1]) if g is None else g.reshape(-1)
        scale = max(l2_norm(g), abs(fd), FD_NORM_FLOOR)
        errors[k] = max(errors[k], abs(fd - float(g @ directions[k][d])) / scale)
    return errors


def _central_differences(items: list[tuple[Key, int]], step, sched, leaves, seeds, shapes,
                         stage: str) -> list[float]:
    """(L(x + s) - L(x - s)) / 2h for each item, its step s written into a row of its
    key by ``step(row, item)``; in batched passes of bounded size (``_chunks``).
    ``stage``: the progress text, ``{}`` standing for the values of a pass."""
    out: list[float] = []
    for chunk in _chunks(items, shapes, leaves):
        names = list(dict.fromkeys(k for k, _ in chunk))
        shown = ", ".join(f"{_label(k)} ({shapes[k][0]}×{shapes[k][1]})" for k in names[:3])
        more = f" and {len(names) - 3} other values" if len(names) > 3 else ""
        progress.stage(stage.format(f" {shown}{more}").rstrip(", "))
        rows = 2 * len(chunk)
        perturb: dict[Key, np.ndarray] = {}
        for j, item in enumerate(chunk):
            k = item[0]
            delta = perturb.get(k)
            if delta is None:
                delta = perturb[k] = np.zeros((rows, int(np.prod(shapes[k]))))
            step(delta[2 * j], item)
            delta[2 * j + 1] = -delta[2 * j]
        for k, delta in perturb.items():
            perturb[k] = delta.reshape((rows,) + tuple(shapes[k]))
        L = np.broadcast_to(loss(run_forward(sched, leaves, perturb), seeds), (rows,))
        out.extend(((L[0::2] - L[1::2]) / (2 * FD_STEP)).tolist())
    return out


def _chunks(items: list, shapes: Mapping[Key, tuple[int, int]],
            leaves: Mapping[str, np.ndarray]) -> list[list]:
    """``items`` (two batch rows each) in runs whose forward pass holds at most
    ``FD_BATCH_FLOATS`` floats (every value of a row: ``shapes`` names all the
    program's values but the constant leaves)."""
    per_row = sum(int(np.prod(s)) for s in shapes.values()) + sum(
        v.size for name, v in leaves.items() if name not in shapes)
    size = max(1, FD_BATCH_FLOATS // max(1, 2 * per_row))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _label(key: Key) -> str:
    return f"{key[0]}[{key[1]}]" if isinstance(key, tuple) else key


def to_layout(grad: np.ndarray, layout: str) -> np.ndarray:
    return grad.T.copy() if layout == "numerator" else grad
