"""A fourth answer kind, added by following docs/design.md ("How to add an answer
kind"): one module (here, this file), one registry line, one partial."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import pytest

from server.engine.kinds import KINDS, AnswerKind
from server.engine.problem import (
    check_answer,
    draw,
    grade_answer,
    instance_from_document,
    model_answer,
)
from server.engine.results import GradeResult, GradientResult, invalid, weighted_score
from server.engine.spec import SpecError, parse_spec

TEMPLATES = Path(__file__).resolve().parents[2] / "server" / "templates"


# 1. The module: an AnswerKind. The toy asks for the value of dL/dx at a drawn point
#    of a scalar function of the spec's ``forward`` (one line ``L = a * x``).
@dataclass(frozen=True)
class ToyInstance:
    seed: int
    a: int
    x: int

    @property
    def reference(self) -> float:
        return float(self.a)  # d(a*x)/dx

    def to_json(self, *, include_reference: bool = True) -> dict:
        document = {"seed": self.seed, "a": self.a, "x": self.x, "forward": f"L = {self.a} * x",
                    "given": "L", "ask": ["x"]}
        if include_reference:
            document["reference"] = {"dx": self.reference}
        return document


class NumberKind(AnswerKind):
    name = "number"
    partial = "kinds/number.html"
    has_arrays = False

    def check_variables(self, builder, dims, constants) -> dict:
        if builder.data.get("vars"):
            builder.err(builder.line_of("vars"), "a number problem has no [vars]")
        return {}

    def check_program(self, builder, template, choices, variables, dims, constants, given,
                      ask) -> dict:
        if template.strip() != "L = a * x":
            builder.err(builder.line_of("forward"), "a number problem's forward is L = a * x")
        return {}

    def draw(self, spec, seed, *, verify="full") -> ToyInstance:
        return ToyInstance(seed, 2 + seed % 5, 1 + seed % 3)

    def from_json(self, spec, document) -> ToyInstance:
        return ToyInstance(int(document["seed"]), int(document["a"]), int(document["x"]))

    def check(self, spec, inst, text, *, check_source=None) -> GradeResult:
        try:
            float(text)
        except ValueError:
            return invalid([{"line": 1, "message": "line 1: write one number"}])
        return GradeResult(True, 0.0)

    def grade(self, spec, inst, text, *, hidden_seeds=None, run_job=None, draw_hidden=None,
              check_source=None) -> GradeResult:
        problem = self.check(spec, inst, text)
        if problem.errors:
            return problem
        value = float(text)
        verdict = GradientResult("correct" if abs(value - inst.reference) <= spec.rtol
                                 else "incorrect")
        verdicts = {"dx": verdict}
        return GradeResult(True, weighted_score(verdicts, spec.weights), gradients=verdicts)

    def model_answer(self, spec, inst) -> str:
        return f"{inst.reference:g}"

    def render_text(self, spec, inst) -> str:
        return f"{spec.id}: L = {inst.a} * x at x = {inst.x}"

    def forward_mathml(self, spec, document) -> list[dict]:
        return [{"kind": "step", "number": 1, "source": document["forward"], "mathml": ""}]


# 3. The partial: heading(), task(doc), help(doc), checked(), costs(), answer_input(text)
#    and rows.
PARTIAL = """{% set rows = 1 %}
{% macro heading() %}The function{% endmacro %}
{% macro task(doc) %}<p>Find dL/dx at x = {{ doc.x }}.</p>{% endmacro %}
{% macro help(doc) %}<p>One number.</p>{% endmacro %}
{% macro checked() %}It is a number.{% endmacro %}
{% macro costs() %}{% endmacro %}
{% macro answer_input(text) %}<input id="answer" name="answer" value="{{ text }}">{% endmacro %}
"""

SPEC = '''
id = "toy-number"
title = "A number"
answer = "number"
forward = "L = a * x"
given = "L"
ask = ["x"]
'''


@pytest.fixture
def number_kind(monkeypatch):
    # 2. The registry line (in server/engine/kinds/__init__.py: "number": NumberKind()).
    monkeypatch.setitem(KINDS, "number", NumberKind())


def test_a_spec_of_the_new_kind_parses_draws_and_grades(number_kind):
    spec = parse_spec(SPEC, "toy-number.toml")
    assert spec.answer_kind == "number" and spec.kind is KINDS["number"]
    inst = draw(spec, 3)
    assert instance_from_document(spec, inst.to_json()) == inst
    assert grade_answer(spec, inst, model_answer(spec, inst)).score == 1.0
    wrong = grade_answer(spec, inst, "41")
    assert wrong.valid and wrong.score == 0 and wrong.gradients["dx"].verdict == "incorrect"
    assert not grade_answer(spec, inst, "forty").valid
    assert check_answer(spec, inst, "41").errors == []
    assert check_answer(spec, inst, "forty").errors == [
        {"line": 1, "message": "line 1: write one number"}]


def test_the_new_kind_checks_its_own_spec_parts(number_kind):
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC.replace("L = a * x", "L = x"), "toy-number.toml")
    assert "toy-number.toml:5: a number problem's forward is L = a * x" in str(caught.value)


def test_an_unknown_kind_is_a_spec_error_naming_the_kinds():
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC, "toy-number.toml")
    assert "answer must be one of equations, numpy, expression (got 'number')" in str(caught.value)


def test_the_problem_page_shows_the_partial_of_the_new_kind(number_kind):
    loader = jinja2.ChoiceLoader([jinja2.DictLoader({"kinds/number.html": PARTIAL}),
                                  jinja2.FileSystemLoader(TEMPLATES)])
    env = jinja2.Environment(loader=loader, autoescape=True)
    page = env.from_string("{% import kind.partial as k %}<h2>{{ k.heading() }}</h2>"
                           "{{ k.task(doc) }}{{ k.help(doc) }}{{ k.checked() }}"
                           "{{ k.answer_input('4') }}<textarea rows={{ k.rows }}>")
    spec = parse_spec(SPEC, "toy-number.toml")
    html = page.render(kind=spec.kind, doc=draw(spec, 1).to_json(include_reference=False))
    assert html == ("<h2>The function</h2><p>Find dL/dx at x = 2.</p>"
                    '<p>One number.</p>It is a number.<input id="answer" name="answer" value="4">'
                    "<textarea rows=1>")
