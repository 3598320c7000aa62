"""Forward programs: their types and the compiler that shape-checks them.

A spec's forward program (one unary or binary relation per line, loops for
scans) is compiled once per combination of choices into a ``Program``: its
steps, every variable's shape as linear dims forms, the leaves, the
intermediates and what influences the given value. Shapes are checked for
every allowed dims draw; each problem is a ``SpecIssue`` naming the file line.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from server.engine.dimexpr import DimExprError, Lin, max_over, min_over, parse_lin
from server.engine.ops import OPS, ShapeError, axis_calls, calls

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Python's operator nodes; which operation each is comes from the table (``Operation.symbol``).
_AST_SYMBOLS = {ast.MatMult: "@", ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


@dataclass(frozen=True)
class SpecIssue:
    line: int | None
    message: str

    def render(self, path: str) -> str:
        return f"{path}:{self.line}: {self.message}" if self.line else f"{path}: {self.message}"


@dataclass(frozen=True)
class VarDecl:
    name: str
    shape: tuple[Lin, Lin]
    role: str
    low: float = -1.0
    high: float = 1.0
    dist: str = "uniform"  # uniform | onehot | ones (a row or column of ones, to broadcast)


@dataclass(frozen=True)
class Operand:
    name: str | None = None  # a variable, or None for a constant
    indexed: bool = False  # z1[t]
    const: float | None = None

    def text(self, loop_var: str | None) -> str:
        if self.name is None:
            c = self.const
            return str(int(c)) if float(c).is_integer() else repr(c)
        return f"{self.name}[{loop_var}]" if self.indexed else self.name


@dataclass(frozen=True)
class Step:
    line: int  # line in the spec file
    source: str  # the line as written (choices substituted)
    target: str
    indexed: bool
    op: str
    args: tuple[Operand, ...]
    # for slices: ((row start, row stop), (col start, col stop)) over dims and the loop variable
    region: tuple[tuple[Lin, Lin], tuple[Lin, Lin]] | None = None
    region_text: tuple[str, str] | None = None


@dataclass(frozen=True)
class Loop:
    line: int  # the header's line in the spec file
    var: str
    start: Lin
    stop: Lin
    header: str
    body: tuple[Step, ...]


@dataclass(frozen=True)
class Program:
    """A forward program compiled for one combination of choices."""

    items: tuple[Step | Loop, ...]
    text: str  # the forward program as the student sees it
    shapes: Mapping[str, tuple[Lin, Lin]]  # every variable used or defined
    indexed: frozenset[str]  # intermediates with one value per loop step
    leaves: tuple[str, ...]  # declared variables the program uses, in declaration order
    intermediates: tuple[str, ...]  # in definition order
    ask: tuple[str, ...]
    influencing: frozenset[str]  # variables the given value depends on, and the given itself

    def steps(self):
        """(step, loop or None) in program order."""
        for item in self.items:
            if isinstance(item, Loop):
                for step in item.body:
                    yield step, item
            else:
                yield item, None


def substitute_choices(template: str, picked: Mapping[str, str]) -> tuple[str, list[int]]:
    """Replace ``{name}`` placeholders; returns the text and, per output line,
    the 0-based template line it came from (a multi-line choice maps every
    line to its placeholder's line)."""
    out_lines: list[str] = []
    line_map: list[int] = []
    for number, line in enumerate(template.splitlines()):
        for _ in range(4):  # a choice's text may use other choices
            line = _PLACEHOLDER.sub(lambda m: picked.get(m.group(1), m.group(0)), line)
        indent = line[: len(line) - len(line.lstrip())]
        for sub in line.split("\n"):
            out_lines.append(sub if sub.startswith(indent) else indent + sub)
            line_map.append(number)
    return "\n".join(out_lines), line_map


class ProgramCompiler:
    def __init__(self, text: str, file_lines: list[int], variables: Mapping[str, VarDecl], dims):
        self.text = text
        self.file_lines = file_lines
        self.vars = variables
        self.dims = dims
        self.fixed = {n: lo for n, (lo, hi) in dims.items() if lo == hi}
        self.issues: list[SpecIssue] = []
        self.shapes: dict[str, tuple[Lin, Lin]] = {n: v.shape for n, v in variables.items()}
        self.indexed: set[str] = set()
        self.defined: list[str] = []
        self.used: set[str] = set()
        self.all_targets: set[str] = set()
        self.poisoned: set[str] = set()
        self.src_lines = text.splitlines()

    def err(self, lineno: int, message: str) -> None:
        self.issues.append(SpecIssue(self.file_line(lineno), message))

    def file_line(self, lineno: int) -> int | None:
        if 1 <= lineno <= len(self.file_lines):
            return self.file_lines[lineno - 1]
        return None

    def src(self, lineno: int) -> str:
        return self.src_lines[lineno - 1].strip() if 1 <= lineno <= len(self.src_lines) else ""

    def compile(
        self, given: str, ask: tuple[str, ...], given_line=None, ask_line=None
    ) -> Program | None:
        self.given_line, self.ask_line = given_line, ask_line
        for lineno, line in enumerate(self.src_lines, 1):
            match = _PLACEHOLDER.search(line)
            if match:
                self.err(
                    lineno,
                    f"unknown choice placeholder {{{match.group(1)}}} (declare it in [choose])",
                )
        if self.issues:
            return None
        try:
            tree = ast.parse(self.text)
        except SyntaxError as exc:
            self.err(exc.lineno or 1, f"forward program: syntax error: {exc.msg}")
            return None
        self._collect_targets(tree.body)
        items: list[Step | Loop] = []
        for node in tree.body:
            item = self._item(node, None)
            if item is not None:
                items.append(item)
        if self.issues:
            return None
        self._check_given_ask(given, ask, items)
        if self.issues:
            return None
        names = set(self.vars) | set(self.defined)
        for name in sorted(names):
            if "d" + name in names:
                self.issues.append(
                    SpecIssue(
                        None,
                        f"the names {name!r} and {'d' + name!r} clash: d{name} is the "
                        f"gradient of {name}",
                    )
                )
        if self.issues:
            return None
        leaves = tuple(n for n in self.vars if n in self.used)
        shown = "\n".join(line.rstrip() for line in self.src_lines if line.strip()).strip("\n")
        return Program(
            items=tuple(items),
            text=shown,
            shapes={n: s for n, s in self.shapes.items() if n in self.used or n in self.defined},
            indexed=frozenset(self.indexed),
            leaves=leaves,
            intermediates=tuple(self.defined),
            ask=tuple(a for a in ask if a in leaves or a in self.defined),
            influencing=frozenset(_ancestors(items, given) | {given}),
        )

    def _collect_targets(self, body) -> None:
        for node in body:
            if isinstance(node, ast.For):
                self._collect_targets(node.body)
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                t = node.targets[0]
                if isinstance(t, ast.Subscript):
                    t = t.value
                if isinstance(t, ast.Name):
                    self.all_targets.add(t.id)

    def _item(self, node: ast.stmt, loop: tuple[str, Lin, Lin] | None) -> Step | Loop | None:
        if isinstance(node, ast.For):
            if loop is not None:
                self.err(node.lineno, "nested loops are not supported in a forward program")
                return None
            return self._loop(node)
        if isinstance(node, ast.Assign):
            return self._step(node, loop)
        if isinstance(node, ast.AugAssign):
            self.err(
                node.lineno,
                "forward steps define each value once: use '=', not an augmented assignment",
            )
            return None
        self.err(
            node.lineno, f"not a forward step: {self.src(node.lineno)!r} (write 'name = operation')"
        )
        return None

    def _loop(self, node: ast.For) -> Loop | None:
        header = self.src(node.lineno)
        if not isinstance(node.target, ast.Name):
            self.err(
                node.lineno,
                "loop variable must be a plain name, as in 'for t in range(T - N + 1):'",
            )
            return None
        var = node.target.id
        if var in self.vars or var in self.dims or var in self.all_targets:
            self.err(node.lineno, f"loop variable {var!r} is already the name of a dim or variable")
            return None
        it = node.iter
        if not (
            isinstance(it, ast.Call)
            and isinstance(it.func, ast.Name)
            and it.func.id == "range"
            and 1 <= len(it.args) <= 2
            and not it.keywords
        ):
            self.err(
                node.lineno,
                "loops must be 'for t in range(STOP):' or 'for t in range(START, STOP):'",
            )
            return None
        try:
            bounds = [parse_lin(a, self.dims).subst(self.fixed) for a in it.args]
        except DimExprError as exc:
            self.err(node.lineno, f"loop range: {exc}")
            return None
        start, stop = (Lin(0), bounds[0]) if len(bounds) == 1 else bounds
        if min_over(stop - start, self.dims) < 1:
            self.err(
                node.lineno,
                f"loop range({stop}) can be empty for the allowed dims (its length {stop - start} "
                f"can be {min_over(stop - start, self.dims)})",
            )
            return None
        if node.orelse:
            self.err(node.lineno, "for ... else is not supported")
        body = []
        for sub in node.body:
            step = self._item(sub, (var, start, stop))
            if isinstance(step, Step):
                body.append(step)
        return Loop(self.file_line(node.lineno) or node.lineno, var, start, stop, header,
                    tuple(body))

    def _step(self, node: ast.Assign, loop) -> Step | None:
        lineno = node.lineno
        source = self.src(lineno)
        if len(node.targets) != 1:
            self.err(lineno, "one assignment per line")
            return None
        tnode = node.targets[0]
        indexed = False
        if isinstance(tnode, ast.Subscript):
            if loop is None or not (
                isinstance(tnode.slice, ast.Name) and tnode.slice.id == loop[0]
            ):
                self.err(
                    lineno,
                    "only per-step values inside a loop may be indexed, as in 'z1[t] = ...'"
                    if loop is None
                    else "index the target by the loop variable: "
                    f"{ast.unparse(tnode.value)}[{loop[0]}] = ...",
                )
                return None
            tnode = tnode.value
            indexed = True
        if not isinstance(tnode, ast.Name):
            self.err(lineno, "the left side must be a new variable name")
            return None
        target = tnode.id
        if loop is not None and not indexed:
            self.err(lineno, f"inside a loop, define per-step values: {target}[{loop[0]}] = ...")
            return None
        if target in self.vars:
            self.err(
                lineno,
                f"duplicate definition: {target} is declared in [vars] and cannot be redefined",
            )
            return None
        if target in self.defined:
            self.err(lineno, f"duplicate definition: {target} is already defined")
            return None
        if target in self.dims:
            self.err(lineno, f"{target} is a dim, not a variable")
            return None
        parsed = self._relation(node.value, lineno, target, indexed, loop)
        if parsed is None:
            self.poisoned.add(target)  # reported once; later uses stay quiet
            return None
        op, args, region, region_text, shape = parsed
        self.defined.append(target)
        self.shapes[target] = shape
        if indexed:
            self.indexed.add(target)
        return Step(
            self.file_line(lineno) or lineno,
            source,
            target,
            indexed,
            op,
            tuple(args),
            region,
            region_text,
        )

    # -- one relation -----------------------------------------------------------

    def _relation(self, value: ast.expr, lineno: int, target: str, indexed: bool, loop):
        loop_var = loop[0] if loop else None
        if isinstance(value, ast.BinOp):
            symbol = _AST_SYMBOLS.get(type(value.op))
            op = next((name for name, o in OPS.items()
                       if o.syntax == "infix" and o.symbol == symbol), None)
            if op is None:
                infix = " ".join(o.symbol for o in OPS.values() if o.syntax == "infix")
                self.err(lineno, f"unknown operation {_op_symbol(value.op)!r}: allowed are "
                         f"{infix} and {', '.join(calls())}, .T, slicing")
                return None
            if not (self._is_leaf(value.left, loop_var) and self._is_leaf(value.right, loop_var)):
                self._compound(lineno, target, indexed, loop_var, value)
                return None
            left = self._operand(value.left, lineno, loop_var)
            right = self._operand(value.right, lineno, loop_var)
            if left is None or right is None:
                return None
            return self._binary(op, left, right, lineno, value)
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
            if not self._is_leaf(value.operand, loop_var):
                self._compound(lineno, target, indexed, loop_var, value)
                return None
            a = self._operand(value.operand, lineno, loop_var)
            if a is None:
                return None
            if a.name is None:
                self.err(lineno, "a step must involve a variable, not only constants")
                return None
            return self._apply("neg", [a], lineno, ast.unparse(value))
        if isinstance(value, ast.Attribute):
            if value.attr != "T":
                self.err(
                    lineno,
                    f"unknown operation '.{value.attr}': the only attribute is .T (transpose)",
                )
                return None
            if not self._is_leaf(value.value, loop_var):
                self._compound(lineno, target, indexed, loop_var, value)
                return None
            a = self._operand(value.value, lineno, loop_var)
            if a is None or a.name is None:
                return None
            return self._apply("transpose", [a], lineno, ast.unparse(value))
        if isinstance(value, ast.Call):
            return self._call(value, lineno, target, indexed, loop_var)
        if isinstance(value, ast.Subscript) and not self._is_indexed_ref(value, loop_var):
            return self._slice(value, lineno, loop)
        if self._is_leaf(value, loop_var):
            self.err(
                lineno, f"'{self.src(lineno)}' copies a value; every step must apply one operation"
            )
            return None
        self.err(lineno, f"unknown operation in '{self.src(lineno)}'")
        return None

    def _call(self, value: ast.Call, lineno, target, indexed, loop_var):
        func = value.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in ("np", "numpy")
        ):
            name = func.attr
        elif isinstance(func, ast.Name):
            name = func.id
        else:
            self.err(lineno, f"unknown operation {ast.unparse(func)!r}")
            return None
        with_axis = axis_calls()
        known = sorted({*calls(), *with_axis})
        if name not in known:
            self.err(lineno, f"unknown operation {name!r}{did_you_mean(name, known)} "
                             f"(allowed: {', '.join(known)})")
            return None
        op = self._call_op(name, value, lineno, with_axis)
        if op is None:
            return None
        if not self._is_leaf(value.args[0], loop_var):
            self._compound(lineno, target, indexed, loop_var, value)
            return None
        a = self._operand(value.args[0], lineno, loop_var)
        if a is None:
            return None
        if a.name is None:
            self.err(lineno, f"{name} of a constant is a constant, not a step")
            return None
        return self._apply(op, [a], lineno, ast.unparse(value))

    def _call_op(self, name: str, value: ast.Call, lineno: int, with_axis) -> str | None:
        """The record of ``f(a)`` or ``f(a, axis=k)``: ``f`` or ``f_axis<k>``."""
        forms = ([f"{name}(X)"] if name in calls() else []) + [
            f"{name}(X, axis={k})" for k in with_axis.get(name, ())]
        usage = f"{name} is written {' or '.join(forms)}"
        if len(value.args) != 1 or any(k.arg != "axis" for k in value.keywords) \
                or len(value.keywords) > 1:
            self.err(lineno, usage)
            return None
        if not value.keywords:
            if name not in calls():
                self.err(lineno, f"{usage}: say which axis")
                return None
            return name
        axis = value.keywords[0].value
        if not (isinstance(axis, ast.Constant) and type(axis.value) is int
                and axis.value in with_axis.get(name, ())):
            self.err(lineno, f"{usage} (axis=0 reduces down the columns to a row, axis=1 "
                             "along the rows to a column)")
            return None
        return f"{name}_axis{axis.value}"

    def _apply(self, op: str, args: list[Operand], lineno: int, text: str):
        """The relation of operation ``op`` on ``args``, its shape from the operation's rule."""
        names = [a.name for a in args]
        try:
            shape = OPS[op].shape(text, names, [self.shapes[n] if n else None for n in names])
        except ShapeError as exc:
            self.err(lineno, str(exc))
            return None
        texts = None
        if OPS[op].shape_text:  # the operand's shape as text, for the rule (a mean's count)
            texts = tuple(str(d) for d in self.shapes[names[0]])
        return op, args, None, texts, shape

    def _slice(self, value: ast.Subscript, lineno: int, loop):
        loop_var = loop[0] if loop else None
        if not isinstance(value.value, ast.Name):
            self.err(lineno, "only a variable can be sliced")
            return None
        a = self._operand(value.value, lineno, loop_var)
        if a is None:
            return None
        if a.name in self.indexed:
            self.err(lineno, f"{a.name} is indexed over {loop_var}; slice a whole variable instead")
            return None
        parts = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
        if len(parts) > 2 or not all(isinstance(p, ast.Slice) and p.step is None for p in parts):
            self.err(lineno, "slices are X[a:b] or X[a:b, c:d] (no steps, no single indices)")
            return None
        shape = self.shapes[a.name]
        known = set(self.dims) | ({loop_var} if loop_var else set())
        region, texts = [], []
        for axis in range(2):
            size = shape[axis]
            if axis < len(parts):
                p = parts[axis]
                try:
                    lo = (
                        parse_lin(p.lower, known).subst(self.fixed)
                        if p.lower is not None
                        else Lin(0)
                    )
                    hi = (
                        parse_lin(p.upper, known).subst(self.fixed) if p.upper is not None else size
                    )
                except DimExprError as exc:
                    self.err(lineno, f"slice bound: {exc}")
                    return None
                texts.append(ast.unparse(p))
            else:
                lo, hi = Lin(0), size
                texts.append(":")
            length = hi - lo
            if loop_var and loop_var in length.names:
                self.err(lineno, f"the slice length {length} changes with {loop_var}")
                return None
            if not self._always(lo, loop, lambda v: min_over(v, self.dims) >= 0):
                self.err(lineno, f"slice start {lo} can be negative for the allowed dims")
                return None
            if min_over(length, self.dims) < 1:
                self.err(lineno, f"slice {texts[-1]} can be empty for the allowed dims")
                return None
            if not self._always(hi - size, loop, lambda v: max_over(v, self.dims) <= 0):
                self.err(
                    lineno,
                    f"slice {texts[-1]} can run past the end of {a.name} (axis {axis} has "
                    f"size {size}) for the allowed dims",
                )
                return None
            region.append((lo, hi))
        shape_out = (region[0][1] - region[0][0], region[1][1] - region[1][0])
        return "slice", [a], tuple(region), tuple(texts), shape_out

    def _always(self, expr: Lin, loop, check) -> bool:
        """Check a property of ``expr`` at both ends of the loop variable's range."""
        if not loop or loop[0] not in expr.names:
            return check(expr)
        var, start, stop = loop
        return check(expr.subst({var: start})) and check(expr.subst({var: stop - Lin(1)}))

    def _binary(self, op: str, left: Operand, right: Operand, lineno: int, node: ast.BinOp):
        text = ast.unparse(node)
        if left.name is None and right.name is None:
            self.err(lineno, "a step must involve a variable, not only constants")
            return None
        if OPS[op].constants == "second" and right.name is not None:
            self.err(lineno, f"'{text}': {OPS[op].symbol} is only by a constant")
            return None
        return self._apply(op, [left, right], lineno, text)

    # -- operands -------------------------------------------------------------

    @staticmethod
    def _is_indexed_ref(node: ast.expr, loop_var: str | None) -> bool:
        return (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and isinstance(node.slice, ast.Name)
            and node.slice.id == loop_var
        )

    def _is_leaf(self, node: ast.expr, loop_var: str | None) -> bool:
        if isinstance(node, ast.Name) or self._is_indexed_ref(node, loop_var):
            return True
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
        ):
            return True
        return (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, int | float)
        )

    def _operand(self, node: ast.expr, lineno: int, loop_var: str | None) -> Operand | None:
        if isinstance(node, ast.Constant):
            return Operand(const=float(node.value))
        if isinstance(node, ast.UnaryOp):
            return Operand(const=-float(node.operand.value))
        indexed = isinstance(node, ast.Subscript)
        name = node.value.id if indexed else node.id
        if name in self.vars or (name in self.defined):
            if indexed and name not in self.indexed:
                self.err(
                    lineno,
                    f"{name} is not indexed over {loop_var}; write {name}, not {name}[{loop_var}]",
                )
                return None
            if not indexed and name in self.indexed:
                self.err(lineno, f"{name} has one value per step; write {name}[{loop_var}]")
                return None
            self.used.add(name)
            return Operand(name=name, indexed=indexed)
        if name in self.poisoned:
            return None
        if name in self.all_targets:
            self.err(lineno, f"{name} is used before its definition")
        elif name in self.dims:
            self.err(lineno, f"{name} is a dim; scale by a number instead")
        else:
            known = list(self.vars) + self.defined
            self.err(lineno, f"unknown name {name!r}{did_you_mean(name, known)}")
        return None

    def _compound(self, lineno: int, target: str, indexed: bool, loop_var, value: ast.expr) -> None:
        rewrite = _rewrite(
            target + (f"[{loop_var}]" if indexed else ""), target, value, loop_var, self
        )
        self.err(
            lineno,
            "compound relation: each step must be one unary or binary operation. Rewrite "
            f"'{self.src(lineno)}' as:\n" + "\n".join(f"    {r}" for r in rewrite),
        )

    def _check_given_ask(self, given: str, ask: tuple[str, ...], items) -> None:
        gline, aline = self.given_line, self.ask_line
        if given not in self.defined:
            where = (
                "a declared input" if given in self.vars else "never defined by the forward program"
            )
            self.issues.append(
                SpecIssue(
                    gline, f"given names {given!r}, which is {where}; it must be a computed value"
                )
            )
            return
        ancestors = _ancestors(items, given)
        for a in ask:
            if a in self.vars:
                if self.vars[a].role == "const":
                    self.issues.append(
                        SpecIssue(
                            aline, f'ask names {a!r}, a constant (role = "const") with no gradient'
                        )
                    )
                continue  # a declared var unused in this program variant is simply not asked
            if a not in self.defined:
                self.issues.append(
                    SpecIssue(
                        aline,
                        f"ask names {a!r}, which the forward program never defines"
                        f"{did_you_mean(a, list(self.vars) + self.defined)}",
                    )
                )
            elif a not in ancestors:
                self.issues.append(
                    SpecIssue(aline, f"ask names {a!r}, which does not influence {given!r}")
                )
        for a in ask:
            if a in self.vars and a in self.used and a not in ancestors:
                self.issues.append(
                    SpecIssue(aline, f"ask names {a!r}, which does not influence {given!r}")
                )


def _ancestors(items, name: str) -> set[str]:
    """Every variable the value of ``name`` depends on."""
    deps: dict[str, set[str]] = {}
    for item in items:
        for step in item.body if isinstance(item, Loop) else (item,):
            deps.setdefault(step.target, set()).update(a.name for a in step.args if a.name)
    seen: set[str] = set()
    stack = [name]
    while stack:
        for d in deps.get(stack.pop(), ()):
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return seen


def _rewrite(target_text: str, target: str, value: ast.expr, loop_var, compiler) -> list[str]:
    """Split a compound expression into numbered unary/binary steps."""
    lines: list[str] = []
    counter = [0]
    suffix = f"[{loop_var}]" if loop_var and target_text.endswith("]") else ""

    def flatten(node: ast.expr, top: bool) -> str:
        if compiler._is_leaf(node, loop_var):
            return ast.unparse(node)
        if isinstance(node, ast.BinOp):
            rebuilt = ast.BinOp(
                ast.Name(flatten(node.left, False)), node.op, ast.Name(flatten(node.right, False))
            )
        elif isinstance(node, ast.UnaryOp):
            rebuilt = ast.UnaryOp(node.op, ast.Name(flatten(node.operand, False)))
        elif isinstance(node, ast.Attribute):
            rebuilt = ast.Attribute(ast.Name(flatten(node.value, False)), node.attr)
        elif isinstance(node, ast.Call):
            rebuilt = ast.Call(node.func, [ast.Name(flatten(a, False)) for a in node.args], [])
        else:
            return ast.unparse(node)
        if top:
            lines.append(f"{target_text} = {ast.unparse(rebuilt)}")
            return target_text
        counter[0] += 1
        name = f"{target}_{counter[0]}{suffix}"
        lines.append(f"{name} = {ast.unparse(rebuilt)}")
        return name

    flatten(value, True)
    return lines


def _op_symbol(op: ast.operator) -> str:
    return {
        ast.Pow: "**",
        ast.FloorDiv: "//",
        ast.Mod: "%",
        ast.BitXor: "^",
        ast.BitAnd: "&",
        ast.BitOr: "|",
    }.get(type(op), type(op).__name__)


def did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
