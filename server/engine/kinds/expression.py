"""Expressions (``answer = "expression"``): the derivative as one scalar expression.

The spec has ``[constants]`` instead of ``[vars]`` and scalar definitions as
its forward lines (``server/engine/expression.py``); an answer is compared
with the derivative at sample points (``server/engine/symbolic.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from server.engine.expression import (
    ExpressionInstance,
    check_expression,
    check_expression_spec,
    draw_expression_instance,
    grade_expression,
)
from server.engine.kinds.base import AnswerKind, Drawn
from server.engine.render import render_expression_text

if TYPE_CHECKING:
    from server.engine.results import GradeResult
    from server.engine.spec import ProblemSpec, SpecBuilder


class ExpressionKind(AnswerKind):
    name = "expression"
    partial = "kinds/expression.html"
    has_arrays = False

    def check_domain(self, builder: SpecBuilder) -> tuple[float, float] | None:
        return builder.domain()

    def check_variables(self, builder: SpecBuilder, dims: Mapping[str, tuple[int, int]],
                        constants: Mapping[str, tuple[int, int]]) -> dict:
        return {}  # the symbols are the forward names

    def check_program(self, builder: SpecBuilder, template: str, choices: Mapping,
                      variables: Mapping, dims: Mapping, constants: Mapping, given: str,
                      ask: Sequence[str]) -> dict:
        if len(ask) != 1:
            builder.err(
                builder.line_of("ask"), "an expression problem asks for exactly one variable"
            )
            return {}
        if builder.data.get("vars"):
            builder.err(builder.line_of("vars"),
                        "an expression problem has no [vars]; its symbols are the forward names")
            return {}
        builder.issues.extend(check_expression_spec(
            builder.data, choices, {**dims, **constants}, given, list(ask), builder.line_of))
        return {}

    def draw(self, spec: ProblemSpec, seed: int, *, verify: str = "full") -> ExpressionInstance:
        """The derivative is checked at a few points whatever ``verify`` says."""
        return draw_expression_instance(spec, seed)

    def from_json(self, spec: ProblemSpec, document: Mapping) -> ExpressionInstance:
        """Drawn again from its seed: the grader wants the sympy derivative, which
        JSON does not keep (deterministic)."""
        return draw_expression_instance(spec, int(document["seed"]))

    def draw_measured(self, spec: ProblemSpec, seed: int) -> Drawn:
        """The constants vary between draws; nothing is redrawn."""
        inst = self.draw(spec, seed)
        return Drawn(inst, dict(inst.to_json().get("constants", {})), None, 0.0)

    def grade(self, spec: ProblemSpec, inst: ExpressionInstance, text: str, *,
              hidden_seeds: Sequence[int] | None = None,
              run_job: Callable[..., Any] | None = None,
              check_source: Callable[..., Any] | None = None,
              draw_hidden: Callable[[Sequence[int]], list] | None = None) -> GradeResult:
        """Judged at random points (seeded by the instance and ``hidden_seeds``)."""
        return grade_expression(spec, inst, text,
                                hidden_seeds=() if hidden_seeds is None else hidden_seeds)

    def check(self, spec: ProblemSpec, inst: ExpressionInstance, text: str, *,
              check_source: Callable[..., Any] | None = None) -> GradeResult:
        """Whether ``text`` parses as an expression in the variable (only the
        right-hand side: ``dL/dx = ...`` is an error saying so)."""
        return check_expression(spec, inst, text)

    def model_answer(self, spec: ProblemSpec, inst: ExpressionInstance) -> str:
        return inst.reference

    def worked_line(self, spec: ProblemSpec, document: Mapping) -> dict[str, str] | None:
        """The derivative of the first definition, the chain rule's first factor."""
        import sympy

        from server.engine.symbolic import parse_scalar_expression

        variable = document["ask"][0]
        first = document["forward"].splitlines()[0]
        name, _, text = first.partition("=")
        derivative = sympy.diff(parse_scalar_expression(text, [variable]),
                                sympy.Symbol(variable))
        return {"source": first.strip(), "line": sympy.sstr(derivative),
                "why": f"d{name.strip()}/d{variable}, the first factor of the chain rule"}

    def render_text(self, spec: ProblemSpec, inst: ExpressionInstance) -> str:
        return render_expression_text(spec, inst)

    def forward_mathml(self, spec: ProblemSpec, document: Mapping) -> list[dict[str, Any]]:
        """The definitions of the student's instance (constants filled in) as MathML."""
        import sympy
        from sympy.printing.mathml import mathml

        from server.engine.symbolic import ExpressionFormatError, parse_scalar_expression

        symbols = [*document["ask"]]
        lines = []
        for number, line in enumerate(document["forward"].splitlines(), 1):
            name, _, text = line.partition("=")
            name = name.strip()
            try:
                expr = parse_scalar_expression(text, symbols, what="spec")
                # The name as sympy prints it on the right-hand sides (g1 is g with
                # subscript 1 everywhere), and exp(u) as e^u with an upright e, not
                # the double-struck exponential e.
                lhs = mathml(sympy.Symbol(name), printer="presentation")
                body = (f"<mrow>{lhs}<mo>=</mo>"
                        f"{mathml(expr, printer='presentation')}</mrow>")
                body = body.replace("<mi>&ExponentialE;</mi>",
                                    '<mi mathvariant="normal">e</mi>')
                markup = ('<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">'
                          + body.replace("&InvisibleTimes;", "&#x2062;") + "</math>")
            except (ExpressionFormatError, sympy.SympifyError):
                markup = ""  # shown as text
            symbols.append(name)
            lines.append({"kind": "step", "number": number, "source": line.strip(),
                          "mathml": markup})
        return lines
