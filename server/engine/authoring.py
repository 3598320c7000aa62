"""What checking a TA's spec does, as plain functions of (text, seed): the work the
judge runs in its killable processes (server/judge/spec_tasks.py) for the editor,
the API and ``nabla problems check``/``sync``.

- ``check_text``: parse within the budget, draw and verify every check seed (each
  entry of every value by finite differences), grade the model solution on each;
  the first reason to refuse, at its line.
- ``preview_document``: one seed's instance document (references included) and
  the model answer, as a student with that seed would get them.
- ``draw_statistics``: the spread of dims and choices over many seeds, and what a
  draw costs.

Each refusal is a ``Refusal`` (line, message); nothing here raises for a bad spec.
Pure: the engine only.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from server.engine import progress

CHECK_SEEDS = 20  # the model solution must grade 100 % on seeds 0 .. CHECK_SEEDS - 1
STATISTICS_SEEDS = 100
PRIVATE_KEYS = ("reference", "accumulation")  # what a student's document never carries


@dataclass(frozen=True)
class Refusal:
    line: int | None  # None: about the whole spec
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


@dataclass
class CheckResult:
    """``refused`` empty: the spec may become a version (``meta`` names it)."""

    refused: list[Refusal] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)  # id, title, answer, version
    report: str = ""  # the kind's figures of the draws (``nabla problems check``)
    seconds: dict[str, float] = field(default_factory=dict)  # parse, slowest draw, total
    spec: Any = field(default=None, repr=False, compare=False)  # parsed, if it parses

    def to_json(self) -> dict[str, Any]:
        return {"refused": [r.to_json() for r in self.refused], "meta": self.meta,
                "report": self.report, "seconds": self.seconds}


def parse(text: str, name: str = "<spec>") -> tuple[Any, list[Refusal]]:
    """(spec, []) or (None, every issue at its line)."""
    from server.engine.spec import SpecError, parse_spec

    try:
        return parse_spec(text, name), []
    except SpecError as exc:
        return None, [Refusal(i.line, i.message) for i in exc.issues]


def meta(spec: Any) -> dict[str, str]:
    return {"id": spec.id, "title": spec.title, "answer": spec.answer_kind,
            "version": spec.version}


def check_text(text: str, name: str = "<spec>", *, seeds: int = CHECK_SEEDS,
               report: bool = False, draw_limit_s: float | None = None,
               parse_limit_s: float | None = None) -> CheckResult:
    """Everything that decides whether ``text`` may become a version.

    ``draw_limit_s``: a seed whose draw takes longer is refused (a student's draw
    must stay well inside its own limit); ``parse_limit_s`` likewise for parsing
    (web workers parse a stored version to show it). ``report``: the kind's
    figures of the draws too."""
    start = time.perf_counter()
    spec, refused = parse(text, name)
    parsed = time.perf_counter() - start
    result = CheckResult(refused, seconds={"parse": parsed}, spec=spec)
    if spec is None:
        return result
    if parse_limit_s is not None and parsed > parse_limit_s:
        result.refused.append(Refusal(None, (
            f"parsing this spec took {parsed:.1f} s; the limit is {parse_limit_s:g} s (every "
            "server parses a saved version to show it): use fewer choices or lines")))
        return result
    result.meta = meta(spec)
    if report:  # first: the figures then include the mutant calibration's time
        from server.engine.instance import InstanceError

        progress.stage("drawing the seeds of the mutant report")
        try:
            result.report = spec.kind.check_draws(spec, seeds)
        except InstanceError as exc:
            result.refused = [Refusal(None, str(exc))]
            return result
    result.refused = verify_model_solution(spec, seeds, draw_limit_s, result.seconds)
    result.seconds["total"] = time.perf_counter() - start
    return result


def verify_model_solution(spec: Any, seeds: int = CHECK_SEEDS,
                          draw_limit_s: float | None = None,
                          seconds: dict[str, float] | None = None) -> list[Refusal]:
    """[] if every seed draws (every entry verified) and the model solution grades
    100 % on it; else the first reason. A numpy problem's model is checked in its
    equations form (the numpy module is generated from it line by line)."""
    from server.engine.instance import InstanceError
    from server.engine.problem import draw, grade_answer, model_answer

    checked = spec.kind.model_check_spec(spec)
    slowest = 0.0
    for seed in range(seeds):
        start = time.perf_counter()
        try:
            inst = draw(checked, seed)
        except InstanceError as exc:
            return [Refusal(None, f"seed {seed} cannot be drawn: {exc}")]
        took = time.perf_counter() - start
        slowest = max(slowest, took)
        if seconds is not None:
            seconds["slowest_draw"] = slowest
        if draw_limit_s is not None and took > draw_limit_s:
            return [Refusal(None, (
                f"drawing seed {seed} took {took:.1f} s; a student's draw may take at most "
                f"{draw_limit_s:g} s here: make the dims smaller or the program shorter"))]
        progress.stage(f"grading the model solution on seed {seed}")
        result = grade_answer(checked, inst, model_answer(checked, inst), hidden_seeds=())
        if not result.valid:
            first = result.errors[0] if result.errors else {"line": None, "message": "?"}
            why = str(first["message"]).splitlines()[0]
            return [Refusal(None, (
                f"the model solution is not a valid answer on seed {seed} (line "
                f"{first['line']} of the model answer: {why}): an engine defect; "
                "the spec may still be right"))]
        if result.score < 1:
            return [Refusal(None, (
                f"the model solution scores {result.score:.0%} on seed {seed}, not 100%: "
                "the spec's forward program and asked gradients disagree"))]
    return []


def preview_document(spec: Any, seed: int) -> tuple[dict[str, Any] | None, str, list[Refusal]]:
    """(document with the references, model answer, []) for ``seed``; or
    (None, "", [why it cannot be drawn]). The document went through JSON with its
    keys sorted, as a stored instance's does, so a page shows both alike."""
    from server.engine.instance import InstanceError
    from server.engine.problem import draw, model_answer

    try:
        inst = draw(spec, seed)
    except InstanceError as exc:
        return None, "", [Refusal(None, f"seed {seed} cannot be drawn: {exc}")]
    document = json.loads(json.dumps(inst.to_json(include_reference=True), sort_keys=True))
    return document, model_answer(spec, inst), []


def student_document(spec: Any, seed: int) -> dict[str, Any]:
    """A student's instance document for ``seed`` (references included: it stays on
    the server), verified along random directions. Raises InstanceError."""
    from server.engine.problem import draw

    return draw(spec, seed, verify="directional").to_json(include_reference=True)


def hidden_documents(spec: Any, inst: Any, seeds: list[int]) -> list[dict]:
    """The hidden instances a numpy answer is also run on (the structure of the
    student's ``inst``, other dims and values, one per seed), references included."""
    from server.engine.instance import draw_hidden_instances

    return [h.to_json(include_reference=True)
            for h in draw_hidden_instances(spec, inst, [int(s) for s in seeds])]


@dataclass
class DrawStatistics:
    seeds: int
    dims: dict[str, list[tuple[Any, int]]]  # name -> (value, count), by value
    choices: dict[str, list[tuple[Any, int]]]
    mean_redraws: float | None  # None: expression problems do not redraw
    draw_ms_median: float
    draw_ms_max: float
    calibration_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DrawStatistics:
        pairs = {k: {name: [tuple(p) for p in counts] for name, counts in data[k].items()}
                 for k in ("dims", "choices")}
        return cls(**{**data, **pairs})


def draw_statistics(spec: Any, seeds: int = STATISTICS_SEEDS
                    ) -> tuple[DrawStatistics | None, list[Refusal]]:
    """Draw seeds 0 .. seeds-1: the spread of dims (constants for an expression
    problem) and of each [choose] choice, the mean redraws and the draw time."""
    from server.engine.instance import InstanceError

    dims: dict[str, Counter] = {}
    choices: dict[str, Counter] = {}
    redraws, times, calibration = [], [], 0.0
    for seed in range(seeds):
        start = time.perf_counter()
        try:
            drawn = spec.kind.draw_measured(spec, seed)
        except InstanceError as exc:
            return None, [Refusal(None, f"seed {seed} cannot be drawn: {exc}")]
        if drawn.redraws is not None:
            redraws.append(drawn.redraws)
        calibration += drawn.calibration_seconds
        start += drawn.calibration_seconds  # once per structure and process
        times.append((time.perf_counter() - start) * 1e3)
        for name, value in drawn.values.items():
            dims.setdefault(name, Counter())[value] += 1
        for name, value in (getattr(drawn.instance, "choices", None) or {}).items():
            choices.setdefault(name, Counter())[value] += 1
    return DrawStatistics(
        seeds=seeds,
        dims={k: sorted(c.items(), key=lambda kv: str(kv[0])) for k, c in dims.items()},
        choices={k: sorted(c.items(), key=lambda kv: str(kv[0])) for k, c in choices.items()},
        mean_redraws=statistics.mean(redraws) if redraws else None,
        draw_ms_median=statistics.median(times) if times else 0.0,
        draw_ms_max=max(times) if times else 0.0,
        calibration_ms=calibration * 1e3,
    ), []
