"""What every answer kind provides: the one interface the rest of Nabla dispatches through.

An answer kind (``answer = "equations"`` in a spec) decides how its spec is
checked, how an instance is drawn and read back from JSON, how an answer is
graded, what the model answer is, how an instance is shown on the command
line and on the problem page. Nothing outside ``server/engine/kinds`` asks
which kind a problem is: it asks the kind (``KINDS[spec.answer_kind]``).
How to add one: docs/design.md, "How to add an answer kind".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:
    from server.engine.results import GradeResult
    from server.engine.spec import ProblemSpec, SpecBuilder


class Drawn(NamedTuple):
    """One draw measured for the draw statistics (``AnswerKind.draw_measured``)."""

    instance: Any
    values: dict[str, Any]  # what varies between draws: the dims (or the constants)
    redraws: int | None  # None: this kind never redraws
    calibration_seconds: float  # spent calibrating (once per structure and process)


class AnswerKind(ABC):
    """One kind of answer. Subclasses set the class attributes and implement the
    abstract methods; one instance of each is registered in ``KINDS``."""

    name: ClassVar[str]  # the spec's ``answer = "..."``
    # The template partial (in server/templates) with the macros ``heading()``,
    # ``task(doc)``, ``help(doc)``, ``checked()``, ``costs()`` and ``answer_input(text)``
    # and the variable ``rows`` (docs/design.md, "How to add an answer kind").
    partial: ClassVar[str]
    file_suffix: ClassVar[str] = ".txt"  # what ``nabla grade`` reads for this kind
    # Answers are code that runs in the sandbox (``grade`` needs ``run_job`` and
    # ``check_source``); otherwise the engine grades them alone (in the judge).
    runs_student_code: ClassVar[bool] = False
    has_arrays: ClassVar[bool] = True  # instances carry array values (downloads, a table)
    # Answers are numbered lines, each matched to a step of the model solution
    # (analytics name the step of a first mistake).
    numbered_steps: ClassVar[bool] = False

    # -- the spec -------------------------------------------------------------------

    def check_domain(self, builder: SpecBuilder) -> tuple[float, float] | None:
        """The spec's ``domain``; only kinds that compare at sample points have one."""
        if "domain" in builder.data:
            builder.err(builder.line_of("domain"),
                        'domain is only for answer = "expression"')
        return None

    @abstractmethod
    def check_variables(self, builder: SpecBuilder, dims: Mapping[str, tuple[int, int]],
                        constants: Mapping[str, tuple[int, int]]) -> dict:
        """The spec's ``[vars]``, checked (issues go to ``builder.err``)."""

    @abstractmethod
    def check_program(self, builder: SpecBuilder, template: str, choices: Mapping,
                      variables: Mapping, dims: Mapping, constants: Mapping, given: str,
                      ask: Sequence[str]) -> dict:
        """Check the forward program for every choice; the compiled programs, if any."""

    # -- instances ------------------------------------------------------------------

    @abstractmethod
    def draw(self, spec: ProblemSpec, seed: int, *, verify: str = "full") -> Any:
        """The instance of ``spec`` for ``seed`` (deterministic). ``verify``: how its
        reference is checked (``"full"``: every entry by finite differences, for staff
        work; ``"directional"``: a student's draw, cheaper; the instance is the same)."""

    @abstractmethod
    def from_json(self, spec: ProblemSpec, document: Mapping) -> Any:
        """The instance of a stored document (``to_json`` with the reference)."""

    def tolerance(self, spec: ProblemSpec) -> float:
        """The relative tolerance answers are graded with."""
        return spec.rtol

    def draw_measured(self, spec: ProblemSpec, seed: int) -> Drawn:
        """Draw ``seed`` for the draw statistics of the staff pages."""
        return Drawn(self.draw(spec, seed), {}, None, 0.0)

    def own_hidden_seeds(self, document: Mapping) -> tuple[int, ...]:
        """The deterministic hidden seeds of the instance of ``document``: what
        ``hidden_seeds=None`` means to ``grade`` (previews and ``nabla grade`` use them)."""
        return ()

    def model_check_spec(self, spec: ProblemSpec) -> ProblemSpec:
        """The spec whose model answer is graded (in this process, without the
        sandbox) to validate a spec: ``spec`` itself unless the kind runs student code."""
        return spec

    def check_draws(self, spec: ProblemSpec, seeds: int) -> str:
        """Draw ``seeds`` instances (``nabla problems check``); figures to report."""
        for seed in range(seeds):
            self.draw(spec, seed)
        return ""

    # -- answers --------------------------------------------------------------------

    @abstractmethod
    def grade(self, spec: ProblemSpec, inst: Any, text: str, *,
              hidden_seeds: Sequence[int] | None = None,
              run_job: Callable[..., Any] | None = None,
              check_source: Callable[..., Any] | None = None,
              draw_hidden: Callable[[Sequence[int]], list] | None = None) -> GradeResult:
        """Grade ``text`` on ``inst`` and the hidden instances of ``hidden_seeds``
        (``None``: the instance's own deterministic ones, as ``nabla grade`` does).
        ``run_job`` and ``check_source`` reach the sandbox for kinds that run
        student code; the engine never imports it. ``draw_hidden(seeds)``: the hidden
        instances of those seeds, drawn elsewhere (the server's judge); None: drawn
        here."""

    @abstractmethod
    def check(self, spec: ProblemSpec, inst: Any, text: str, *,
              check_source: Callable[..., Any] | None = None) -> GradeResult:
        """Validation without grading (the student's Check): whether ``text`` is an
        answer, with an error at each line that is not; nothing compared with the
        reference, so no verdicts and no score. ``check_source`` (the sandbox's) for
        kinds that run student code: they are checked without running anything."""

    @abstractmethod
    def model_answer(self, spec: ProblemSpec, inst: Any) -> str:
        """The model answer, in this kind's answer language."""

    def worked_line(self, spec: ProblemSpec, document: Mapping) -> dict[str, str] | None:
        """One line worked from this problem's own structure for the help box beside
        the answer (``{"source", "line", "why"}``), or None; never an asked gradient."""
        return None

    # -- showing an instance -----------------------------------------------------------

    @abstractmethod
    def render_text(self, spec: ProblemSpec, inst: Any) -> str:
        """The instance as ``nabla instance`` prints it."""

    @abstractmethod
    def forward_mathml(self, spec: ProblemSpec, document: Mapping) -> list[dict[str, Any]]:
        """The forward program (or definitions) of a public instance document as
        MathML lines: ``{"kind", "number", "source", "mathml"}``."""
