"""Scalar-expression problems (answer = "expression"): the scalar rules.

The spec's forward lines define scalar functions (``g1 = a*x**2``,
``L = g1 * g2``) with integer constants drawn per student from
``[constants]`` and functions picked by ``[choose]``. The reference is the
sympy derivative of the given value with respect to the asked variable,
checked against central differences; answers are parsed through the
allowlist of ``symbolic`` and compared with the reference at random points on
both sides of zero where L is defined (``symbolic.judge_expression``), drawn
per submission.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import sympy

from server.engine import budget, progress
from server.engine.instance import BrokenProblemError, InstanceError, draw_dims
from server.engine.program import SpecIssue, substitute_choices
from server.engine.results import GradeResult, GradientResult, invalid, weighted_score

if TYPE_CHECKING:
    from server.engine.spec import ProblemSpec
from server.engine.symbolic import (
    MAGNITUDE_LIMIT,
    MAX_TEXT_CHARS,
    ExpressionFormatError,
    evaluate,
    judge_expression,
    parse_scalar_expression,
)

FD_POINTS = (0.45, 0.8, 1.3, 1.7)


@dataclass(frozen=True)
class ExpressionInstance:
    problem: str
    version: str
    seed: int
    constants: dict[str, int]
    choices: dict[str, str]
    choice_index: tuple[int, ...]
    forward: str  # the definitions as the student sees them, constants filled in
    given: str
    ask: tuple[str, ...]
    reference: str  # d(given)/d(ask[0]) as text
    derivative: sympy.Expr | None = field(default=None, compare=False, repr=False)
    function: sympy.Expr | None = field(default=None, compare=False, repr=False)  # L itself

    @property
    def variable(self) -> str:
        return self.ask[0]

    def to_json(self, *, include_reference: bool = True) -> dict:
        out = {
            "problem": self.problem, "version": self.version, "seed": self.seed, "layout": "scalar",
            "dims": {}, "constants": self.constants, "choices": self.choices,
            "choice_index": list(self.choice_index), "forward": self.forward, "given": self.given,
            "ask": list(self.ask), "values": {},
        }
        if include_reference:
            out["reference"] = {"d" + self.variable: self.reference}
        return out

    @classmethod
    def from_json(cls, data) -> ExpressionInstance:
        ask = tuple(data["ask"])
        return cls(
            data["problem"],
            data["version"],
            int(data["seed"]),
            dict(data["constants"]),
            dict(data["choices"]),
            tuple(data["choice_index"]),
            data["forward"],
            data["given"],
            ask,
            data["reference"]["d" + ask[0]],
        )


def compile_definitions(
    spec_lines: str, variable: str, constants
) -> tuple[list[tuple[str, sympy.Expr]], list[str]]:
    """Parse ``name = expression`` lines; returns the definitions and error messages."""
    defined: list[tuple[str, sympy.Expr]] = []
    errors: list[str] = []
    for number, line in enumerate(spec_lines.splitlines(), 1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        name, sep, expr = line.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            errors.append(f"forward line {number}: write 'name = expression'")
            continue
        if name == variable or name in constants or any(name == n for n, _ in defined):
            errors.append(f"forward line {number}: duplicate definition of {name}")
            continue
        symbols = [variable, *constants, *(n for n, _ in defined)]
        try:
            value = parse_scalar_expression(expr, symbols, what="spec")
        except ExpressionFormatError as exc:
            errors.append(f"forward line {number}: {exc.message}")
            continue
        defined.append((name, value))
    return defined, errors


def expanded_size(defined: list[tuple[str, sympy.Expr]], given: str) -> int:
    """The number of nodes of ``given`` with every definition substituted, counted
    without substituting (``g2 = g1 * g1`` doubles the size of g1 at each level)."""
    sizes: dict[str, int] = {}
    for name, value in defined:
        sizes[name] = sum(sizes.get(node.name, 1) if node.is_Symbol else 1
                          for node in sympy.preorder_traversal(value))
    return sizes.get(given, 0)


def _expand(defined, given: str) -> sympy.Expr:
    env: dict[sympy.Symbol, sympy.Expr] = {}
    for name, value in defined:
        env[sympy.Symbol(name)] = value.xreplace(env)
    return env[sympy.Symbol(given)]


def check_expression_spec(
    spec_data: dict, choices, constants, given: str, ask: list[str], line_of
) -> list[SpecIssue]:
    """Validate every choice combination of an expression problem."""
    import itertools

    issues: list[SpecIssue] = []
    variable = ask[0] if ask else "x"
    for combo in itertools.product(*(range(len(v)) for v in choices.values())):
        picked = {n: choices[n][i][1] for n, i in zip(choices, combo)}
        text, _ = substitute_choices(spec_data["forward"], picked)
        defined, errors = compile_definitions(text, variable, constants)
        for e in errors:
            issue = SpecIssue(line_of("forward"), e)
            if issue not in issues:
                issues.append(issue)
        if not errors and given not in [n for n, _ in defined]:
            issues.append(
                SpecIssue(
                    line_of("given"), f"given names {given!r}, which the forward lines never define"
                )
            )
        elif not errors and (size := expanded_size(defined, given)) > budget.MAX_EXPRESSION_NODES:
            issues.append(SpecIssue(line_of("forward"), (
                f"{given} has {size} nodes once every definition is substituted; the limit "
                f"is {budget.MAX_EXPRESSION_NODES}")))
        if issues:
            break
    return issues


def draw_expression_instance(spec: ProblemSpec, seed: int) -> ExpressionInstance:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    rng = np.random.default_rng(seed)
    choice_index = tuple(int(rng.integers(len(v))) for v in spec.choices.values())
    picked = {n: spec.choices[n][i][1] for n, i in zip(spec.choices, choice_index)}
    constants = draw_dims(spec.constants, rng)
    variable = spec.ask[0]
    text, _ = substitute_choices(spec.forward_template, picked)
    defined, errors = compile_definitions(text, variable, constants)
    if errors:
        raise BrokenProblemError(spec.id, "forward", float("nan"))
    subs = {sympy.Symbol(k): sympy.Integer(v) for k, v in constants.items()}
    defined = [(n, e.xreplace(subs)) for n, e in defined]
    x = sympy.Symbol(variable)
    # x is real (positive if the spec's domain says so), so that d|x|/dx is sign(x)
    assumed = sympy.Symbol(variable, positive=True) if spec.domain and spec.domain[0] > 0 \
        else sympy.Symbol(variable, real=True)
    f = _expand(defined, spec.given).xreplace({x: assumed})
    progress.stage(f"differentiating {spec.given} symbolically, seed {seed}")
    derivative = sympy.diff(f, assumed).xreplace({assumed: x})
    f = f.xreplace({assumed: x})
    reference = sympy.sstr(derivative)
    if len(reference) > MAX_TEXT_CHARS:
        raise InstanceError(
            f"{spec.id}: the derivative of {spec.given} is {len(reference)} characters long "
            f"written out, and an answer may have at most {MAX_TEXT_CHARS}: make "
            f"{spec.given} simpler")
    progress.stage(f"verifying the derivative of {spec.given} at {len(FD_POINTS)} points, "
                   f"seed {seed}")
    _verify(spec, f, derivative, x)
    shown = "\n".join(f"{n} = {sympy.sstr(e)}" for n, e in defined)
    return ExpressionInstance(
        spec.id, spec.version, seed, constants,
        {n: spec.choices[n][i][0] for n, i in zip(spec.choices, choice_index)}, choice_index,
        shown, spec.given, spec.ask, reference, derivative, f,
    )


def _verify(spec: ProblemSpec, f: sympy.Expr, derivative: sympy.Expr, x: sympy.Symbol) -> None:
    """The derivative against central differences (40 digits) at ``FD_POINTS``. Each
    value is first evaluated in bounded float64 (``symbolic.evaluate``): a function
    beyond 1e100 at a check point is refused there, before sympy's 40-digit
    arithmetic meets a number of 10^52 digits (``exp(exp(exp(exp(exp(x)))))``)."""
    for point in FD_POINTS:
        for expr, name in ((f, spec.given), (derivative, f"d{spec.given}/d{x}")):
            if evaluate(expr, {x.name: point}).status == "too_large":
                raise InstanceError(
                    f"{spec.id}: {name} is too large to evaluate at {x} = {point} (beyond "
                    f"{MAGNITUDE_LIMIT:.0e}): a problem's values must stay within it; nest "
                    "fewer exp or powers, or use smaller constants")
    h = sympy.Rational(1, 10**8)
    for p in FD_POINTS:
        p = sympy.Rational(p).limit_denominator(100)
        fd = (f.subs(x, p + h) - f.subs(x, p - h)).evalf(40) / (2 * h)
        an = derivative.subs(x, p).evalf(40)
        if not (an.is_real and fd.is_real):
            continue
        err = abs(float(fd) - float(an)) / max(abs(float(an)), 1e-3)
        if err > 1e-6:
            raise BrokenProblemError(spec.id, "d" + spec.given + "/d" + str(x), err)


def sample_seed(inst: ExpressionInstance, hidden_seeds: Sequence[int] = ()) -> int:
    """The seed of the sample points: per submission when the server gives hidden seeds
    (they are stored with it, so a regrade compares at the same points), else per instance."""
    text = ",".join(str(v) for v in (inst.seed, *hidden_seeds))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


# "dL/dx = 3*x", "L' = ...", "y = ...": a left-hand side before a single '='
_LEFT_SIDE_RE = re.compile(r"^\s*([^=<>!]{1,40}?)\s*=(?!=)")


def check_expression(spec: ProblemSpec, inst: ExpressionInstance, text: str) -> GradeResult:
    """Validation only: whether ``text`` parses as an expression in the variable.
    ``valid`` with no errors if it does; an invalid result naming the column if not."""
    left = _LEFT_SIDE_RE.match(text)
    if left:
        name = left.group(1).strip()
        return invalid([{"line": 1, "message": (
            f"write only the right-hand side: the expression in {inst.variable} "
            f"after '=', without '{name} ='")}])
    try:
        parse_scalar_expression(text, [inst.variable])
    except ExpressionFormatError as exc:
        return invalid([{"line": 1, "message": exc.render(text)}])
    return GradeResult(True, 0.0)


def grade_expression(spec: ProblemSpec, inst: ExpressionInstance, text: str, *,
                     hidden_seeds: Sequence[int] = ()) -> GradeResult:
    target = "d" + inst.variable
    problem = check_expression(spec, inst, text)
    if problem.errors:
        return problem
    answer = parse_scalar_expression(text, [inst.variable])
    # the reference is recomputed from the spec and seed, never parsed back from stored text
    if inst.derivative is None or inst.function is None:
        inst = draw_expression_instance(spec, inst.seed)
    judgement = judge_expression(answer, inst.derivative, [inst.variable], function=inst.function,
                                 rtol=spec.rtol, seed=sample_seed(inst, hidden_seeds),
                                 domain=spec.domain)
    if judgement.equal:
        correct = {target: GradientResult("correct")}
        return GradeResult(True, weighted_score(correct, spec.weights), gradients=correct)
    verdict = "sign" if judgement.verdict == "sign" else "incorrect"
    message = f"{target}: {judgement.message}"
    if judgement.verdict == "too_large":
        message = f"{target} is {judgement.message}"
    return GradeResult(True, 0.0, gradients={target: GradientResult(verdict, message)})
