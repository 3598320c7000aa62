"""A student's problem: their instance as they may see it, and their submissions.

Everything here is read-only apart from drawing the instance on the first
visit (``grading.ensure_instance``). What leaves this module for a student is
built from the engine's public document (``to_json(include_reference=False)``):
forward values and the given upstream gradient, never a reference gradient.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from server.engine.kinds import AnswerKind, kind_of
from server.models import Assignment, AssignmentProblem, Instance, Submission, User
from server.services.assignments import Window, assignment_problem_for, student_window
from server.services.grading import cached, ensure_instance, spec_for_version
from server.services.submissions import problem_submissions

PRIVATE_KEYS = ("reference", "accumulation")
_MATHML_CACHE: OrderedDict[tuple[str, ...], Any] = OrderedDict()


@dataclasses.dataclass(frozen=True)
class VariableRow:
    name: str
    role: str  # input, param, const, intermediate, output
    shape: str  # in the spec's dims, e.g. "H1×N"
    size: str  # in this student's dims, e.g. "5×4"
    per_step: int | None  # loop steps for variables with one value per step
    gradient: str | None  # e.g. "dW1 (4×5)"; None for constants
    asked: bool
    given: bool  # d<name> is the upstream gradient the student is given


@dataclasses.dataclass
class ProblemWorkspace:
    assignment_problem: AssignmentProblem
    assignment: Assignment
    window: Window
    spec: Any
    instance: Instance
    document: dict[str, Any]  # public: no reference
    variables: list[VariableRow]
    forward: list[dict[str, Any]]  # {"kind", "number", "source", "mathml"}
    submissions: list[Submission]  # newest first
    attempts_used: int
    attempts_left: int | None  # None: unlimited

    @property
    def kind(self) -> AnswerKind:
        """The problem's answer kind (the page includes its partial)."""
        return kind_of(self.spec)

    @property
    def last_answer(self) -> str:
        return self.submissions[0].answer if self.submissions else ""


def public_document(instance: Instance) -> dict[str, Any]:
    """The engine document of an instance without anything a student may not see."""
    document = json.loads(instance.reference_json)
    for key in PRIVATE_KEYS:
        document.pop(key, None)
    return document


def open_problem(
    session: Session, user: User, assignment_id: int, problem_id: str, *,
    bank: Mapping[str, Any], secret: bytes, now: dt.datetime,
) -> ProblemWorkspace:
    """The student's problem page data (draws their instance on the first visit).

    Raises NotFound for a problem outside the user's courses, and for an
    assignment that has not opened yet (nothing of it is shown early).
    """
    from server.services.errors import NotFound

    assignment_problem = assignment_problem_for(session, user, assignment_id, problem_id)
    assignment = assignment_problem.assignment
    window = student_window(session, user.id, assignment, now)
    if now < assignment.open_at and not user.is_admin:
        raise NotFound(f"problem: assignment {assignment.title!r} opens at "
                       f"{assignment.open_at:%Y-%m-%d %H:%M} UTC")
    instance = ensure_instance(session, user, assignment_problem, bank, secret)
    spec = spec_for_version(bank, instance.problem_version)
    document = public_document(instance)
    submissions = problem_submissions(session, user, assignment_problem)
    used = sum(1 for s in submissions if s.attempt is not None)
    limit = assignment.max_attempts
    return ProblemWorkspace(
        assignment_problem=assignment_problem,
        assignment=assignment,
        window=window,
        spec=spec,
        instance=instance,
        document=document,
        variables=variable_rows(spec, document),
        forward=forward_lines(spec, document),
        submissions=submissions,
        attempts_used=used,
        attempts_left=None if limit is None else max(0, limit - used),
    )


def variable_rows(spec: Any, document: Mapping[str, Any]) -> list[VariableRow]:
    """Every variable of the student's program with its shape and its gradient's shape."""
    if not kind_of(spec).has_arrays:
        return []
    from server.engine.dimexpr import shape_text

    program = spec.program(tuple(document["choice_index"]))
    shapes = document["shapes"]
    indexed = set(document["indexed"])
    steps = int(document["steps"])
    rows = []
    for name in list(program.leaves) + list(program.intermediates):
        decl = spec.vars.get(name)
        if decl is not None:
            role = decl.role
        elif name == spec.given:
            role = "output"
        else:
            role = "intermediate"
        rows_, cols = shapes[name]
        numerator = document["layout"] == "numerator"
        gradient_size = f"{cols}×{rows_}" if numerator else f"{rows_}×{cols}"
        rows.append(VariableRow(
            name=name,
            role=role,
            shape=shape_text(program.shapes[name]),
            size=f"{rows_}×{cols}",
            per_step=steps if name in indexed else None,
            gradient=None if role == "const" else f"d{name} ({gradient_size})",
            asked=name in program.ask,
            given=name == spec.given,
        ))
    return rows


def forward_lines(spec: Any, document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The forward program (or the definitions of an expression problem) as MathML."""
    # What the student is shown of the forward program decides its MathML.
    return cached(_MATHML_CACHE, (spec.version, document["forward"]),
                  lambda: kind_of(spec).forward_mathml(spec, document))


# --- downloads ---------------------------------------------------------------------


def values_document(instance: Instance) -> dict[str, Any]:
    """The JSON download: forward values and d<given>, with the structure to read them."""
    document = public_document(instance)
    return {
        "problem": document["problem"],
        "layout": document["layout"],
        "dims": document["dims"],
        "choices": document["choices"],
        "forward": document["forward"],
        "given": "d" + document["given"],
        "ask": ["d" + name for name in document["ask"]],
        "indexed": document.get("indexed", []),
        "values": document["values"],
        **({"constants": document["constants"]} if "constants" in document else {}),
    }


def values_npz(instance: Instance) -> bytes:
    """The .npz download: one float64 array per value; per-step values stacked on axis 0."""
    import numpy as np

    document = public_document(instance)
    arrays: dict[str, Any] = {}
    indexed = set(document.get("indexed", []))
    for name, value in document["values"].items():
        base = name[1:] if name.startswith("d") and name[1:] in indexed else name
        if base in indexed:
            arrays[name] = np.stack([np.asarray(v, dtype=np.float64) for v in value])
        else:
            arrays[name] = np.asarray(value, dtype=np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def formatted_values(spec: Any, document: Mapping[str, Any],
                     order: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(name, shape, text) for showing values on the page, as the spec's decimals print
    them; in ``order`` (the variables table's: inputs and parameters, then the forward
    steps), then the given gradient and anything else."""
    import numpy as np

    from server.engine.render import format_array

    values = document.get("values", {})
    rank = {name: k for k, name in enumerate(order or [])}
    names = sorted(values, key=lambda n: (rank.get(n, len(rank)), n.startswith("d")))
    out = []
    for name in names:
        value = values[name]
        if isinstance(value, list) and value and isinstance(value[0], list) and value[0] \
                and isinstance(value[0][0], list):
            for t, step in enumerate(value):
                array = np.asarray(step, dtype=float)
                out.append((f"{name}[{t}]", "×".join(map(str, array.shape)),
                            format_array(array, spec.decimals)))
        else:
            array = np.asarray(value, dtype=float)
            out.append((name, "×".join(map(str, array.shape)), format_array(array, spec.decimals)))
    return out


def formatted_references(spec: Any, reference: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(name, shape, text) of the reference gradients, for staff: arrays as
    ``formatted_values`` prints them, an expression kind's derivative as text."""
    if kind_of(spec).has_arrays:
        return formatted_values(spec, {"values": reference})
    return [(name, "expression", str(value)) for name, value in reference.items()]


# --- help where the student writes ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConstantUse:
    name: str
    value: int
    used_in: list[str]  # the definitions that use it (empty: not used by this draw)


def constant_uses(spec: Any, document: Mapping[str, Any]) -> list[ConstantUse]:
    """An expression problem's constants, and which of the student's definitions use
    them (the definitions are shown with the constants already substituted)."""
    import re

    from server.engine.spec import substitute_choices

    constants = document.get("constants") or {}
    if not constants:
        return []
    picked = {name: spec.choices[name][index][1]
              for name, index in zip(spec.choices, document["choice_index"])}
    text, _ = substitute_choices(spec.forward_template, picked)
    uses: dict[str, list[str]] = {name: [] for name in constants}
    for line in text.splitlines():
        target, _, expr = line.partition("=")
        for name in constants:
            if re.search(rf"\b{re.escape(name)}\b", expr):
                uses[name].append(target.strip())
    return [ConstantUse(name, int(value), uses[name]) for name, value in constants.items()]


def worked_line(spec: Any, document: Mapping[str, Any]) -> dict[str, str] | None:
    """One line worked from this problem's own structure, for the help box:
    ``{"source", "line", "why"}`` (``AnswerKind.worked_line``)."""
    return cached(_MATHML_CACHE, ("worked", spec.version, document["forward"]),
                  lambda: kind_of(spec).worked_line(spec, document))
