"""Linear expressions over dimension names: the symbolic side of shape checking.

Shapes in a spec are written with dims (``["H1", "N"]``), and slices and loop
ranges with small arithmetic (``T - N + 1``, ``t + N``). Every such expression
is an integer linear combination of dims and loop variables, so shapes are
compared exactly as linear forms: two shapes agree for *every* allowed draw iff
their forms are identical. Inequalities (a slice inside its variable, a loop
range at least 1) are checked over the whole finite box of dims ranges, which
for linear forms means checking the box's corners.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class DimExprError(ValueError):
    """A dims expression that is not linear arithmetic over known names."""


@dataclass(frozen=True)
class Lin:
    """``const + sum(coef * name)`` with integer coefficients."""

    const: int = 0
    terms: tuple[tuple[str, int], ...] = ()

    @staticmethod
    def of(value: int | str) -> Lin:
        if isinstance(value, int):
            return Lin(value)
        return Lin(0, ((value, 1),))

    def _combine(self, other: Lin, sign: int) -> Lin:
        coefs = dict(self.terms)
        for name, c in other.terms:
            coefs[name] = coefs.get(name, 0) + sign * c
        return Lin(
            self.const + sign * other.const,
            tuple(sorted((n, c) for n, c in coefs.items() if c != 0)),
        )

    def __add__(self, other: Lin) -> Lin:
        return self._combine(other, 1)

    def __sub__(self, other: Lin) -> Lin:
        return self._combine(other, -1)

    def scale(self, k: int) -> Lin:
        return Lin(self.const * k, tuple((n, c * k) for n, c in self.terms if c * k != 0))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n for n, _ in self.terms)

    def subst(self, env: Mapping[str, int | Lin]) -> Lin:
        """Replace names found in ``env`` by integers or other forms."""
        out = Lin(self.const)
        for name, c in self.terms:
            value = env.get(name)
            if value is None:
                out = out + Lin(0, ((name, c),))
            else:
                out = out + (Lin(value) if isinstance(value, int) else value).scale(c)
        return out

    def eval(self, env: Mapping[str, int]) -> int:
        return self.const + sum(c * env[n] for n, c in self.terms)

    def is_const(self) -> bool:
        return not self.terms

    def __str__(self) -> str:
        parts: list[str] = []
        for name, c in self.terms:
            if c == 1:
                parts.append(f"+ {name}")
            elif c == -1:
                parts.append(f"- {name}")
            else:
                parts.append(f"{'+' if c > 0 else '-'} {abs(c)}*{name}")
        if self.const or not parts:
            parts.append(f"{'+' if self.const >= 0 else '-'} {abs(self.const)}")
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else "-" + text[2:]


def parse_lin(node: ast.AST | str | int, known: Iterable[str]) -> Lin:
    """Parse ``T - N + 1``, ``2*H``, ``t + N`` (an ast node or text) into a Lin."""
    known = frozenset(known)
    if isinstance(node, bool):
        raise DimExprError("a dims expression must be an integer or a dim name")
    if isinstance(node, int):
        return Lin(node)
    if isinstance(node, str):
        try:
            node = ast.parse(node.strip(), mode="eval").body
        except SyntaxError as exc:
            raise DimExprError(f"cannot parse dims expression {node!r}") from exc
    return _lin(node, known)


def _lin(node: ast.AST, known: frozenset[str]) -> Lin:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Lin(node.value)
    if isinstance(node, ast.Name):
        if node.id not in known:
            raise DimExprError(
                f"unknown name {node.id!r} in a dims expression "
                f"(dims: {', '.join(sorted(known)) or 'none'})"
            )
        return Lin.of(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return _lin(node.operand, known).scale(-1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        left, right = _lin(node.left, known), _lin(node.right, known)
        return left + right if isinstance(node.op, ast.Add) else left - right
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _lin(node.left, known), _lin(node.right, known)
        if left.is_const():
            return right.scale(left.const)
        if right.is_const():
            return left.scale(right.const)
        raise DimExprError(f"{ast.unparse(node)!r}: dims expressions must be linear (no dim * dim)")
    raise DimExprError(
        f"{ast.unparse(node)!r} is not a dims expression (integers, dims, + - and * by an integer)"
    )


def min_over(expr: Lin, ranges: Mapping[str, tuple[int, int]]) -> int:
    """Minimum of a linear form over the dims box (exact: attained at a corner)."""
    total = expr.const
    for name, c in expr.terms:
        lo, hi = ranges[name]
        total += c * (lo if c > 0 else hi)
    return total


def max_over(expr: Lin, ranges: Mapping[str, tuple[int, int]]) -> int:
    return -min_over(expr.scale(-1), ranges)


def shape_text(shape: tuple[Lin, Lin]) -> str:
    """A shape as a student reads it: ``H1×N``, ``(T - N + 1)×1``."""
    def one(s: Lin) -> str:
        text = str(s)
        return f"({text})" if len(s.terms) + (1 if s.const else 0) > 1 else text

    return f"{one(shape[0])}×{one(shape[1])}"
