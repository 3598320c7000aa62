"""The operations a forward program may use: one record per operation, in ``OPS``.

Each record knows everything about its operation, and the rest of the engine
reads the table instead of naming operations:

- its arity and how a forward line writes it (``a @ b``, ``-a``, ``a.T``,
  ``f(a)``, ``a[r0:r1, c0:c1]``),
- its shape rule over the dims forms (the compiler, ``engine/program.py``),
- its forward value (numpy, written on the last two axes so the same code
  runs on a batch of perturbed copies for finite differences),
- its vector-Jacobian product in *denominator* layout (the gradient has the
  shape of the variable; numerator layout is its transpose, applied once at
  the end),
- the model-solution line in each layout, in the answer language of
  docs/design.md section 5 (``engine/solution.py``),
- its MathML on the problem page (``engine/render.py``),
- a kink that drawn inputs keep a margin from, or a domain (``engine/instance.py``).

How to add an operation: docs/design.md, "How to add an operation".
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from server.engine.dimexpr import Lin, shape_text

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
        Elementwise(
            "relu",
            lambda a: np.maximum(a, 0.0),
            lambda a, z: (a > 0).astype(float),
            "({a} > 0)",
            kink=0.0,
        ),
        Elementwise("sigmoid", _sigmoid, lambda a, z: z * (1.0 - z), "({z} * (1 - {z}))"),
        Elementwise("tanh", np.tanh, lambda a, z: 1.0 - z * z, "(1 - {z}**2)"),
        Elementwise("exp", np.exp, lambda a, z: z, "{z}"),
        Elementwise("log", np.log, lambda a, z: 1.0 / a, "(1 / {a})", positive_domain=True),
        Elementwise("square", np.square, lambda a, z: 2.0 * a, "(2 * {a})"),
        Elementwise("sqrt", np.sqrt, lambda a, z: 0.5 / z, "(0.5 / {z})",
                    positive_domain=True),
    )
}


class ShapeError(ValueError):
    """A forward line whose operands' shapes do not fit the operation (the message says why)."""


Region = tuple  # ((row start, row stop), (col start, col stop)), for slices
Shape = tuple  # (rows, cols) as dims forms (server.engine.dimexpr.Lin)


@dataclass(frozen=True)
class Operation:
    """One operation of forward programs.

    ``shape(text, names, shapes)`` returns the output shape or raises
    ``ShapeError``; ``names`` are the operands' names (None for a constant,
    whose shape is None). ``forward(args, region)`` and ``vjp(i, g, args, out,
    region)`` compute on arrays (constants are Python floats). ``rule(i, dz,
    names, z, numerator, region_text)`` is the model-solution line for operand
    ``i``: (target suffix, right-hand side). ``mathml(args, region_text)`` is
    the presentation MathML of the right-hand side, from sympy operands.
    """

    name: str
    arity: int  # 1 or 2
    syntax: str  # "call" f(a), "infix" a OP b, "prefix" OP a, "postfix" a.T, "slice" a[...]
    shape: Callable[[str, list, list], Shape]
    forward: Callable[[list, Region | None], Array]
    vjp: Callable[[int, Array, list, Array, Region | None], Array]
    rule: Callable[[int, str, list, str, bool, tuple | None], tuple[str, str]]
    mathml: Callable[[list, tuple | None], str]
    symbol: str = ""  # the operator, for infix, prefix and postfix syntax
    constants: str = "any"  # where constants may be operands: "any", "none", "second"
    kink: float | None = None  # a non-differentiable input that drawn inputs stay away from
    positive_domain: bool = False  # drawn inputs must be > 0 (log)
    # the rule and the MathML read the operand's shape as text (rows, cols) in region_text
    # (a mean divides by the count of what it averages)
    shape_text: bool = False
    # the gaps that must stay at least the kink margin wide (a maximum's top two entries:
    # near a tie the argmax flips and the gradient jumps)
    gaps: Callable[[Array], Array] | None = None
    # the mistakes the grader names: mistakes(i, g, args, out, region_text) -> [(the wrong
    # gradient of operand i, denominator layout; the message, with {var} and {source})]
    mistakes: Callable[[int, Array, list, Array, tuple | None], list] | None = None


def _presentation(expr) -> str:
    from sympy.printing.mathml import mathml

    return mathml(expr, printer="presentation", order="none")


def elementwise_op(fn: Elementwise) -> Operation:
    def rule(i, dz, names, z, num, region_text):
        deriv = fn.derivative_text.format(a=names[0], z=z)
        return "", f"{dz} * {deriv}.T" if num else f"{dz} * {deriv}"

    return Operation(
        name=fn.name, arity=1, syntax="call", shape=lambda text, names, shapes: shapes[0],
        forward=lambda args, region: fn.forward(args[0]),
        vjp=lambda i, g, args, out, region: g * fn.derivative(args[0], out),
        rule=rule, mathml=_call_mathml(fn.name), constants="none", kink=fn.kink,
        positive_domain=fn.positive_domain)


def _binary_shape(symbol: str) -> Callable[[str, list, list], Shape]:
    def shape(text: str, names: list, shapes: list) -> Shape:
        if shapes[0] is None or shapes[1] is None:
            return shapes[0] if shapes[1] is None else shapes[1]
        if shapes[0] != shapes[1]:
            raise ShapeError(
                f"shape mismatch in '{text}': {names[0]} is {shape_text(shapes[0])} and "
                f"{names[1]} is {shape_text(shapes[1])}; element-wise {symbol} needs equal "
                "shapes")
        return shapes[0]

    return shape


def _matmul_shape(text: str, names: list, shapes: list) -> Shape:
    if shapes[0] is None or shapes[1] is None:
        raise ShapeError(f"'{text}': @ needs two variables; use * to scale by a constant")
    (m, n), (n2, p) = shapes
    if n != n2:
        raise ShapeError(
            f"shape mismatch in '{text}': {names[0]} is {shape_text((m, n))} and "
            f"{names[1]} is {shape_text((n2, p))} ({n} columns vs {n2} rows)")
    return (m, p)


def _matmul_rule(i, dz, names, z, num, region_text):
    a, b = names
    if num:
        return "", f"{b} @ {dz}" if i == 0 else f"{dz} @ {a}"
    return "", f"{dz} @ {b}.T" if i == 0 else f"{a}.T @ {dz}"


def _mul_rule(i, dz, names, z, num, region_text):
    other = names[1 - i]
    if _is_number(other):
        return "", f"{other} * {dz}"
    return "", f"{dz} * {other}.T" if num else f"{dz} * {other}"


def _matrix_args(args) -> bool:
    import sympy

    return all(isinstance(a, sympy.MatrixExpr) for a in args)


def _add_mathml(args, region_text):
    import sympy

    return _presentation(sympy.MatAdd(*args, evaluate=False) if _matrix_args(args)
                         else sympy.Add(*args, evaluate=False))


def _sub_mathml(args, region_text):
    import sympy

    return _presentation(sympy.MatAdd(args[0], -args[1], evaluate=False) if _matrix_args(args)
                         else sympy.Add(args[0], -args[1], evaluate=False))


def _mul_mathml(args, region_text):
    import sympy

    return _presentation(sympy.HadamardProduct(*args, evaluate=False) if _matrix_args(args)
                         else sympy.MatMul(*args, evaluate=False))


def _matmul_mathml(args, region_text):
    import sympy

    return _presentation(sympy.MatMul(*args, evaluate=False))


def _div_mathml(args, region_text):
    return (f"<mfrac><mrow>{_presentation(args[0])}</mrow>"
            f"<mrow>{_presentation(args[1])}</mrow></mfrac>")


def _mul_mistakes(i, g, args, out, region_text):
    c = args[1 - i]
    if isinstance(c, np.ndarray) or c in (0.0, 1.0):
        return []
    shown = int(c) if float(c).is_integer() else c
    return [(g, f"d{{var}} is missing the factor {shown} of '{{source}}': a constant scale "
                "(such as attention's 1/sqrt(d)) scales the gradient too")]


def _softmax_mistakes(i, g, args, out, region_text):
    return [
        (g * out * (1 - out), "d{var} uses only the diagonal of the softmax Jacobian: in "
         "'{source}' every output depends on every input of its row (column), so the "
         "Jacobian is diag(a) - a a^T"),
        (g * out, "d{var} leaves out the - a a^T part of the softmax Jacobian of '{source}': "
         "subtract the a-weighted sum of the gradient"),
    ]


def _mean_mistake(count: int, text: str, vjp: Array) -> list:
    if count < 2:
        return []
    return [(vjp * count, f"d{{var}} is missing the mean's 1/{text}: '{{source}}' averages "
                          f"{count} entries, so each receives 1/{text} of the gradient")]


def _count_text(texts) -> str:
    return " * ".join(_count(t) for t in texts if t != "1") or "1"


def _div_rule(i, dz, names, z, num, region_text):
    a, b = names
    bt = b if _is_number(b) or not num else f"{b}.T"
    if i == 0:
        return "", f"{dz} / {bt}"
    zt = f"{z}.T" if num else z
    return "", f"-{dz} * {zt} / {bt}"


def _softmax_shape(text: str, names: list, shapes: list) -> Shape:
    if shapes[0][1] != Lin(1):
        raise ShapeError(f"softmax applies to a column vector; {names[0]} is "
                         f"{shape_text(shapes[0])}")
    return shapes[0]


def _sum_shape(text: str, names: list, shapes: list) -> Shape:
    return (Lin(1), Lin(1))


def _softmax_rule(i, dz, names, z, num, region_text):
    jac = f"(diag({z}) - {z} @ {z}.T)"
    return "", f"{dz} @ {jac}" if num else f"{jac} @ {dz}"


def _softmax_rows(a: Array) -> Array:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_rows_rule(i, dz, names, z, num, region_text):
    # each row's Jacobian diag(z_i) - z_i^T z_i; the row sums of dz * z broadcast along the
    # row by a product with a square matrix of ones (the answer language does not broadcast)
    if num:
        return "", f"{z}.T * ({dz} - ones_like({z}.T @ {z}) @ ({dz} * {z}.T))"
    return "", f"{z} * ({dz} - ({dz} * {z}) @ ones_like({z}.T @ {z}))"


def _count(text: str) -> str:
    return text if text.isidentifier() or text.isdigit() else f"({text})"


def _mean_rule(i, dz, names, z, num, region_text):
    counts = [_count(d) for d in region_text if d != "1"] or ["1"]
    count = counts[0] if len(counts) == 1 else f"({' * '.join(counts)})"
    a = f"{names[0]}.T" if num else names[0]
    return "", f"{dz} * ones_like({a}) / {count}"


# Reductions along one axis keep 2-D shapes: axis=0 gives a row (1×n), axis=1 a column
# (m×1). Their gradients spread the output gradient back with diag(...) and a matrix of
# ones, so that no rule relies on broadcasting.
_SPREAD = {  # (axis, numerator) -> the output gradient spread over the operand's shape
    (0, False): "ones_like({a}) @ diag({dz})",
    (0, True): "diag({dz}) @ ones_like({a}.T)",
    (1, False): "diag({dz}) @ ones_like({a})",
    (1, True): "ones_like({a}.T) @ diag({dz})",
}
_ARGMAX = {  # axis -> the mask of the maxima, 1 where the operand equals its axis's maximum
    0: "({a} >= ones_like({a}) @ diag({z}))",
    1: "({a} >= diag({z}) @ ones_like({a}))",
}


def _reduction(kind: str, axis: int) -> Operation:
    """``sum(X, axis=k)``, ``mean(X, axis=k)`` and ``max(X, axis=k)``: record ``<kind>_axis<k>``."""

    def shape(text: str, names: list, shapes: list) -> Shape:
        rows, cols = shapes[0]
        return (Lin(1), cols) if axis == 0 else (rows, Lin(1))

    def forward(args, region):
        a = args[0]
        if kind == "max":
            return a.max(axis=axis - 2, keepdims=True)
        return a.sum(axis=axis - 2, keepdims=True) / (a.shape[axis - 2] if kind == "mean" else 1)

    def vjp(i, g, args, out, region):
        a = args[0]
        if kind == "max":
            return np.where(a == out, g, 0.0)
        return np.broadcast_to(g / (a.shape[axis - 2] if kind == "mean" else 1), a.shape).copy()

    def rule(i, dz, names, z, num, region_text):
        a = names[0]
        if kind == "max":
            mask = _ARGMAX[axis].format(a=a, z=z)
            if axis == 0:
                return "", f"diag({dz}) @ {mask}.T" if num else f"{mask} @ diag({dz})"
            return "", f"{mask}.T @ diag({dz})" if num else f"diag({dz}) @ {mask}"
        text = _SPREAD[(axis, num)].format(a=a, dz=dz)
        if kind == "mean":
            text += f" / {_count(region_text[axis])}"
        return "", text

    def mistakes(i, g, args, out, region_text):
        a = args[0]
        if kind == "mean":
            return _mean_mistake(a.shape[axis - 2], _count_text([region_text[axis]]),
                                 vjp(i, g, args, out, None))
        if kind == "max":
            return [(np.broadcast_to(g, a.shape), "d{var} sends the gradient of '{source}' to "
                     "every element; a maximum passes it only to the largest entry (its argmax "
                     "mask)")]
        return []

    def gaps(a: Array) -> Array:
        if a.shape[axis - 2] < 2:
            return np.array([np.inf])
        top = np.sort(a, axis=axis - 2)
        return np.take(top, -1, axis=axis - 2) - np.take(top, -2, axis=axis - 2)

    return Operation(f"{kind}_axis{axis}", 1, "axis_call", shape, forward, vjp, rule,
                     _axis_mathml(kind, axis), constants="none", shape_text=kind == "mean",
                     gaps=gaps if kind == "max" else None,
                     mistakes=mistakes if kind != "sum" else None)


def _axis_mathml(name: str, axis: int) -> Callable[[list, tuple | None], str]:
    def mathml(args, region_text):
        return (f"<mrow><mi>{name}</mi><mo>(</mo>{_presentation(args[0])}<mo>,</mo>"
                f"<mi>axis</mi><mo>=</mo><mn>{axis}</mn><mo>)</mo></mrow>")

    return mathml


def _call_mathml(name: str) -> Callable[[list, tuple | None], str]:
    def mathml(args, region_text):
        import sympy

        return _presentation(sympy.Function(name)(args[0]))

    return mathml


def _slice_forward(args, region):
    (r0, r1), (c0, c1) = region
    return args[0][..., r0:r1, c0:c1]


def _slice_vjp(i, g, args, out, region):
    (r0, r1), (c0, c1) = region
    full = np.zeros_like(args[0])
    full[..., r0:r1, c0:c1] = g
    return full


def _slice_rule(i, dz, names, z, num, region_text):
    rows, cols = region_text
    return (f"[{cols}, {rows}]" if num else f"[{rows}, {cols}]"), dz


def _slice_mathml(args, region_text):
    inner = _presentation(args[0])
    rows, cols = region_text
    index = rows if cols == ":" else f"{rows}, {cols}"
    escaped = index.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<mrow>{inner}<mo>[</mo><mi>{escaped}</mi><mo>]</mo></mrow>"


def _neg_mathml(args, region_text):
    return _presentation(-args[0])


def _transpose_mathml(args, region_text):
    import sympy

    return _presentation(sympy.Transpose(args[0]))


def _unchanged_shape(text: str, names: list, shapes: list) -> Shape:
    return shapes[0]


def _transposed_shape(text: str, names: list, shapes: list) -> Shape:
    return shapes[0][::-1]


OPS: dict[str, Operation] = {op.name: op for op in (
    *(elementwise_op(fn) for fn in ELEMENTWISE.values()),
    Operation("matmul", 2, "infix", _matmul_shape, lambda args, r: args[0] @ args[1],
              lambda i, g, args, out, r: g @ _t(args[1]) if i == 0 else _t(args[0]) @ g,
              _matmul_rule, _matmul_mathml, symbol="@", constants="none"),
    Operation("add", 2, "infix", _binary_shape("+"), lambda args, r: args[0] + args[1],
              lambda i, g, args, out, r: g,
              lambda i, dz, names, z, num, rt: ("", dz), _add_mathml, symbol="+"),
    Operation("sub", 2, "infix", _binary_shape("-"), lambda args, r: args[0] - args[1],
              lambda i, g, args, out, r: g if i == 0 else -g,
              lambda i, dz, names, z, num, rt: ("", dz if i == 0 else f"-{dz}"), _sub_mathml,
              symbol="-"),
    Operation("mul", 2, "infix", _binary_shape("*"), lambda args, r: args[0] * args[1],
              lambda i, g, args, out, r: g * args[1 - i], _mul_rule, _mul_mathml, symbol="*",
              mistakes=_mul_mistakes),
    Operation("div", 2, "infix", _binary_shape("/"), lambda args, r: args[0] / args[1],
              lambda i, g, args, out, r: g / args[1] if i == 0 else -g * out / args[1],
              _div_rule, _div_mathml, symbol="/"),
    Operation("neg", 1, "prefix", _unchanged_shape, lambda args, r: -args[0],
              lambda i, g, args, out, r: -g,
              lambda i, dz, names, z, num, rt: ("", f"-{dz}"), _neg_mathml, symbol="-",
              constants="none"),
    Operation("transpose", 1, "postfix", _transposed_shape, lambda args, r: _t(args[0]),
              lambda i, g, args, out, r: _t(g),
              lambda i, dz, names, z, num, rt: ("", f"{dz}.T"), _transpose_mathml,
              symbol=".T", constants="none"),
    Operation("softmax", 1, "call", _softmax_shape, lambda args, r: _softmax(args[0]),
              lambda i, g, args, out, r: out * (g - (g * out).sum(axis=-2, keepdims=True)),
              _softmax_rule, _call_mathml("softmax"), constants="none",
              mistakes=_softmax_mistakes),
    Operation("sum", 1, "call", _sum_shape,
              lambda args, r: args[0].sum(axis=(-2, -1), keepdims=True),
              lambda i, g, args, out, r: np.broadcast_to(g, args[0].shape).copy(),
              lambda i, dz, names, z, num, rt: (
                  "", f"{dz} * ones_like({names[0]}.T)" if num
                  else f"{dz} * ones_like({names[0]})"),
              _call_mathml("sum"), constants="none"),
    Operation("mean", 1, "call", _sum_shape,
              lambda args, r: args[0].mean(axis=(-2, -1), keepdims=True),
              lambda i, g, args, out, r: np.broadcast_to(
                  g / (args[0].shape[-1] * args[0].shape[-2]), args[0].shape).copy(),
              _mean_rule, _call_mathml("mean"), constants="none", shape_text=True,
              mistakes=lambda i, g, args, out, rt: _mean_mistake(
                  args[0].size, _count_text(rt), np.broadcast_to(g / args[0].size,
                                                                 args[0].shape))),
    *(_reduction(kind, axis) for kind in ("sum", "mean", "max") for axis in (0, 1)),
    Operation("softmax_axis1", 1, "axis_call", _unchanged_shape,
              lambda args, r: _softmax_rows(args[0]),
              lambda i, g, args, out, r: out * (g - (g * out).sum(axis=-1, keepdims=True)),
              _softmax_rows_rule, _axis_mathml("softmax", 1), constants="none",
              mistakes=_softmax_mistakes),
    Operation("slice", 1, "slice", _unchanged_shape, _slice_forward, _slice_vjp, _slice_rule,
              _slice_mathml, constants="none"),
)}

# The infix operators of forward programs, by name.
BINARY_OPS = {op.name: op.symbol for op in OPS.values() if op.syntax == "infix"}


def calls() -> tuple[str, ...]:
    """The operations written ``f(a)`` (read from the table each time: a record
    added to ``OPS`` is accepted by the compiler at once)."""
    return tuple(op.name for op in OPS.values() if op.syntax == "call")


def l2_norm(x: np.ndarray) -> float:
    """``float(np.linalg.norm(x))``, bit for bit (the same ravel and dot), without
    its dispatch: the graders and the draw's checks take thousands of norms of
    small arrays, where that dispatch is most of the cost."""
    if x.dtype != np.float64:  # numpy's own rules for other types (float32 stays float32)
        return float(np.linalg.norm(x))
    flat = x.ravel(order="K")
    return math.sqrt(flat.dot(flat))


def axis_calls() -> dict[str, tuple[int, ...]]:
    """The operations written ``f(a, axis=k)``: name -> the axes it takes (from the table)."""
    out: dict[str, tuple[int, ...]] = {}
    for op in OPS.values():
        if op.syntax == "axis_call":
            base, axis = op.name.rsplit("_axis", 1)
            out[base] = (*out.get(base, ()), int(axis))
    return out


def forward(op: str, args: list, region: tuple | None = None) -> Array:
    """The value of one step. ``args`` are arrays or Python floats (constants)."""
    return OPS[op].forward(args, region)


def vjp(op: str, i: int, g: Array, args: list, out: Array, region: tuple | None = None) -> Array:
    """Denominator-layout gradient flowing into argument ``i`` from the output gradient ``g``."""
    return OPS[op].vjp(i, g, args, out, region)


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
    return OPS[op].rule(i, dz, names, z, layout == "numerator", region_text)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
