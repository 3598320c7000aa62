"""One entry point per task, whatever the problem's answer type."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from server.engine.instance import (
    Instance,
    draw_hidden_instances,
    draw_instance,
    legacy_hidden_seeds,
)
from server.engine.solution import model_solution
from server.engine.spec import ProblemSpec


def draw(spec: ProblemSpec, seed: int):
    """The instance of ``spec`` for ``seed`` (an Instance, or an
    ExpressionInstance for answer = "expression")."""
    if spec.answer == "expression":
        from server.engine.expression import draw_expression_instance

        return draw_expression_instance(spec, seed)
    return draw_instance(spec, seed)


def instance_from_document(spec: ProblemSpec, document: Mapping):
    """The engine instance of a stored instance document (``to_json`` with the
    reference). An expression instance is drawn again from its seed: the grader
    wants the sympy derivative, which JSON does not keep (deterministic)."""
    if spec.answer == "expression":
        from server.engine.expression import draw_expression_instance

        return draw_expression_instance(spec, int(document["seed"]))
    return Instance.from_json(document)


def model_answer(spec: ProblemSpec, inst) -> str:
    """The model answer, in the problem's answer language."""
    if spec.answer == "expression":
        return inst.reference
    text = model_solution(spec, spec.program(inst.choice_index))
    if spec.answer == "numpy":
        return numpy_model_answer(spec, inst, text)
    return text


def numpy_model_answer(spec: ProblemSpec, inst: Instance, equations: str) -> str:
    """The model equations as a ``backward`` function: dims are read off the
    arguments' shapes, gradients start at zero, indexed ones are lists."""
    program = spec.program(inst.choice_index)
    names = list(program.leaves) + list(program.intermediates)
    dims_lines = []
    for dim in spec.dims:
        for name in program.leaves:
            shape = program.shapes[name]
            for axis, d in enumerate(shape):
                if d.terms == ((dim, 1),) and d.const == 0:
                    dims_lines.append(f"    {dim} = {name}.shape[{axis}]")
                    break
            else:
                continue
            break
    accumulated = set(re.findall(r"\bd(\w+)(?:\[[^\]]*\])?\s*\+=", equations))
    body = []
    for name in names:
        if spec.vars.get(name) is not None and spec.vars[name].role == "const":
            continue
        if name == spec.given:
            continue
        if name in program.indexed:
            body.append(f"    d{name} = [None] * len({name})")
        elif name in accumulated:  # gradients start at zero
            zero = f"np.zeros_like({name}.T)" if spec.layout == "numerator" else f"np.zeros_like({name})"
            body.append(f"    d{name} = {zero}")
    code = []
    for line in equations.splitlines():
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped[:1].isdigit():
            stripped = stripped.split(" ", 1)[1]
        stripped = stripped.replace("diag(", "np.diagflat(").replace("ones_like(", "np.ones_like(")
        target, op, rhs = stripped.partition(" += ")
        if op and not target.endswith("]"):
            # a = a + b, not a += b: after "dz4 = dy", an in-place += on dz4 would change dy too
            stripped = f"{target} = {target} + {rhs}"
        code.append("    " + indent + stripped)
    args = ", ".join(names + ["d" + spec.given])
    ret = ", ".join(f'"d{a}": d{a}' for a in program.ask)
    return "\n".join(
        ["import numpy as np", "", "", f"def backward({args}, **_):"]
        + dims_lines
        + body
        + code
        + [f"    return {{{ret}}}", ""]
    )


def grade_answer(spec: ProblemSpec, inst, text: str, *, hidden_seeds: Sequence[int] | None = None):
    """Grade an equations or expression answer (numpy answers need the sandbox:
    see server.grading).

    Equations run on ``inst`` and on one hidden instance per seed of
    ``hidden_seeds`` (the server draws them per submission); ``None`` means
    the instance's own deterministic seeds (``legacy_hidden_seeds``, as
    ``grade_numpy`` does: ``nabla grade``, tests), and ``()`` no hidden check.
    Expression answers are judged at random points instead."""
    if spec.answer == "expression":
        from server.engine.expression import grade_expression

        return grade_expression(spec, inst, text,
                                hidden_seeds=() if hidden_seeds is None else hidden_seeds)
    from server.engine.grade import grade_equations

    if hidden_seeds is None:
        hidden_seeds = legacy_hidden_seeds(inst)
    hidden = draw_hidden_instances(spec, inst, hidden_seeds) if hidden_seeds else []
    return grade_equations(spec, inst, text, hidden=hidden)


def check_answer(spec: ProblemSpec, inst, text: str):
    """Validation without grading, for an equations or expression answer: parse it and,
    for equations, run it on ``inst`` to check every line's shape. Returns a GradeResult
    with ``errors`` only (no verdicts, no score). Numpy modules are checked by the
    server (``server.sandbox.source.check_source``): their shapes are known only by
    running them."""
    if spec.answer == "expression":
        from server.engine.expression import check_expression

        return check_expression(spec, inst, text)
    if spec.answer != "equations":
        raise ValueError(f"check_answer: {spec.answer} answers are checked by the server")
    from server.engine.grade import check_equations

    return check_equations(spec, inst, text)
