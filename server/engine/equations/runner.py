"""The answer language's runner: a checked ``EquationProgram`` evaluated in float64,
with the limits of ``nodes`` on steps, elements and work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from server.engine.equations.checker import (
    _indexed,
)
from server.engine.equations.nodes import (
    MAX_STEPS,
    AnswerRuntimeError,
    AssignEvent,
    EquationProgram,
    _as_2d,
    _Assign,
    _Fail,
    _is_scalar,
    _np_index,
    _region_text,
    _Run,
    _shape_text,
    _step_index,
)

# ---------------------------------------------------------------------------
# Running


def _as_float_array(name: str, v) -> np.ndarray:
    if type(v) is np.ndarray and v.dtype == np.float64 and v.ndim == 2:
        return v
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}")
    return a


class PreparedValues(dict):
    """Forward values checked and converted for one program (``prepare_values``):
    :func:`evaluate_rhs` takes them as they are, which saves the conversion when
    the same values serve many calls."""


def prepare_values(program: EquationProgram, values) -> PreparedValues:
    return _prepare_values(program, values)


def _prepare_values(program: EquationProgram, values) -> dict[str, Any]:
    if isinstance(values, PreparedValues):
        return values
    vals: dict[str, Any] = PreparedValues()
    for name, spec in program.ctx.forward.items():
        if name not in values:
            raise KeyError(f"no value given for forward variable {name}")
        v = values[name]
        vals[name] = ([_as_float_array(name, x) for x in v] if _indexed(spec)
                      else _as_float_array(name, v))
    return vals


def _prepare(program: EquationProgram, values, grads):
    ctx = program.ctx
    vals = _prepare_values(program, values)
    gs: dict[str, Any] = {}
    for name, v in grads.items():
        gs[name] = ([_as_float_array(name, x) for x in v] if isinstance(v, list | tuple)
                    else _as_float_array(name, v))
    for name, spec in ctx.gradients.items():
        if name not in gs:
            gs[name] = [np.zeros(s) for s in spec] if _indexed(spec) else np.zeros(spec)
    return vals, gs


def run_equations(
    program: EquationProgram,
    values: Mapping[str, np.ndarray | list[np.ndarray]],
    grads: Mapping[str, np.ndarray | list[np.ndarray]],
    on_assign: Callable[[AssignEvent], None] | None = None,
    on_error: Callable[[AnswerRuntimeError], None] | None = None,
    *,
    strict_reads: bool = False,
) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Run a parsed answer and return the final gradients.

    ``values`` are the forward values; ``grads`` the initial gradients (zeros for
    assignable ones, the given value for read-only ones; a gradient of the
    context that is missing starts at zeros of its shape).  ``on_assign`` is
    called after every executed assignment.

    Without ``on_error`` the first runtime error is raised as
    :class:`AnswerRuntimeError`.  With it, the error is reported, the failing
    assignment (or loop) is skipped and the run continues; limits on total work
    (``fatal`` errors) still stop the run and are raised.

    With ``strict_reads``, a line that reads a gradient (other than a
    read-only one, or its own target) before any line assigned it fails:
    grading must not take the zeros a gradient starts at for a value the
    student computed.
    """
    vals, gs = _prepare(program, values, grads)
    rt = _Run(vals, gs, program.ctx.dims,
              strict=frozenset(program.ctx.readonly) if strict_reads else None)
    with np.errstate(all="ignore"):
        _run_block(program.body, rt, on_assign, on_error)
    return {k: list(v) if isinstance(v, list) else v for k, v in gs.items()}


def _run_block(body, rt: _Run, on_assign, on_error) -> None:
    for stmt in body:
        if isinstance(stmt, _Assign):
            try:
                _count_step(rt, stmt.line)
                _exec_assign(stmt, rt, on_assign)
            except AnswerRuntimeError as e:
                if on_error is None or e.fatal:
                    raise
                rt.failed.add((stmt.name, e.index))
                on_error(e)
            continue
        try:
            bounds = [a.ev(rt) for a in stmt.args]
            if len(bounds) == 3 and bounds[2] == 0:
                raise _Fail("range() step must not be zero", stmt.args[2].col)
        except _Fail as f:
            e = AnswerRuntimeError(stmt.line, f.message, col=f.col, loop_env=rt.env)
            if on_error is None:
                raise e from None
            on_error(e)
            continue
        steps = range(*bounds)
        if stmt.reverse:
            steps = reversed(steps)
        saved = rt.env.get(stmt.var)
        try:
            for t in steps:
                _count_step(rt, stmt.line)
                rt.env[stmt.var] = t
                _run_block(stmt.body, rt, on_assign, on_error)
        finally:
            if saved is None:
                rt.env.pop(stmt.var, None)
            else:
                rt.env[stmt.var] = saved


def _count_step(rt: _Run, line: int) -> None:
    rt.steps += 1
    if rt.steps > MAX_STEPS:
        raise AnswerRuntimeError(line, f"too many steps: the answer ran more than {MAX_STEPS} "
                                 "statements", loop_env=rt.env, fatal=True)


def _exec_assign(s: _Assign, rt: _Run, on_assign) -> None:
    index: tuple[int, ...] = ()
    try:
        rt.reads = []
        container = rt.grads[s.name]
        if s.step is not None:
            index = (_step_index(s.name, container, s.step, rt),)
            before = container[index[0]]
        else:
            before = container
        rt.target = (s.name, index)
        rhs = s.rhs.ev(rt)
        after, region = _apply(s, before, rhs, rt, index)
    except _Fail as f:
        raise AnswerRuntimeError(s.line, f.message, col=f.col, stmt_id=s.stmt_id,
                                 loop_env=rt.env, target=s.name, index=index,
                                 fatal=f.fatal) from None
    if index:
        container[index[0]] = after
    else:
        rt.grads[s.name] = after
    rt.assigned.add((s.name, index))
    if on_assign is not None:
        reads = tuple(dict.fromkeys(rt.reads))
        on_assign(AssignEvent(s.line, s.number, s.source, s.name, index, region, s.op,
                              _as_2d(rhs), before, after, reads, s.stmt_id, dict(rt.env)))


def _apply(s: _Assign, before: np.ndarray, rhs, rt: _Run, index):
    label = s.name + (f"[{index[0]}]" if index else "")
    if s.items is not None:
        rows, cols = _np_index(s.items, before, rt, label)
        new = before.copy()
        region = new[rows, cols]
        rtext = _region_text(rows, cols, before.shape)
        if not (_is_scalar(rhs) or rhs.shape == (1, 1) or rhs.shape == region.shape):
            verb = "assign" if s.op == "=" else "add"
            raise _Fail(f"cannot {verb} {s.rhs.text} ({_shape_text(rhs)}) into "
                        f"{label}{rtext}, which is {_shape_text(region)}", s.rhs.col)
        if s.op == "=":
            new[rows, cols] = rhs
        elif s.op == "+=":
            new[rows, cols] = region + rhs
        else:
            new[rows, cols] = region - rhs
        return new, rtext
    if s.op == "=":
        if _is_scalar(rhs):
            return np.full(before.shape, float(rhs)), None
        return rhs.copy(), None  # never alias another gradient or a caller's array
    sign = 1.0 if s.op == "+=" else -1.0
    if _is_scalar(rhs) or rhs.shape == (1, 1) or rhs.shape == before.shape:
        return before + sign * rhs, None
    # Gradients start at zero: the first += may give the gradient its shape (a transposed
    # or other-layout answer must still run so that the grader can say so).
    if (s.name, index) not in rt.assigned and not before.any():
        return sign * rhs, None
    raise _Fail(f"cannot add {s.rhs.text} ({_shape_text(rhs)}) to {label}, which is "
                f"{_shape_text(before)}", s.rhs.col)


def evaluate_rhs(
    program: EquationProgram,
    event_or_statement_id: AssignEvent | AnswerRuntimeError | int,
    values: Mapping[str, np.ndarray | list[np.ndarray]],
    lookup_grad: Callable[[str, tuple[int, ...]], np.ndarray],
    loop_env: Mapping[str, int] | None = None,
) -> np.ndarray:
    """Re-evaluate one assignment's right-hand side, reading every gradient through
    ``lookup_grad(name, index)`` (e.g. the reference values: "is this line's own rule
    right given correct inputs?").

    Pass an :class:`AssignEvent` (or an :class:`AnswerRuntimeError` of an assignment),
    whose ``stmt_id`` and ``loop_env`` are used, or a statement id and ``loop_env``.
    Returns a 2-D array (a number becomes 1×1).  Raises :class:`AnswerRuntimeError`.
    """
    if isinstance(event_or_statement_id, AssignEvent | AnswerRuntimeError):
        stmt_id = event_or_statement_id.stmt_id
        env = dict(event_or_statement_id.loop_env if loop_env is None else loop_env)
    else:
        stmt_id = event_or_statement_id
        env = dict(loop_env or {})
    if stmt_id is None or not 0 <= stmt_id < len(program.statements):
        raise ValueError(f"no assignment with id {stmt_id}")
    stmt = program.statements[stmt_id]
    rt = _Run(_prepare_values(program, values), {}, program.ctx.dims, lookup=lookup_grad)
    rt.env = env
    # Step selection of indexed gradients needs their lengths: take them from the context.
    for name, spec in program.ctx.gradients.items():
        if _indexed(spec):
            rt.grads[name] = [None] * len(spec)
    for name in program.ctx.readonly:
        if name not in rt.grads:
            fspec = program.ctx.forward.get(name[1:])
            if _indexed(fspec):
                rt.grads[name] = [None] * len(fspec)
    try:
        with np.errstate(all="ignore"):
            return _as_2d(stmt.rhs.ev(rt))
    except _Fail as f:
        raise AnswerRuntimeError(stmt.line, f.message, col=f.col, stmt_id=stmt_id, loop_env=env,
                                 target=stmt.name) from None
