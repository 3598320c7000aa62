"""The answer language's line checker: text to a checked ``EquationProgram``.

Each line is parsed with :mod:`ast`, checked against an allowlist and converted
into the tree of ``nodes``; nothing reaches ``eval`` or ``exec``.
"""

from __future__ import annotations

import ast
import difflib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from server.engine.astcheck import depth_exceeds
from server.engine.equations.nodes import (
    _BIN_OPS,
    _COMPARE_OPS,
    _DIM_OPS,
    _DIMS_RULE,
    _FOR_VAR_RE,
    _IMPLICIT_MUL_RE,
    _LABEL_RE,
    _MODULES,
    _VT,
    FUNCTIONS,
    MAX_DEPTH,
    MAX_ERRORS,
    MAX_EXPONENT,
    MAX_LINES,
    MAX_LITERAL,
    MAX_TEXT_CHARS,
    AnswerContext,
    AnswerFormatError,
    EquationProgram,
    FormatError,
    _Assign,
    _DBin,
    _DInt,
    _DName,
    _DNeg,
    _For,
    _Slice,
    _VBin,
    _VCall,
    _VCmp,
    _VIntName,
    _VNeg,
    _VNum,
    _VPow,
    _VSub,
    _VVar,
)

# ---------------------------------------------------------------------------
# Parsing


def _indexed(spec) -> bool:
    return isinstance(spec, list)


class _Names:
    def __init__(self, ctx: AnswerContext):
        self.forward = {n: _indexed(s) for n, s in ctx.forward.items()}
        self.grads = {n: _indexed(s) for n, s in ctx.gradients.items() if n not in ctx.readonly}
        self.readonly = {}
        for n in ctx.readonly:
            if n in ctx.gradients:
                self.readonly[n] = _indexed(ctx.gradients[n])
            else:
                self.readonly[n] = self.forward.get(n[1:], False)
        self.dims = dict(ctx.dims)
        self.example = next(iter(sorted(self.grads)), "dz1")

    def all_values(self) -> list[str]:
        return [*self.forward, *self.grads, *self.readonly, *self.dims]

    def taken(self, name: str) -> bool:
        return (name in self.forward or name in self.grads or name in self.readonly
                or name in self.dims or name in FUNCTIONS or name in _MODULES)


def _char_col(content: str, byte_offset: int) -> int:
    if content.isascii():
        return byte_offset
    return len(content.encode("utf-8")[:byte_offset].decode("utf-8", "ignore"))


class _Bad(Exception):
    """Signals that a subtree was refused (the error is already recorded)."""


class _LineChecker:
    """Checks one line's ast against the allowlist and converts it to our tree."""

    def __init__(self, names: _Names, line: int, number: int | None, content: str,
                 content_col: int, loops: tuple[str, ...], errors: list[FormatError],
                 statements: list[_Assign]):
        self.names = names
        self.line = line
        self.number = number
        self.content = content
        self.content_col = content_col
        self.ascii = content.isascii()
        self.bytes = content.encode("utf-8")
        self.loops = loops
        self.errors = errors
        self.statements = statements

    # -- helpers --

    def col(self, node: ast.AST) -> int:
        if self.ascii:
            return self.content_col + node.col_offset
        return self.content_col + _char_col(self.content, getattr(node, "col_offset", 0))

    def text(self, node: ast.AST) -> str:
        """The source of a node as written (shortened), for messages."""
        if node.end_lineno != 1:
            return ast.unparse(node)
        if self.ascii:
            t = self.content[node.col_offset:node.end_col_offset]
        else:
            t = self.bytes[node.col_offset:node.end_col_offset].decode("utf-8", "replace")
        return t if len(t) <= 40 else t[:39] + "…"

    def err(self, node: ast.AST, message: str) -> _Bad:
        self.errors.append(FormatError(self.line, self.col(node), message))
        return _Bad()

    def all_of(self, fns):
        """Run every conversion (to collect all errors), then fail if any failed."""
        out, bad = [], False
        for fn in fns:
            try:
                out.append(fn())
            except _Bad:
                bad = True
        if bad:
            raise _Bad()
        return out

    def suggest(self, name: str, candidates) -> str:
        close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
        if not close:
            return ""
        return " (did you mean " + " or ".join(close) + "?)"

    # -- statements --

    def statement(self, node: ast.stmt):
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1:
                raise self.err(node.targets[1], "assign one gradient per line (no a = b = ...)")
            return self.assign(node, node.targets[0], "=", node.value)
        if isinstance(node, ast.AugAssign):
            if not isinstance(node.op, ast.Add | ast.Sub):
                raise self.err(node, "only =, += and -= are allowed")
            return self.assign(node, node.target, "+=" if isinstance(node.op, ast.Add) else "-=",
                               node.value)
        if isinstance(node, ast.For):
            return self.loop(node)
        if isinstance(node, ast.Import | ast.ImportFrom):
            raise self.err(node, "imports are not allowed (np. functions are available as is)")
        if isinstance(node, ast.AnnAssign):
            raise self.err(node, "annotations are not allowed: write dV = expression")
        if isinstance(node, ast.Expr):
            raise self.err(node, "a line must assign a gradient (dV = ...) or start a for loop")
        kind = type(node).__name__.lower()
        raise self.err(node, f"'{kind}' statements are not allowed: only assignments to "
                       "gradients and for loops")

    def loop(self, node: ast.For):
        if node.orelse:
            raise self.err(node, "for ... else is not allowed")
        if not isinstance(node.target, ast.Name):
            raise self.err(node.target, "the loop variable must be a single name, e.g. t")
        var = node.target.id
        if var in self.loops or self.names.taken(var):
            raise self.err(node.target, f"the loop variable {var} would hide a variable, dim or "
                           "function of that name: choose another name, e.g. t")
        it = node.iter
        reverse = False
        if (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                and it.func.id == "reversed"):
            if len(it.args) != 1 or it.keywords:
                raise self.err(it, "reversed() takes one range(...)")
            reverse = True
            it = it.args[0]
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                and it.func.id == "range"):
            raise self.err(it, "a loop must be for t in range(...) or for t in "
                           "reversed(range(...))")
        if not 1 <= len(it.args) <= 3 or it.keywords:
            raise self.err(it, "range() takes 1 to 3 bounds")
        args = self.all_of([lambda a=a: self.dims_expr(a, "range bounds") for a in it.args])
        loop = _For(self.line, self.col(node), var, tuple(args), reverse)
        inner = _LineChecker(self.names, self.line, self.number, self.content, self.content_col,
                             (*self.loops, var), self.errors, self.statements)
        is_placeholder = len(node.body) == 1 and isinstance(node.body[0], ast.Pass) and getattr(
            node.body[0], "lineno", 1) != 1
        if not is_placeholder:
            loop.body.extend(inner.all_of([lambda s=s: inner.statement(s) for s in node.body]))
        return loop

    def assign(self, node: ast.stmt, target: ast.expr, op: str, value: ast.expr):
        # Check the target and the value independently so that both report errors.
        stmt_id = len(self.statements)
        self.statements.append(None)  # type: ignore[arg-type]  # reserve the id
        try:
            (name, step, items), rhs = self.all_of([lambda: self.target(target),
                                                    lambda: self.expr(value)])
        except _Bad:
            self.statements.pop()
            raise
        source = self.content.split("#", 1)[0].strip() if "#" in self.content else \
            self.content.strip()
        stmt = _Assign(stmt_id, self.line, self.number, source, self.col(node), name, step,
                       items, op, rhs, self.text(target))
        self.statements[stmt_id] = stmt
        return stmt

    def target(self, node: ast.expr):
        subs: list[ast.Subscript] = []
        base = node
        while isinstance(base, ast.Subscript):
            subs.append(base)
            base = base.value
        subs.reverse()
        if not isinstance(base, ast.Name):
            raise self.err(node, "the left-hand side must be a gradient such as "
                           f"{self.names.example}, {self.names.example}[t] or dX[:, a:b]")
        name = base.id
        n = self.names
        if name not in n.grads:
            if name in n.readonly:
                raise self.err(base, f"{name} is the given gradient: it is read-only")
            if name in n.forward:
                grad = "d" + name
                raise self.err(base, f"{name} is a forward variable: you can only assign "
                               f"gradients such as {grad if grad in n.grads else n.example}")
            hint = self.suggest(name, n.grads)
            if hint:
                raise self.err(base, f"unknown gradient {name}{hint}")
            raise self.err(base, f"you can only assign gradients such as {n.example} "
                           f"({name} is not one)")
        step = None
        if n.grads[name]:
            if not subs:
                raise self.err(base, f"{name} has one value per step: assign {name}[t]")
            first = subs.pop(0)
            if isinstance(first.slice, ast.Slice | ast.Tuple):
                raise self.err(first.slice, f"{name} has one value per step: select the step "
                               f"first, as in {name}[t]")
            step = self.dims_expr(first.slice, "step indices")
        if len(subs) > 1:
            raise self.err(subs[1], "a target may have at most one slice, e.g. dX[:, a:b]")
        items = self.index_items(subs[0]) if subs else None
        return name, step, items

    # -- expressions --

    def index_items(self, node: ast.Subscript):
        sl = node.slice
        parts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
        if len(parts) > 2:
            raise self.err(sl, "at most two indices: [rows, columns]")
        return tuple(self.all_of([lambda p=p: self.index_item(p) for p in parts]))

    def index_item(self, node: ast.expr):
        if isinstance(node, ast.Slice):
            lo, hi, st = self.all_of([
                lambda: None if node.lower is None else self.dims_expr(node.lower, "indices"),
                lambda: None if node.upper is None else self.dims_expr(node.upper, "indices"),
                lambda: None if node.step is None else self.dims_expr(node.step, "indices"),
            ])
            return _Slice(self.col(node), self.text(node), lo, hi, st)
        return self.dims_expr(node, "indices")

    def dims_expr(self, node: ast.expr, what: str):
        rule = _DIMS_RULE.format(dims=", ".join(self.names.dims) or "none")
        col, text = self.col(node), self.text(node)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, int):
                raise self.err(node, f"{what} must be whole numbers: {rule}")
            if abs(v) > MAX_LITERAL:
                raise self.err(node, f"the number {text} is unreasonably large")
            return _DInt(col, text, v)
        if isinstance(node, ast.Name):
            if node.id in self.loops:
                return _DName(col, text, node.id, True)
            if node.id in self.names.dims:
                return _DName(col, text, node.id, False)
            if node.id in self.names.forward or node.id in self.names.grads or \
                    node.id in self.names.readonly:
                raise self.err(node, f"{node.id} is a variable, not a dimension: {what} may use "
                               f"{rule}")
            hint = self.suggest(node.id, [*self.loops, *self.names.dims])
            raise self.err(node, f"unknown name {node.id}{hint}: {what} may use {rule}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            x = self.dims_expr(node.operand, what)
            return _DNeg(col, text, x) if isinstance(node.op, ast.USub) else x
        if isinstance(node, ast.BinOp) and type(node.op) in _DIM_OPS:
            a, b = self.all_of([lambda: self.dims_expr(node.left, what),
                                lambda: self.dims_expr(node.right, what)])
            return _DBin(col, text, _DIM_OPS[type(node.op)], a, b)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            raise self.err(node, f"use // for integer division in {what}")
        raise self.err(node, f"{what} must be dims expressions: {rule}")

    def expr(self, node: ast.expr):
        col, text = self.col(node), self.text(node)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, str | bytes):
                raise self.err(node, "strings are not allowed")
            if isinstance(v, bool) or v is None or v is Ellipsis or isinstance(v, complex):
                raise self.err(node, f"{text} is not allowed: only numbers")
            if not abs(v) <= MAX_LITERAL:
                raise self.err(node, f"the number {text} is unreasonably large "
                               f"(limit {MAX_LITERAL:g})")
            return _VNum(col, text, float(v))
        if isinstance(node, ast.Name):
            return self.name(node, None)
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                return self.power(node)
            if type(node.op) not in _BIN_OPS:
                sym = {ast.FloorDiv: "//", ast.Mod: "%", ast.BitXor: "^", ast.BitAnd: "&",
                       ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>"}.get(type(node.op), "?")
                hint = " (use ** for powers)" if sym == "^" else ""
                raise self.err(node, f"the operator {sym} is not allowed{hint}: use "
                               "+ - * / @ **")
            a, b = self.all_of([lambda: self.expr(node.left), lambda: self.expr(node.right)])
            return _VBin(self.op_col(node), text, _BIN_OPS[type(node.op)], a, b)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return _VNeg(col, text, self.expr(node.operand))
            if isinstance(node.op, ast.UAdd):
                return self.expr(node.operand)
            raise self.err(node, "only unary - and + are allowed")
        if isinstance(node, ast.Attribute):
            if node.attr == "T":
                return _VT(col, text, self.expr(node.value))
            raise self.attribute_error(node)
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                raise self.err(node, "compare two things at a time, e.g. (z5 > 0)")
            if type(node.ops[0]) not in _COMPARE_OPS:
                raise self.err(node, "only the comparisons > >= < <= are allowed")
            a, b = self.all_of([lambda: self.expr(node.left),
                                lambda: self.expr(node.comparators[0])])
            return _VCmp(self.op_col(node), text, _COMPARE_OPS[type(node.ops[0])], a, b)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.Lambda):
            raise self.err(node, "lambdas are not allowed")
        if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            raise self.err(node, "comprehensions are not allowed")
        if isinstance(node, ast.JoinedStr):
            raise self.err(node, "strings are not allowed")
        if isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict):
            raise self.err(node, "lists, tuples, sets and dicts are not allowed")
        if isinstance(node, ast.Starred):
            raise self.err(node, "* unpacking is not allowed")
        if isinstance(node, ast.NamedExpr):
            raise self.err(node, ":= is not allowed")
        if isinstance(node, ast.BoolOp):
            raise self.err(node, "and/or are not allowed: multiply masks instead")
        if isinstance(node, ast.IfExp):
            raise self.err(node, "if-expressions are not allowed: use where(cond, a, b)")
        if isinstance(node, ast.Slice):
            raise self.err(node, "a slice is only allowed inside [...]")
        raise self.err(node, f"{type(node).__name__} expressions are not allowed")

    def op_col(self, node: ast.BinOp | ast.Compare) -> int:
        """Column of the operator itself, for runtime messages (between the operands)."""
        left = node.left
        right = node.right if isinstance(node, ast.BinOp) else node.comparators[0]
        start, end = getattr(left, "end_col_offset", None), getattr(right, "col_offset", None)
        if start is None or end is None or end < start:
            return self.col(node)
        gap = self.bytes[start:end].decode("utf-8", "replace")
        stripped = gap.lstrip(" )")
        return self.content_col + _char_col(self.content, start) + (len(gap) - len(stripped))

    def attribute_error(self, node: ast.Attribute) -> _Bad:
        if node.attr in FUNCTIONS:
            return self.err(node, f".{node.attr} is not allowed: the only attribute is .T "
                            f"(write np.{node.attr}(...) instead)")
        return self.err(node, f".{node.attr} is not allowed: the only attribute is .T")

    def name(self, node: ast.Name, step_node: ast.expr | None, whole: ast.expr | None = None):
        n, name = self.names, node.id
        col, text = self.col(node), self.text(whole or node)
        if name in self.loops:
            return _VIntName(col, text, _DName(col, text, name, True))
        if name in n.forward or name in n.grads or name in n.readonly:
            is_grad = name not in n.forward
            indexed = n.forward[name] if not is_grad else n.grads.get(name, n.readonly.get(name))
            if indexed and step_node is None:
                raise self.err(node, f"{name} has one value per step: write {name}[t]")
            step = self.dims_expr(step_node, "step indices") if step_node is not None else None
            return _VVar(col, text, name, is_grad, step)
        if name in n.dims:
            return _VIntName(col, text, _DName(col, text, name, False))
        if name in FUNCTIONS or name in ("range", "reversed"):
            raise self.err(node, f"{name} is a function: call it as {name}(...)")
        if name in _MODULES:
            raise self.err(node, f"{name} can only be used to call a function, e.g. {name}.exp(x)")
        hint = self.suggest(name, [*self.loops, *n.all_values()])
        raise self.err(node, f"unknown name {name}{hint}")

    def subscript(self, node: ast.Subscript):
        base = node.value
        if isinstance(base, ast.Name):
            n = self.names
            indexed = (n.forward.get(base.id) if base.id in n.forward
                       else n.grads.get(base.id, n.readonly.get(base.id)))
            if indexed:
                if isinstance(node.slice, ast.Slice | ast.Tuple):
                    raise self.err(node.slice, f"{base.id} has one value per step: select the "
                                   f"step first, as in {base.id}[t]")
                return self.name(base, node.slice, node)
        x, items = self.all_of([lambda: self.expr(base), lambda: self.index_items(node)])
        return _VSub(self.col(node.slice), self.text(node), x, items)

    def power(self, node: ast.BinOp):
        p = node.right
        sign = 1.0
        if isinstance(p, ast.UnaryOp) and isinstance(p.op, ast.USub | ast.UAdd):
            sign = -1.0 if isinstance(p.op, ast.USub) else 1.0
            p = p.operand
        if not (isinstance(p, ast.Constant) and isinstance(p.value, int | float)
                and not isinstance(p.value, bool) and abs(p.value) <= MAX_EXPONENT):
            raise self.err(node.right, f"the exponent must be a number between -{MAX_EXPONENT} "
                           f"and {MAX_EXPONENT}")
        base = self.expr(node.left)
        return _VPow(self.col(node), self.text(node), base, sign * float(p.value))

    def call(self, node: ast.Call):
        f = node.func
        if isinstance(f, ast.Name):
            fn = f.id
        elif (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
              and f.value.id in _MODULES):
            fn = f.attr
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute):
            raise self.err(f, f"{self.text(f)}(...) is not allowed: the only attribute is .T and "
                           "the only calls are to " + ", ".join(FUNCTIONS))
        elif isinstance(f, ast.Attribute) and f.attr != "T":
            raise self.attribute_error(f)
        else:
            hint = ""
            if isinstance(f, ast.Constant | ast.BinOp | ast.Subscript | ast.Call):
                hint = f" (write {self.text(f)} * (...): multiplication must be explicit)"
            raise self.err(node, f"{self.text(f)} cannot be called{hint}: the functions are "
                           + ", ".join(FUNCTIONS) + " (with or without np.)")
        if fn not in FUNCTIONS:
            hint = self.suggest(fn, FUNCTIONS)
            if fn in self.names.forward or fn in self.names.grads or fn in self.names.readonly:
                raise self.err(f, f"{fn} is a variable, not a function (write {fn} * (...): "
                               "multiplication must be explicit)")
            raise self.err(f, f"{fn}() is not allowed{hint}: the functions are "
                           + ", ".join(FUNCTIONS))
        lo, hi = FUNCTIONS[fn]
        axis_nodes = [k for k in node.keywords if k.arg == "axis"]
        others = [k for k in node.keywords if k.arg != "axis"]
        reduction = fn in ("sum", "mean", "max")
        if others or (axis_nodes and not reduction):
            bad = others[0] if others else axis_nodes[0]
            raise self.err(node, f"{fn}() does not take the keyword {bad.arg or '**'}")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.err(a, "* unpacking is not allowed")
        positional = list(node.args)
        axis_node = axis_nodes[0].value if axis_nodes else None
        if reduction and len(positional) == 2:
            if axis_node is not None:
                raise self.err(node, f"{fn}() got the axis twice")
            axis_node = positional.pop()
            hi = 1
        if not lo <= len(positional) <= hi:
            want = str(lo) if lo == hi else f"{lo} or {hi}"
            raise self.err(node, f"{fn}() takes {want} argument{'s' if hi > 1 else ''}, "
                           f"got {len(positional)}")
        axis = None
        if axis_node is not None:
            if not (isinstance(axis_node, ast.Constant) and axis_node.value in (0, 1)
                    and not isinstance(axis_node.value, bool)):
                raise self.err(axis_node, f"axis must be 0 ({fn} down the columns) or 1 ({fn} "
                               "along the rows)")
            axis = int(axis_node.value)
        args = self.all_of([lambda a=a: self.expr(a) for a in positional])
        return _VCall(self.col(node), self.text(node), fn, tuple(args), axis)


@dataclass
class _Line:
    lineno: int
    number: int | None
    indent: int
    content: str
    content_col: int
    header: bool


def _split_lines(source_lines: list[str]) -> Iterator[_Line]:
    for i, raw_line in enumerate(source_lines, start=1):
        raw = raw_line.expandtabs(4)
        number = None
        pre = 0
        start = 0
        m = _LABEL_RE.match(raw)
        if m:
            number = int(m.group(2))
            pre = len(m.group(1))
            start = m.end()
        rest = raw[start:]
        content = rest.lstrip()
        if not content or content.startswith("#"):
            continue
        content = content.rstrip()
        post = len(rest) - len(rest.lstrip())
        code = content.split("#", 1)[0].rstrip()
        # a block header; or a for loop whose colon is missing (its body is still checked)
        header = code.endswith(":") or (code.startswith("for ") and ":" not in code)
        yield _Line(i, number, pre + post, content, start + post, header)


def parse_equations(text: str, ctx: AnswerContext) -> EquationProgram:
    """Parse and check an equations answer.  Raises :class:`AnswerFormatError`."""
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    # str.splitlines(), as the rest of Nabla numbers lines (\r\n, \r, \f, \u2028 ...)
    source_lines = text.splitlines()
    if len(text) > MAX_TEXT_CHARS:
        raise AnswerFormatError([FormatError(1, 0, f"the answer is too long ({len(text)} "
                                             f"characters; limit {MAX_TEXT_CHARS})")])
    if len(source_lines) > MAX_LINES:
        raise AnswerFormatError([FormatError(1, 0, f"the answer has too many lines "
                                             f"({len(source_lines)}; limit {MAX_LINES})")])
    names = _Names(ctx)
    errors: list[FormatError] = []
    statements: list[_Assign] = []
    root: list[_Assign | _For] = []
    stack = [_Block(-1, root, None, 0, 0)]  # the open blocks, innermost last

    for ln in _split_lines(source_lines):
        if len(errors) >= MAX_ERRORS:
            break
        if "\x00" in ln.content:
            errors.append(FormatError(ln.lineno, ln.content_col + ln.content.index("\x00"),
                                      "the text contains a NUL character"))
            continue
        # A line belongs to the innermost open loop whose header is indented less.  Inside
        # a loop, unnumbered lines must line up; numbered lines may not (the labels "9." and
        # "10." differ in width, and people align either the labels or the statements).
        while len(stack) > 1 and ln.indent <= stack[-1].indent:
            _close_block(stack.pop(), errors)
        block = stack[-1]
        if block.body_indent is None:
            block.body_indent, block.body_numbered = ln.indent, ln.number is not None
        elif (len(stack) > 1 and ln.indent != block.body_indent and ln.number is None
              and not block.body_numbered):
            errors.append(FormatError(ln.lineno, ln.content_col, "the indentation does not "
                                      f"match the lines above it in the loop of line {block.line}"))
        loops = tuple(b.var for b in stack[1:] if b.var)
        node = _parse_line(ln, errors)
        checker = _LineChecker(names, ln.lineno, ln.number, ln.content, ln.content_col, loops,
                               errors, statements)
        converted = None
        if node is not None:
            # Each level of nesting takes at least one character: short lines need no walk.
            if len(ln.content) > MAX_DEPTH - 4 and depth_exceeds(node, MAX_DEPTH + 2):
                errors.append(FormatError(ln.lineno, ln.content_col, "the expression is nested "
                                          f"too deeply (limit {MAX_DEPTH})"))
            else:
                try:
                    converted = checker.statement(node)
                except _Bad:
                    pass
                except RecursionError:
                    errors.append(FormatError(ln.lineno, ln.content_col,
                                              "the expression is too complex"))
        if converted is not None:
            block.body.append(converted)
        if ln.header:
            var = None
            body: list[Any] = []
            if isinstance(converted, _For):
                var, body = converted.var, converted.body
            else:  # keep the body's names checkable despite a bad header
                m = _FOR_VAR_RE.match(ln.content)
                var = m.group(1) if m else None
            stack.append(_Block(ln.indent, body, var, ln.lineno, ln.content_col))
    while len(stack) > 1:
        _close_block(stack.pop(), errors)
    if errors:
        errors.sort(key=lambda e: (e.line, e.col))
        raise AnswerFormatError(errors, source_lines)
    assigned = frozenset(s.name for s in statements)
    return EquationProgram(ctx, tuple(source_lines), tuple(root), tuple(statements), assigned)


@dataclass
class _Block:
    indent: int  # of the loop header
    body: list[Any]
    var: str | None  # the loop variable
    line: int
    col: int
    body_indent: int | None = None  # of the first statement in the loop
    body_numbered: bool = False


def _close_block(block: _Block, errors: list[FormatError]) -> None:
    if block.body_indent is None:
        errors.append(FormatError(block.line, block.col, "this loop has no body: indent the "
                                  "statements that belong to it"))


def _parse_line(ln: _Line, errors: list[FormatError]) -> ast.stmt | None:
    src = ln.content + "\n    pass" if ln.header else ln.content
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = ast.parse(src, mode="exec")
    except SyntaxError as e:
        col = (e.offset or 1) - 1 if (e.lineno or 1) == 1 else len(ln.content)
        msg = e.msg or "invalid syntax"
        implicit = _IMPLICIT_MUL_RE.search(ln.content)
        if implicit:
            msg += f" (write {implicit.group(1)}*{implicit.group(2)}, not " \
                   f"{implicit.group(1)}{implicit.group(2)}: multiplication must be explicit)"
        if ln.header and (e.lineno or 1) != 1:
            msg = "invalid syntax"
        errors.append(FormatError(ln.lineno, ln.content_col + max(0, min(col, len(ln.content))),
                                  f"syntax error: {msg}"))
        return None
    except (MemoryError, RecursionError, ValueError, OverflowError):
        errors.append(FormatError(ln.lineno, ln.content_col, "the line is too complex to parse"))
        return None
    if len(mod.body) != 1:
        second = mod.body[1]
        errors.append(FormatError(ln.lineno, ln.content_col + _char_col(ln.content,
                                                                        second.col_offset),
                                  "write one statement per line"))
        return None
    return mod.body[0]
