"""Plausible mistakes, generated from the model solution, and whether a draw
separates them from the right answer (issue 9).

A *mutant* is the model backward program with one line changed the way
students get it wrong:

- ``variable``: one use of a variable replaced by another of the same shape
  (a forward value by a forward value; a gradient by a gradient that is
  complete at that line), e.g. the relu mask taken before the bias,
  ``(z4 > 0)``, or after the activation, ``(z6 > 0)``, instead of ``(z5 > 0)``;
- ``derivative_at``: an element-wise derivative evaluated at another variable
  of the same shape (every occurrence at once), e.g. tanh's ``1 - z**2`` at
  the input instead of the output;
- ``derivative_formula``: another activation's derivative (sigmoid's for tanh);
- ``dropped``: a factor that holds no gradient dropped (the relu mask, an
  activation's derivative, the other operand of ``*``, a constant);
- ``transpose``: one operand transposed or a ``.T`` dropped, or the whole
  right-hand side transposed, where the shapes still agree;
- ``sign``: the right-hand side negated, a ``-`` written as ``+``;
- ``accumulation``: ``+=`` written as ``=``.

Every mutant is type-checked against the symbolic shapes (so it type-checks
for every dims draw); one that does not is left out, since the grader names
its shape error anyway, as is one whose text is the model line's.

Evaluating mutants is cheap. Every line of a backward program is linear in
the one gradient it reads, so a mutant is run as its *difference* from the
model: all mutants form one batch of differences that a single pass over the
program carries (numpy on the batch axis; a line whose input difference is
zero is skipped), each mutant's row starting at its own line, and a mutant is
separated as soon as an asked gradient it moved by more than the tolerance is
final. Mutants that differ only in which variable fills one place of a line
(``(z4 > 0)``, ``(b2 > 0)``... for ``(z5 > 0)``) are evaluated together, by
one call of the line's closure on the stacked candidates.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from server.engine.dimexpr import Lin
from server.engine.ops import ELEMENTWISE, l2_norm, rule_text
from server.engine.program import Program
from server.engine.solution import ModelLine, model_lines, render_lines

if TYPE_CHECKING:
    from server.engine.spec import ProblemSpec

Key = str | tuple[str, int]
Shape = tuple[Lin, Lin]
ACTIVATIONS = ("relu", "sigmoid", "tanh")
KINDS = (
    "variable", "derivative_at", "derivative_formula", "dropped", "transpose", "sign",
    "accumulation",
)
# A mutant is separated when an asked gradient moves by more than this many
# tolerances (the grader's: rtol * |reference| + 1e-12), a margin against
# rounding in the student's own arithmetic (float32 numpy answers).
SEPARATION_MARGIN = 2.0
_ONE = Lin(1)
SLOT = "__slot__"  # the place a group of mutants fills with each candidate in turn


class MutantError(ValueError):
    """A backward line outside what the mutant generator understands (a bug in ops)."""


@dataclass(frozen=True)
class Mutant:
    index: int  # position in MutantSet.mutants
    line: int  # 0-based index of the changed model line
    kind: str
    description: str
    op: str  # "=" or "+="
    rhs: str
    read: str  # the gradient the right-hand side reads
    read_indexed: bool
    fn: Callable = field(repr=False, compare=False)
    # Mutants that differ only in which variable fills one place of their line
    # share a group: one call of the group's closure, on the stacked candidates,
    # evaluates them all. ``slot`` is this mutant's candidate (name, indexed).
    group: int | None = None
    slot: tuple[str, bool] | None = None


@dataclass(frozen=True)
class Group:
    line: int
    gradient: bool  # the place is the gradient read (the line's own closure, g stacked)
    fn: Callable = field(repr=False, compare=False)  # f(values, t, g, s) for a forward place
    # an element-wise derivative evaluated at the place: the factor alone, f(values, t, None, s),
    # and the model's; where they are equal the mutant writes the model's value whatever the
    # gradient, which a draw can test before reverse mode
    factor: Callable | None = field(default=None, repr=False, compare=False)
    model_factor: Callable | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class CompiledLine:
    model: ModelLine
    rhs: str  # as unparsed (the form mutants are compared with)
    read: str
    read_indexed: bool
    fn: Callable = field(repr=False, compare=False)


@dataclass(frozen=True)
class MutantSet:
    """The model program of one structure (a choice of a spec), compiled, and its mutants."""

    lines: tuple[CompiledLine, ...]
    mutants: tuple[Mutant, ...]
    asked: frozenset[str]  # asked gradients, "dW1"
    given: str  # the given gradient, "doutput"
    given_indexed: bool
    numerator: bool
    loops: tuple  # the program's loops, in order
    groups: tuple[Group, ...]
    plans: dict = field(default_factory=dict, repr=False, compare=False)  # cache of _Plan

    def statement(self, mutant: Mutant) -> str:
        line = self.lines[mutant.line].model
        return f"{line.target}{line.suffix} {mutant.op} {mutant.rhs}"

    def label(self, mutant: Mutant) -> str:
        """``line 5: dz5 = dz6 * (z4 > 0).T (mask from z4 instead of z5)``."""
        return f"line {mutant.line + 1}: {self.statement(mutant)} ({mutant.description})"

    def answer(self, mutant: Mutant) -> str:
        """The whole model answer with this mutant's line, as a student would write it."""
        lines = [line.model for line in self.lines]
        lines[mutant.line] = dataclasses.replace(lines[mutant.line], op=mutant.op, rhs=mutant.rhs)
        return render_lines(lines)


# --------------------------------------------------------------------------- compiling


def compile_mutants(spec: ProblemSpec, program: Program) -> MutantSet:
    """The model program of ``program`` and every mutant of it."""
    model = model_lines(spec, program)
    numerator = spec.layout == "numerator"
    types = _Types(program, numerator)
    gradients = {line.target for line in model} | {"d" + spec.given}
    lines = []
    for number, line in enumerate(model, 1):
        tree = ast.parse(line.rhs, mode="eval").body
        read, read_indexed = _single_read(tree, gradients, line, number)
        lines.append(CompiledLine(line, ast.unparse(tree), read, read_indexed,
                                  _closure(tree, gradients)))
    complete = _complete_gradients(model, "d" + spec.given, spec.given in program.indexed)
    mutants: list[Mutant] = []
    groups: list[Group] = []
    for index, line in enumerate(lines):
        seen = {(line.model.op, line.rhs)}
        try:
            want = types.of(ast.parse(line.rhs, mode="eval").body, line.model.loop)
        except _Mismatch as exc:
            raise MutantError(f"model line {index + 1} ({line.model.statement}): {exc}") from None
        sites: dict[object, int] = {}
        for candidate in _candidates(spec, program, line, complete[index], types):
            kind, description, op, tree, site = candidate
            text = ast.unparse(tree)
            if (op, text) in seen:
                continue
            try:
                if types.of(tree, line.model.loop) != want:
                    continue
            except _Mismatch:
                continue
            seen.add((op, text))
            read, read_indexed = _single_read(tree, gradients, line.model, index + 1)
            group = slot = None
            if site is not None:
                place, slot_tree, slot, factors = site
                if place not in sites:
                    fn = line.fn if slot_tree is None else _closure(slot_tree, gradients)
                    factor, model_factor = ((_closure(f, gradients) for f in factors)
                                            if factors else (None, None))
                    sites[place] = len(groups)
                    groups.append(Group(index, slot_tree is None, fn, factor, model_factor))
                group = sites[place]
            mutants.append(Mutant(len(mutants), index, kind, description, op, text, read,
                                  read_indexed, _closure(tree, gradients), group, slot))
    loops = tuple(dict.fromkeys(line.model.loop for line in lines if line.model.loop))
    return MutantSet(
        tuple(lines), tuple(mutants), frozenset("d" + a for a in program.ask), "d" + spec.given,
        spec.given in program.indexed, numerator, loops, tuple(groups),
    )


def _single_read(tree: ast.expr, gradients: set[str], line: ModelLine, number: int):
    reads = {(_name_of(n), isinstance(n, ast.Subscript)) for n in _variables(tree)
             if _name_of(n) in gradients}
    if len(reads) != 1:
        raise MutantError(f"model line {number} ({line.statement}) reads {len(reads)} "
                          "gradients; every backward rule reads exactly one")
    return next(iter(reads))


def _complete_gradients(model: Sequence[ModelLine], given: str, given_indexed: bool):
    """Per line, the gradients that hold their final value there: name -> indexed."""
    writers: dict[str, list[int]] = {}
    for i, line in enumerate(model):
        writers.setdefault(line.target, []).append(i)
    out = []
    for i, line in enumerate(model):
        ready = {given: given_indexed} if (line.loop is not None or not given_indexed) else {}
        for g, where in writers.items():
            if max(where) >= i:
                continue
            first = model[where[0]]
            if line.loop is not None and first.loop is line.loop and not first.indexed:
                continue  # a shared gradient still accumulating over the loop's steps
            if line.loop is None and first.indexed:
                continue  # one value per step: not nameable outside the loop
            ready[g] = first.indexed
        out.append(ready)
    return out


def _candidates(spec: ProblemSpec, program: Program, line: CompiledLine, ready, types):
    """(kind, description, op, tree, site) for every plausible mistake on one
    line; ``site`` is (place, closure tree with the place as SLOT, candidate,
    derivative factor trees or None) for mutants that only change which
    variable fills one place."""
    model = line.model
    loop_var = model.loop.var if model.loop else None
    tree = ast.parse(line.rhs, mode="eval").body
    op = model.op
    yield from _derivative_candidates(spec, model, loop_var, types)
    forward = types.forward_texts(model.loop)
    grads = {(f"{g}[{loop_var}]" if indexed else g) for g, indexed in ready.items()}
    for place, node in enumerate(_variables(tree)):
        gradient = types.is_gradient(_name_of(node))
        slot_tree = None if gradient else _swap(tree, node, ast.Name(SLOT))
        for new in _variable_swaps(node, forward, grads, types):
            site = (("read",) if gradient else place, slot_tree, _slot_of(new), None)
            swapped = _swap(tree, node, _expr(new))
            yield "variable", f"{new} in place of {_text(node)}", op, swapped, site
    for node in _walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Div):
            sides = [node.left, node.right]
            has = [any(_name_of(v) == line.read for v in _variables(s)) for s in sides]
            if has.count(True) == 1:
                keep = sides[has.index(True)]
                drop = sides[has.index(False)]
                yield "dropped", f"factor {_text(drop)} dropped", op, _swap(tree, node, keep), None
    for node in _variables(tree):
        parent = _parent(tree, node)
        if not types.is_one_by_one(node, model.loop) and not (
                isinstance(parent, ast.Attribute) and parent.attr == "T"):
            yield ("transpose", f"{_text(node)} transposed", op,
                   _swap(tree, node, ast.Attribute(copy.deepcopy(node), "T", ast.Load())), None)
    for node in _walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "T":
            if not types.is_one_by_one(node.value, model.loop):
                yield ("transpose", f"'.T' left out of {_text(node)}", op,
                       _swap(tree, node, node.value), None)
    shape = types.of(tree, model.loop)
    if shape[0] == shape[1] and shape != (_ONE, _ONE):
        yield ("transpose", "the result transposed", op, ast.Attribute(copy.deepcopy(tree), "T"),
               None)
    negated = tree.operand if _is_negation(tree) else ast.UnaryOp(ast.USub(), copy.deepcopy(tree))
    yield "sign", "sign flipped", op, negated, None
    for node in _walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub):
            flipped = ast.BinOp(node.left, ast.Add(), node.right)
            yield ("sign", f"'-' written as '+' in {_text(node)}", op, _swap(tree, node, flipped),
                   None)
        if node is not tree and _is_negation(node):
            yield ("sign", f"minus sign left out of {_text(node)}", op,
                   _swap(tree, node, node.operand), None)
    if op == "+=":
        yield "accumulation", "'+=' written as '='", "=", tree, None


def _derivative_candidates(spec, model: ModelLine, loop_var, types):
    """An element-wise function's derivative: at another variable, another
    activation's, or left out."""
    step = model.step
    fn = ELEMENTWISE.get(step.op)
    if fn is None:
        return
    a = step.args[0].text(loop_var)
    z = f"{step.target}[{loop_var}]" if step.indexed else step.target
    dz = "d" + z
    at = "a" if "{a}" in fn.derivative_text else "z"
    current = a if at == "a" else z
    shape = types.shape_of_text(current)

    def at_place(name: str) -> str:
        names, out = ([name], z) if at == "a" else ([a], name)
        return rule_text(step.op, 0, dz, names, out, spec.layout)[1]

    def factor(name: str) -> ast.expr:
        return _expr(fn.derivative_text.format(**{at: name, ("z" if at == "a" else "a"): name}))

    slot_tree = _expr(at_place(SLOT))
    factors = (factor(SLOT), factor(current))
    for other in types.forward_texts(model.loop):
        if other == current or types.shape_of_text(other) != shape:
            continue
        what = (f"mask from {other} instead of {current}" if step.op == "relu"
                else f"derivative of {step.op} evaluated at {other} instead of {current}")
        yield ("derivative_at", what, model.op, _expr(at_place(other)),
               (("at",), slot_tree, _slot_of(other), factors))
    if step.op in ACTIVATIONS:
        for other in ACTIVATIONS:
            if other != step.op:
                rhs = rule_text(other, 0, dz, [a], z, spec.layout)[1]
                yield ("derivative_formula", f"the derivative of {other} instead of {step.op}",
                       model.op, _expr(rhs), None)
    what = "relu mask left out" if step.op == "relu" else f"derivative of {step.op} left out"
    yield "dropped", what, model.op, _expr(dz), None


def _variable_swaps(node, forward: Mapping[str, Shape], grads: set[str], types):
    text = _text(node)
    try:
        shape = types.shape_of_text(text)
    except _Mismatch:
        return []
    pool = grads if types.is_gradient(_name_of(node)) else forward
    return [other for other in sorted(pool)
            if other != text and types.shape_of_text(other) == shape]


# --------------------------------------------------------------------------- AST helpers


def _expr(text: str) -> ast.expr:
    return ast.parse(text, mode="eval").body


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


def _walk(tree: ast.AST) -> list[ast.AST]:
    return list(ast.walk(tree))


def _is_variable(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) or (
        isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name))


def _is_negation(node: ast.AST) -> bool:
    return isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)


def _name_of(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.value.id


def _variables(tree: ast.AST) -> list[ast.AST]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            out.append(node)
        elif isinstance(node, ast.Name) and not _is_subscripted(tree, node):
            out.append(node)
    return out


def _is_subscripted(tree: ast.AST, name: ast.Name) -> bool:
    parent = _parent(tree, name)
    return isinstance(parent, ast.Subscript)


def _parent(tree: ast.AST, node: ast.AST) -> ast.AST | None:
    for candidate in ast.walk(tree):
        for child in ast.iter_child_nodes(candidate):
            if child is node:
                return candidate
    return None


def _slot_of(text: str) -> tuple[str, bool]:
    """``z5[t]`` -> ("z5", True)."""
    return text.split("[")[0], "[" in text


def _swap(tree: ast.expr, node: ast.AST, replacement: ast.expr) -> ast.expr:
    """A copy of ``tree`` with ``node`` (a node of ``tree``) replaced."""
    if node is tree:
        return copy.deepcopy(replacement)
    path = _path(tree, node)
    new = copy.deepcopy(tree)
    parent = new
    for field_name, index in path[:-1]:
        child = getattr(parent, field_name)
        parent = child if index is None else child[index]
    field_name, index = path[-1]
    if index is None:
        setattr(parent, field_name, copy.deepcopy(replacement))
    else:
        getattr(parent, field_name)[index] = copy.deepcopy(replacement)
    return new


def _path(tree: ast.AST, node: ast.AST) -> list[tuple[str, int | None]]:
    for field_name, value in ast.iter_fields(tree):
        children = value if isinstance(value, list) else [value]
        for i, child in enumerate(children):
            if not isinstance(child, ast.AST):
                continue
            index = i if isinstance(value, list) else None
            if child is node:
                return [(field_name, index)]
            sub = _path(child, node)
            if sub:
                return [(field_name, index), *sub]
    return []


# --------------------------------------------------------------------------- shapes


class _Mismatch(Exception):
    pass


class _Types:
    """Symbolic shapes of right-hand sides, with the answer language's rules
    (element-wise operands have equal shapes, or one is a number or 1×1)."""

    def __init__(self, program: Program, numerator: bool):
        self.program = program
        self.numerator = numerator
        self.forward = set(program.shapes)
        # dims are numbers in a rule (a mean's 1/B)
        self.dims = {n for shape in program.shapes.values() for d in shape for n in d.names}

    def is_gradient(self, name: str) -> bool:
        return name not in self.forward and name.startswith("d") and name[1:] in self.forward

    def shape_of_name(self, name: str) -> Shape | None:
        if name in self.dims and name not in self.forward:
            return None
        if name in self.forward:
            return self.program.shapes[name]
        if self.is_gradient(name):
            r, c = self.program.shapes[name[1:]]
            return (c, r) if self.numerator else (r, c)
        raise _Mismatch(name)

    def shape_of_text(self, text: str) -> Shape:
        return self.shape_of_name(text.split("[")[0])

    def forward_texts(self, loop) -> dict[str, Shape]:
        out = {}
        for name, shape in self.program.shapes.items():
            if name in self.program.indexed:
                if loop is not None:
                    out[f"{name}[{loop.var}]"] = shape
            else:
                out[name] = shape
        return out

    def is_one_by_one(self, node: ast.AST, loop) -> bool:
        try:
            return self.of(node, loop) in (None, (_ONE, _ONE))
        except _Mismatch:
            return False

    def of(self, node: ast.AST, loop) -> Shape | None:
        """The shape of ``node``; None for a number. Raises _Mismatch."""
        if isinstance(node, ast.Constant):
            return None
        if _is_variable(node):
            return self.shape_of_name(_name_of(node))
        if _is_negation(node):
            return self.of(node.operand, loop)
        if isinstance(node, ast.Attribute) and node.attr == "T":
            s = self.of(node.value, loop)
            return None if s is None else (s[1], s[0])
        if isinstance(node, ast.BinOp):
            a, b = self.of(node.left, loop), self.of(node.right, loop)
            if isinstance(node.op, ast.MatMult):
                if a is None or b is None or a[1] != b[0]:
                    raise _Mismatch("@")
                return (a[0], b[1])
            if isinstance(node.op, ast.Pow):
                return a
            return _elementwise(a, b)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return _elementwise(self.of(node.left, loop), self.of(node.comparators[0], loop))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1:
            s = self.of(node.args[0], loop)
            if node.func.id == "ones_like":
                return s
            if node.func.id == "diag" and s is not None and _ONE in s:
                n = s[0] if s[1] == _ONE else s[1]
                return (n, n)
        raise _Mismatch(ast.unparse(node))


def _elementwise(a: Shape | None, b: Shape | None) -> Shape | None:
    if a is None or a == (_ONE, _ONE):
        return b if b is not None else a
    if b is None or b == (_ONE, _ONE) or a == b:
        return a
    raise _Mismatch("element-wise")


# --------------------------------------------------------------------------- closures

_BINARY = {
    ast.MatMult: np.matmul, ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply,
    ast.Div: np.true_divide,
}
_COMPARE = {ast.Gt: np.greater, ast.GtE: np.greater_equal, ast.Lt: np.less, ast.LtE: np.less_equal}


def _closure(node: ast.AST, gradients: set[str]) -> Callable:
    """``f(values, t, g, s=None)``: the value of ``node`` with forward values
    from ``values`` (keyed by name, or (name, t) inside loops), ``g`` for the
    one gradient it reads and ``s`` for SLOT. Written on the last two axes,
    so ``g`` and ``s`` may be batches (of equal length)."""
    if isinstance(node, ast.Constant):
        c = float(node.value)
        return lambda v, t, g, s=None: c
    if _is_variable(node):
        name = _name_of(node)
        if name == SLOT:
            return lambda v, t, g, s=None: s
        if name in gradients:
            return lambda v, t, g, s=None: g
        if isinstance(node, ast.Subscript):
            return lambda v, t, g, s=None: v[(name, t)]
        return lambda v, t, g, s=None: v[name]
    if _is_negation(node):
        f = _closure(node.operand, gradients)
        return lambda v, t, g, s=None: -f(v, t, g, s)
    if isinstance(node, ast.Attribute):
        f = _closure(node.value, gradients)
        return lambda v, t, g, s=None: np.swapaxes(f(v, t, g, s), -1, -2)
    if isinstance(node, ast.BinOp):
        fa, fb = _closure(node.left, gradients), _closure(node.right, gradients)
        if isinstance(node.op, ast.Pow):
            return lambda v, t, g, s=None: fa(v, t, g, s) ** fb(v, t, g, s)
        op = _BINARY[type(node.op)]
        return lambda v, t, g, s=None: op(fa(v, t, g, s), fb(v, t, g, s))
    if isinstance(node, ast.Compare):
        fa, fb = _closure(node.left, gradients), _closure(node.comparators[0], gradients)
        cmp = _COMPARE[type(node.ops[0])]
        return lambda v, t, g, s=None: cmp(fa(v, t, g, s), fb(v, t, g, s)).astype(np.float64)
    if isinstance(node, ast.Call):
        f = _closure(node.args[0], gradients)
        if node.func.id == "diag":
            return lambda v, t, g, s=None: _diag(f(v, t, g, s))
        return lambda v, t, g, s=None: np.ones_like(f(v, t, g, s))
    raise MutantError(f"cannot evaluate {ast.unparse(node)}")


def _diag(x: np.ndarray) -> np.ndarray:
    """diag of a vector (or of each vector of a batch)."""
    if x.ndim == 2:
        return np.diagflat(x)
    flat = x.reshape(x.shape[0], -1)
    out = np.zeros((x.shape[0], flat.shape[1], flat.shape[1]))
    idx = np.arange(flat.shape[1])
    out[:, idx, idx] = flat
    return out


# --------------------------------------------------------------------------- evaluating


@dataclass(frozen=True)
class _Plan:
    """The order in which a backward program's lines run, for given loop ranges."""

    steps: tuple[tuple[int, int | None], ...]  # (line, loop step t)
    reads: tuple[Key, ...]  # per step, the gradient read
    targets: tuple[Key, ...]  # per step, the gradient written
    final_at: tuple[tuple[Key, ...], ...]  # per step, the asked gradients it completes
    first: dict[int, int]  # per line, its first step
    last: dict[int, int]  # per line, its last step
    regions: bool  # some line writes a slice of its target


def _plan(mset: MutantSet, ranges: tuple[tuple[int, int], ...]) -> _Plan:
    steps: list[tuple[int, int | None]] = []
    lines = mset.lines
    loops = iter(ranges)
    i = 0
    while i < len(lines):
        loop = lines[i].model.loop
        if loop is None:
            steps.append((i, None))
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].model.loop is loop:
            j += 1
        for t in range(*next(loops)):
            steps.extend((k, t) for k in range(i, j))
        i = j
    reads = tuple(_key(lines[i].read, lines[i].read_indexed, t) for i, t in steps)
    targets = tuple(_key(lines[i].model.target, lines[i].model.indexed, t) for i, t in steps)
    last = {k: e for e, k in enumerate(targets)}
    final_at = [[] for _ in steps]
    for k, e in last.items():
        if _base(k) in mset.asked:
            final_at[e].append(k)
    first_step: dict[int, int] = {}
    for e, (i, _) in enumerate(steps):
        first_step.setdefault(i, e)
    last_step = {i: e for e, (i, _) in enumerate(steps)}
    return _Plan(tuple(steps), reads, targets, tuple(tuple(f) for f in final_at), first_step,
                 last_step, any(line.model.region is not None for line in lines))


class Evaluation:
    """The separation of mutants on one draw.

    ``values`` are the forward values keyed by name (or (name, t) per loop
    step); ``gradient(key)`` gives the final value of a gradient in the
    problem's layout, keyed "dz5" or ("dz5", t): the reference, which is what
    the model program computes (every line reads gradients that are complete
    by then). Nothing is computed until a mutant needs it.
    """

    def __init__(self, mset: MutantSet, dims: Mapping[str, int],
                 values: Mapping[Key, np.ndarray], gradient: Callable[[Key], np.ndarray]):
        self.mset = mset
        # the dims too: a rule may divide by one (a mean's 1/B)
        self.values = {**values, **{name: float(v) for name, v in dims.items()}}
        self.dims = dims
        self.gradient = gradient
        ranges = tuple((loop.start.eval(dims), loop.stop.eval(dims)) for loop in mset.loops)
        plan = mset.plans.get(ranges)
        if plan is None:
            plan = mset.plans[ranges] = _plan(mset, ranges)
        self.plan = plan
        self._final: dict[Key, np.ndarray] = {}
        self._norm: dict[Key, float] = {}
        self._rhs: dict[int, np.ndarray] = {}
        self._before: dict[int, np.ndarray] | None = None

    def final(self, key: Key) -> np.ndarray:
        value = self._final.get(key)
        if value is None:
            value = self._final[key] = self.gradient(key)
        return value

    def region(self, e: int):
        i, t = self.plan.steps[e]
        line = self.mset.lines[i].model
        if line.region is None:
            return None
        return _region(line, {**self.dims, line.loop.var: t} if line.loop else self.dims)

    def shape(self, e: int) -> tuple[int, int]:
        key = self.plan.targets[e]
        r, c = self.values[(key[0][1:], key[1]) if isinstance(key, tuple) else key[1:]].shape
        return (c, r) if self.mset.numerator else (r, c)

    def norm(self, key: Key) -> float:
        value = self._norm.get(key)
        if value is None:
            value = self._norm[key] = l2_norm(self.final(key))
        return value

    def rhs(self, e: int) -> np.ndarray:
        """What the model line writes at step ``e``."""
        value = self._rhs.get(e)
        if value is None:
            i, t = self.plan.steps[e]
            value = self.mset.lines[i].fn(self.values, t, self.final(self.plan.reads[e]))
            written = self.written_shape(e)
            if value.shape != written:
                value = np.broadcast_to(value, written)
            self._rhs[e] = value
        return value

    def written_shape(self, e: int) -> tuple[int, int]:
        region = self.region(e)
        shape = self.shape(e)
        if region is None:
            return shape
        return tuple(len(range(*s.indices(n))) for s, n in zip(region, shape))

    def before(self, e: int) -> np.ndarray:
        """What the target of a "+=" step holds before it (a model run, done once)."""
        if self._before is None:
            self._before = {}
            state: dict[Key, np.ndarray] = {}
            for f, (i, _) in enumerate(self.plan.steps):
                key = self.plan.targets[f]
                cur = state.get(key)
                if cur is None:
                    cur = np.zeros(self.shape(f))
                region = self.region(f)
                part = cur[region] if region else cur
                if self.mset.lines[i].model.op == "=":
                    new = self.rhs(f)
                else:
                    self._before[f] = part
                    new = part + self.rhs(f)
                if region:
                    cur = cur.copy()
                    cur[region] = new
                    state[key] = cur
                else:
                    state[key] = new
        return self._before[e]

    def unseparated(self, indices: Iterable[int], rtol: float,
                    margin: float = SEPARATION_MARGIN, stop_early: bool = False) -> list[int]:
        """The mutants among ``indices`` that change no asked gradient by more
        than ``margin`` tolerances.

        All of them run as one batch of differences from the model, in one
        pass over the program: a mutant's row starts at its own line, and
        leaves the batch once an asked gradient that it moved is final. With
        ``stop_early`` the pass ends at the first mutant found unseparated (a
        draw is rejected anyway), which is as soon as its line has run for the
        last time and left no difference anywhere."""
        members = list(indices)
        if not members:
            return []
        with np.errstate(all="ignore"):
            return self._run_batch(members, rtol * margin, 1e-12 * margin, stop_early)

    def stuck_by_factor(self, indices: Iterable[int]) -> list[int]:
        """The mutants among ``indices`` that evaluate an element-wise derivative
        at another variable whose derivative is exactly the model's on this draw
        (a mask from ``z4`` where ``z4`` and ``z5`` have the same signs): they
        cannot be separated, whatever the gradients (which this does not read)."""
        plan = self.plan
        groups: dict[int, list[Mutant]] = {}
        for index in indices:
            m = self.mset.mutants[index]
            if m.group is not None and self.mset.groups[m.group].factor is not None \
                    and plan.first[m.line] == plan.last[m.line]:
                groups.setdefault(m.group, []).append(m)
        out: list[int] = []
        with np.errstate(all="ignore"):
            for index, members in groups.items():
                group = self.mset.groups[index]
                t = plan.steps[plan.first[group.line]][1]
                model = group.model_factor(self.values, t, None)
                slots = np.stack([self.values[_key(*m.slot, t)] for m in members])
                same = ~(group.factor(self.values, t, None, slots) != model) \
                    .reshape(len(members), -1).any(axis=1)
                out += [m.index for m, s in zip(members, same) if s]
        return out

    def stuck(self, indices: Iterable[int]) -> list[int]:
        """The mutants among ``indices`` whose line runs once and writes exactly
        what the model line writes: they cannot be separated (a quick test
        that rejects most draws a mask mutant rejects, before any propagation)."""
        plan = self.plan
        by_line: dict[int, list[Mutant]] = {}
        for index in indices:
            m = self.mset.mutants[index]
            if plan.first[m.line] == plan.last[m.line]:
                by_line.setdefault(m.line, []).append(m)
        out: list[int] = []
        with np.errstate(all="ignore"):
            for line, members in by_line.items():
                e = plan.first[line]
                t = plan.steps[e][1]
                rhs = self.rhs(e)
                groups: dict[int, list[Mutant]] = {}
                for m in members:
                    if m.group is None:
                        if m.op != self.mset.lines[line].model.op:
                            continue  # '+=' written as '=': loses what the target held
                        value = m.fn(self.values, t, self.final(_key(m.read, m.read_indexed, t)))
                        if not np.any(value != rhs):
                            out.append(m.index)
                    else:
                        groups.setdefault(m.group, []).append(m)
                for index, grouped in groups.items():
                    values = self._group_values(self.mset.groups[index], t, grouped)
                    same = ~(values != rhs).reshape(len(grouped), -1).any(axis=1)
                    out += [m.index for m, s in zip(grouped, same) if s]
        return out

    def _group_values(self, group: Group, t, members: list[Mutant]) -> np.ndarray:
        """What the mutants of a group write, on the model's values (stacked)."""
        if group.gradient:
            stacked = np.stack([self.final(_key(*m.slot, t)) for m in members])
            return group.fn(self.values, t, stacked)
        slots = np.stack([self.values[_key(*m.slot, t)] for m in members])
        m = members[0]
        return group.fn(self.values, t, self.final(_key(m.read, m.read_indexed, t)), slots)

    def _run_batch(self, members: list[int], rtol: float, atol: float,
                   stop_early: bool) -> list[int]:
        mutants = self.mset.mutants
        lines = self.mset.lines
        plan = self.plan
        rows = self._rows(members)
        alive = np.ones(len(members), dtype=bool)
        diff: dict[Key, np.ndarray] = {}
        for e in range(min(plan.first[i] for i in rows), len(plan.steps)):
            i, t = plan.steps[e]
            line = lines[i]
            key = plan.targets[e]
            d = diff.get(plan.reads[e])
            mine = rows.get(i)
            region = self.region(e) if plan.regions else None
            if d is None and mine is None:
                if line.model.op == "=":
                    _clear(diff, key, region)
            else:
                reset = line.model.op == "="
                if d is None:
                    delta = np.zeros((len(members), *self.written_shape(e)))
                else:
                    delta = line.fn(self.values, t, d)
                    if delta.ndim < 3 or delta.shape[0] != len(members):
                        delta = np.broadcast_to(delta, (len(members), *delta.shape[-2:])).copy()
                    elif delta is d or delta.base is not None:  # a view: rows get written
                        delta = delta.copy()
                if mine is not None:
                    reset = self._inject(e, t, [(r, mutants[members[r]]) for r in mine],
                                         delta, diff, reset)
                _write(diff, key, region, delta, reset, self.shape(e), len(members))
            for k in plan.final_at[e]:
                d = diff.get(k)
                if d is not None:
                    flat = d.reshape(len(members), -1)
                    norms = np.sqrt(np.einsum("ij,ij->i", flat, flat))
                    alive &= norms <= rtol * self.norm(k) + atol  # NaN: separated
                    if not alive.any():
                        return []
            if plan.final_at[e] and 2 * alive.sum() <= len(members):  # drop the separated rows
                keep = np.flatnonzero(alive)
                members = [members[r] for r in keep]
                diff = {name: v[keep] for name, v in diff.items()}
                rows = self._rows(members)
                alive = np.ones(len(members), dtype=bool)
                mine = rows.get(i)
            if stop_early and mine is not None and plan.last[i] == e:
                mine = [r for r in mine if alive[r]]
                if not mine:
                    continue
                if plan.first[i] == e:  # ran once: its rows differ only where it just wrote
                    moved = delta[mine].reshape(len(mine), -1).any(axis=1)
                else:
                    moved = np.zeros(len(mine), dtype=bool)
                    for v in diff.values():
                        moved |= v[mine].reshape(len(mine), -1).any(axis=1)
                if not moved.all():
                    return [members[r] for r, m in zip(mine, moved) if not m]
        return [m for m, a in zip(members, alive) if a]

    def _rows(self, members: list[int]) -> dict[int, list[int]]:
        """Per line, the batch rows of its mutants."""
        rows: dict[int, list[int]] = {}
        for r, index in enumerate(members):
            rows.setdefault(self.mset.mutants[index].line, []).append(r)
        return rows

    def _inject(self, e: int, t, mine, delta: np.ndarray, diff, reset):
        """Rows of the mutants of this line: their own line's difference from
        the model's (``delta`` holds the model line applied to the rows'
        differences so far, which is replaced). Returns the reset per row."""
        op = self.mset.lines[self.plan.steps[e][0]].model.op
        rhs = self.rhs(e)
        # a row starts at its line's first step: differences it reads before that are zero
        moved = diff if self.plan.first[self.plan.steps[e][0]] != e else {}
        lost = []
        grouped: dict[int, list[tuple[int, Mutant]]] = {}
        for r, m in mine:
            if m.group is not None:
                grouped.setdefault(m.group, []).append((r, m))
                continue
            key = _key(m.read, m.read_indexed, t)
            value = m.fn(self.values, t, self.final(key)) - rhs
            d = moved.get(key)
            if d is not None:
                value = value + m.fn(self.values, t, d[r])
            if m.op != op:  # "+=" written as "=": the earlier contributions are lost
                value = value - self.before(e)
                lost.append(r)
            delta[r] = value
        for index, members in grouped.items():
            self._inject_group(self.mset.groups[index], t, members, delta, moved, rhs)
        if not lost:
            return reset
        per_row = np.zeros(len(delta), dtype=bool)
        per_row[lost] = True
        return per_row

    def _inject_group(self, group: Group, t, members, delta, moved, rhs) -> None:
        rows = [r for r, _ in members]
        value = self._group_values(group, t, [m for _, m in members])
        if moved and group.gradient:  # each row reads its own gradient through the closure
            keys = [_key(*m.slot, t) for _, m in members]
            ds = [moved.get(k) for k in keys]
            if any(d is not None for d in ds):
                stacked = np.stack([np.zeros(self.final(k).shape) if d is None else d[r]
                                    for k, d, r in zip(keys, ds, rows)])
                value = value + group.fn(self.values, t, stacked)
        elif moved:
            m = members[0][1]
            d = moved.get(_key(m.read, m.read_indexed, t))
            if d is not None:
                slots = np.stack([self.values[_key(*m.slot, t)] for _, m in members])
                value = value + group.fn(self.values, t, d[rows], slots)
        delta[rows] = value - rhs


def _write(diff, key, region, delta, reset, shape, batch) -> None:
    """Apply one line's difference (an array the caller gives up) to its
    target or the target's region: ``reset`` (a bool, or one per row)
    replaces what was there, else adds."""
    cur = diff.get(key)
    if cur is None:
        if reset is True and region is None and delta.shape[1:] == tuple(shape):
            diff[key] = delta  # the caller's own array
            return
        cur = diff[key] = np.zeros((batch, *shape))
    part = cur[(slice(None), *region)] if region else cur  # a view
    if reset is True:
        part[...] = delta
        return
    if reset is not False:
        part[reset] = 0.0
    part += delta


def _clear(diff, key, region) -> None:
    """The target was overwritten by the model's value: no difference left there."""
    if region is None:
        diff.pop(key, None)
    elif key in diff:
        diff[key][(slice(None), *region)] = 0.0


def _region(line: ModelLine, env: Mapping[str, int]):
    if line.region is None:
        return None
    (r0, r1), (c0, c1) = line.region
    return (slice(r0.eval(env), r1.eval(env)), slice(c0.eval(env), c1.eval(env)))


def _key(name: str, indexed: bool, t: int | None) -> Key:
    return (name, t) if indexed else name


def _base(key: Key) -> str:
    return key[0] if isinstance(key, tuple) else key


def instance_values(inst) -> tuple[dict[Key, np.ndarray], Callable[[Key], np.ndarray]]:
    """An ArrayInstance's forward values and gradients (reference and given), as
    Evaluation takes them."""
    values: dict[Key, np.ndarray] = {}
    for name, v in inst.values.items():
        if isinstance(v, list):
            values.update(((name, t), x) for t, x in enumerate(v))
        else:
            values[name] = v
    grads = {**inst.reference, "d" + inst.given: inst.values["d" + inst.given]}

    def gradient(key: Key) -> np.ndarray:
        return grads[key[0]][key[1]] if isinstance(key, tuple) else grads[key]

    return values, gradient
