"""The operations a forward program may use, and their backward rules.

Each operation knows three things:

- its forward value (numpy, written on the last two axes so the same code
  runs on a batch of perturbed copies for finite differences),
- its vector-Jacobian product in *denominator* layout (the gradient has the
  shape of the variable; numerator layout is its transpose, applied once at
  the end),
- the model-solution line in each layout, in the answer language of
  DESIGN.md section 5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Array = np.ndarray


def _t(a: Array) -> Array:
    return np.swapaxes(a, -1, -2)


def _sigmoid(a: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-a))


def _softmax(a: Array) -> Array:
    e = np.exp(a - a.max(axis=-2, keepdims=True))
    return e / e.sum(axis=-2, keepdims=True)


@dataclass(frozen=True)
class Elementwise:
    """An element-wise function g with its derivative g'(a) in terms of a and z = g(a)."""

    name: str
    forward: Callable[[Array], Array]
    derivative: Callable[[Array, Array], Array]
    # the derivative as answer-language text, from the input name {a} and output name {z}
    derivative_text: str
    # a non-differentiable point that inputs must stay away from (relu's kink)
    kink: float | None = None
    # inputs must be > 0 (log)
    positive_domain: bool = False


ELEMENTWISE: dict[str, Elementwise] = {
    f.name: f
    for f in (
        Elementwise("relu", lambda a: np.maximum(a, 0.0), lambda a, z: (a > 0).astype(float), "({a} > 0)", kink=0.0),
        Elementwise("sigmoid", _sigmoid, lambda a, z: z * (1.0 - z), "({z} * (1 - {z}))"),
        Elementwise("tanh", np.tanh, lambda a, z: 1.0 - z * z, "(1 - {z}**2)"),
        Elementwise("exp", np.exp, lambda a, z: z, "{z}"),
        Elementwise("log", np.log, lambda a, z: 1.0 / a, "(1 / {a})", positive_domain=True),
        Elementwise("square", np.square, lambda a, z: 2.0 * a, "(2 * {a})"),
    )
}

# operations that are not element-wise functions, by arity
BINARY_OPS = {"matmul": "@", "add": "+", "sub": "-", "mul": "*", "div": "/"}
UNARY_OPS = ("neg", "transpose", "softmax", "sum", "slice") + tuple(ELEMENTWISE)
ALL_OPS = tuple(BINARY_OPS) + UNARY_OPS


def l2_norm(x: np.ndarray) -> float:
    """``float(np.linalg.norm(x))``, bit for bit (the same ravel and dot), without
    its dispatch: the graders and the draw's checks take thousands of norms of
    small arrays, where that dispatch is most of the cost."""
    if x.dtype != np.float64:  # numpy's own rules for other types (float32 stays float32)
        return float(np.linalg.norm(x))
    flat = x.ravel(order="K")
    return math.sqrt(flat.dot(flat))


def forward(op: str, args: list, region: tuple | None = None) -> Array:
    """The value of one step. ``args`` are arrays or Python floats (constants)."""
    if op in ELEMENTWISE:
        return ELEMENTWISE[op].forward(args[0])
    a = args[0]
    if op == "matmul":
        return a @ args[1]
    if op == "add":
        return a + args[1]
    if op == "sub":
        return a - args[1]
    if op == "mul":
        return a * args[1]
    if op == "div":
        return a / args[1]
    if op == "neg":
        return -a
    if op == "transpose":
        return _t(a)
    if op == "softmax":
        return _softmax(a)
    if op == "sum":
        return a.sum(axis=(-2, -1), keepdims=True)
    if op == "slice":
        (r0, r1), (c0, c1) = region
        return a[..., r0:r1, c0:c1]
    raise ValueError(f"unknown op {op}")


def vjp(op: str, i: int, g: Array, args: list, out: Array, region: tuple | None = None) -> Array:
    """Denominator-layout gradient flowing into argument ``i`` from the output gradient ``g``."""
    if op in ELEMENTWISE:
        return g * ELEMENTWISE[op].derivative(args[0], out)
    if op == "matmul":
        return g @ _t(args[1]) if i == 0 else _t(args[0]) @ g
    if op == "add":
        return g
    if op == "sub":
        return g if i == 0 else -g
    if op == "mul":
        return g * args[1 - i]
    if op == "div":
        return g / args[1]
    if op == "neg":
        return -g
    if op == "transpose":
        return _t(g)
    if op == "softmax":
        return out * (g - (g * out).sum(axis=-2, keepdims=True))
    if op == "sum":
        return np.broadcast_to(g, args[0].shape).copy()
    if op == "slice":
        (r0, r1), (c0, c1) = region
        full = np.zeros_like(args[0])
        full[..., r0:r1, c0:c1] = g
        return full
    raise ValueError(f"unknown op {op}")


def rule_text(
    op: str,
    i: int,
    dz: str,
    names: list[str],
    z: str,
    layout: str,
    region_text: tuple[str, str] | None = None,
) -> tuple[str, str]:
    """The model-solution line for argument ``i``: (target suffix, right-hand side).

    ``names`` are the argument texts (``W1``, ``x[t]``, or a constant such as
    ``2``), ``dz`` the output gradient's text, ``z`` the output's text. The
    target suffix is empty except for slices (``[:, t:t + N]``).
    """
    num = layout == "numerator"
    a = names[0]
    if op in ELEMENTWISE:
        deriv = ELEMENTWISE[op].derivative_text.format(a=a, z=z)
        return "", f"{dz} * {deriv}.T" if num else f"{dz} * {deriv}"
    if op == "matmul":
        b = names[1]
        if num:
            return "", f"{b} @ {dz}" if i == 0 else f"{dz} @ {a}"
        return "", f"{dz} @ {b}.T" if i == 0 else f"{a}.T @ {dz}"
    if op == "add":
        return "", dz
    if op == "sub":
        return "", dz if i == 0 else f"-{dz}"
    if op == "mul":
        other = names[1 - i]
        if _is_number(other):
            return "", f"{other} * {dz}"
        return "", f"{dz} * {other}.T" if num else f"{dz} * {other}"
    if op == "div":
        return "", f"{dz} / {names[1]}"
    if op == "neg":
        return "", f"-{dz}"
    if op == "transpose":
        return "", f"{dz}.T"
    if op == "softmax":
        jac = f"(diag({z}) - {z} @ {z}.T)"
        return "", f"{dz} @ {jac}" if num else f"{jac} @ {dz}"
    if op == "sum":
        return "", f"{dz} * ones_like({a}.T)" if num else f"{dz} * ones_like({a})"
    if op == "slice":
        rows, cols = region_text
        return (f"[{cols}, {rows}]" if num else f"[{rows}, {cols}]"), dz
    raise ValueError(f"unknown op {op}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
