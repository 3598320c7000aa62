"""Equations (``answer = "equations"``): the backward pass as numbered equations.

``ProgramKind`` is what every kind over a forward program of arrays shares
(the spec's ``[vars]`` and compiled programs, draws with mutant checks, the
instance document, MathML of the program); the numpy kind is one too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from server.engine.grade import check_equations, grade_equations
from server.engine.instance import (
    ArrayInstance,
    draw_hidden_instances,
    draw_instance,
    legacy_hidden_seeds,
)
from server.engine.kinds.base import AnswerKind, Drawn
from server.engine.render import forward_mathml, render_instance_text
from server.engine.results import GradeResult
from server.engine.solution import model_solution

if TYPE_CHECKING:
    from server.engine.spec import ProblemSpec, SpecBuilder


class ProgramKind(AnswerKind):
    """An answer kind over a forward program of arrays."""

    def check_variables(self, builder: SpecBuilder, dims: Mapping[str, tuple[int, int]],
                        constants: Mapping[str, tuple[int, int]]) -> dict:
        if constants:
            builder.err(builder.line_of("constants"),
                        "[constants] is only for answer = \"expression\"")
        return builder.variables(dims)

    def check_program(self, builder: SpecBuilder, template: str, choices: Mapping,
                      variables: Mapping, dims: Mapping, constants: Mapping, given: str,
                      ask: Sequence[str]) -> dict:
        return builder.compile_all(template, choices, variables, dims, given, tuple(ask))

    def draw(self, spec: ProblemSpec, seed: int, *, verify: str = "full") -> ArrayInstance:
        return draw_instance(spec, seed, verify=verify)

    def from_json(self, spec: ProblemSpec, document: Mapping) -> ArrayInstance:
        return ArrayInstance.from_json(document)

    def draw_measured(self, spec: ProblemSpec, seed: int) -> Drawn:
        from server.engine.instance import DrawStats

        stats = DrawStats()
        inst = draw_instance(spec, seed, stats=stats)
        return Drawn(inst, dict(inst.dims), stats.redraws, stats.calibration_seconds)

    def own_hidden_seeds(self, document: Mapping) -> tuple[int, ...]:
        return tuple(legacy_hidden_seeds(document))

    def check_draws(self, spec: ProblemSpec, seeds: int) -> str:
        """The mutant figures of the structures drawn (``nabla problems check``)."""
        import statistics
        import time

        from server.engine.instance import DrawStats, mutant_check

        times, redraws, for_mutants, structures, calibration = [], [], [], {}, 0.0
        for seed in range(seeds):
            stats = DrawStats()
            start = time.perf_counter()
            inst = draw_instance(spec, seed, stats=stats)
            elapsed = time.perf_counter() - start
            calibration += stats.calibration_seconds
            times.append((elapsed - stats.calibration_seconds) * 1e3)
            redraws.append(stats.redraws)
            for_mutants.append(stats.mutant_rejections)
            structures[inst.choice_index] = mutant_check(spec, inst.choice_index)
        if not seeds:
            return ""
        mutants = sum(len(c.mutants.mutants) for c in structures.values())
        equivalent = sum(len(c.equivalent) for c in structures.values())
        where = f" in {len(structures)} structures" if len(structures) > 1 else ""
        return (
            f": {mutants} mutants{where}, {mutants - equivalent} separated, {equivalent} "
            f"equivalent; {statistics.mean(redraws):.2f} redraws per draw "
            f"({statistics.mean(for_mutants):.2f} for mutants); draw "
            f"{statistics.median(times):.2f} ms median (calibration {calibration * 1e3:.0f} ms)"
        )

    def render_text(self, spec: ProblemSpec, inst: ArrayInstance) -> str:
        return render_instance_text(spec, inst)

    def worked_line(self, spec: ProblemSpec, document: Mapping) -> dict[str, str] | None:
        """A line of the model backward program that shows a rule in the answer
        language (a relu mask, else an element-wise derivative, else a transpose in a
        product); without one, the notation with this problem's own names."""
        from server.engine.solution import model_lines

        program = spec.program(tuple(document["choice_index"]))
        # Never a line that writes an asked gradient: the help shows the language, it
        # does not answer the problem.
        lines = [line for line in model_lines(spec, program)
                 if line.target[1:] not in program.ask]

        def pick(test: Callable[[str], bool]) -> Any:
            return next((line for line in lines if test(line.rhs)), None)

        chosen = (pick(lambda rhs: "> 0" in rhs) or pick(lambda rhs: "*" in rhs and "(" in rhs)
                  or pick(lambda rhs: ".T" in rhs or "@" in rhs))
        if chosen is not None:
            return {"source": chosen.step.source, "line": chosen.statement,
                    "why": "the rule of this forward step"}
        # Only asked gradients to write: the notation with this problem's own names.
        names = ([n for n in program.leaves if n in document["shapes"]]
                 or list(document["shapes"]))
        if not names:
            return None
        a = names[0]
        return {"source": "", "line": f"{a}.T,  ({a} > 0),  ones_like({a})",
                "why": f"the transpose of {a}, a 0/1 mask from {a}, ones of {a}'s shape"}

    def forward_mathml(self, spec: ProblemSpec, document: Mapping) -> list[dict[str, Any]]:
        return forward_mathml(spec, spec.program(tuple(document["choice_index"])))


class EquationsKind(ProgramKind):
    name = "equations"
    partial = "kinds/equations.html"
    numbered_steps = True

    def grade(self, spec: ProblemSpec, inst: ArrayInstance, text: str, *,
              hidden_seeds: Sequence[int] | None = None,
              run_job: Callable[..., Any] | None = None,
              check_source: Callable[..., Any] | None = None,
              draw_hidden: Callable[[Sequence[int]], list] | None = None) -> GradeResult:
        """Equations run on ``inst`` and on one hidden instance per seed of
        ``hidden_seeds`` (the server draws them per submission); ``None`` means
        the instance's own deterministic seeds (``legacy_hidden_seeds``), and
        ``()`` no hidden check."""
        if hidden_seeds is None:
            hidden_seeds = legacy_hidden_seeds(inst)
        hidden = draw_hidden_instances(spec, inst, hidden_seeds) if hidden_seeds else []
        return grade_equations(spec, inst, text, hidden=hidden)

    def check(self, spec: ProblemSpec, inst: ArrayInstance, text: str, *,
              check_source: Callable[..., Any] | None = None) -> GradeResult:
        """Parse ``text`` and run it on ``inst``: every line that does not parse, has
        the wrong shape or reads a gradient no earlier line assigned is an error."""
        return check_equations(spec, inst, text)

    def model_answer(self, spec: ProblemSpec, inst: ArrayInstance) -> str:
        return model_solution(spec, spec.program(inst.choice_index))
