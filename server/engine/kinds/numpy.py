"""Numpy answers (``answer = "numpy"``): a module defining ``backward``, run in the sandbox.

The answer is checked on the student's own instance and on hidden instances of
the same structure with other dims and values (their seeds drawn per
submission), so hard-coded numbers and shapes fail. Each instance runs in its
own sandboxed child that is sent that instance's inputs only; the children of
one grade run concurrently.

Who decides what (docs/sandbox.md, "Outcomes"): whether the answer is invalid
(it does not compile, or binds no ``backward`` at module level) is decided
here (with the sandbox's ``check_source``, passed in: the engine never imports
the sandbox), before anything runs. Once a child has the job, the outcome costs an
attempt whatever the child sends: it can deliver arrays (judged here against
the references) or an error. For the own instance the error is shown whole
(message, traceback); for a hidden check only which check failed, a builtin
exception's type name and a line of the student's file, never a message,
printed output, values or shapes that came from the run.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.engine.dimexpr import Lin
from server.engine.grade import Layout, judge_gradient
from server.engine.instance import ArrayInstance, draw_hidden_instances, legacy_hidden_seeds
from server.engine.kinds.equations import ProgramKind
from server.engine.results import GradeResult, GradientResult, invalid, weighted_score
from server.engine.solution import model_solution

if TYPE_CHECKING:
    from server.engine.spec import ProblemSpec

FUNCTION = "backward"
TIME_LIMIT_S = 2.0
MEMORY_MB = 512
LIMIT_MESSAGES = {
    "time_limit": f"time limit: backward() ran longer than {TIME_LIMIT_S:g} s",
    "memory_limit": f"memory limit: backward() used more than {MEMORY_MB} MB",
}
OUR_FAILURE = ("the grader could not run your code; try again "
               "(this attempt is not counted against you)")
# What a hidden check may say about a verdict: nothing computed from the
# student's arrays (a shape they return can carry any number).
HIDDEN_VERDICT_TEXT = {
    "incorrect": "does not match the expected value",
    "wrong_shape": "has the wrong shape",
    "sign": "has the wrong sign",
    "missing_accumulation": "holds only part of its gradient (its contributions add up: +=)",
}


class NumpyKind(ProgramKind):
    name = "numpy"
    partial = "kinds/numpy.html"
    file_suffix = ".py"
    runs_student_code = True

    def tolerance(self, spec: ProblemSpec) -> float:
        return spec.numpy_rtol

    def model_check_spec(self, spec: ProblemSpec) -> ProblemSpec:
        """The equations form: the numpy model is generated from it line by line."""
        import dataclasses

        return dataclasses.replace(spec, answer_kind="equations")

    def grade(self, spec: ProblemSpec, inst: ArrayInstance, text: str, *,
              hidden_seeds: Sequence[int] | None = None,
              run_job: Callable[..., Any] | None = None,
              check_source: Callable[..., Any] | None = None,
              draw_hidden: Callable[[Sequence[int]], list] | None = None) -> GradeResult:
        if run_job is None or check_source is None:
            raise TypeError("numpy answers run in the sandbox: pass run_job and check_source "
                            "(server.sandbox)")
        return grade_numpy(spec, inst, text, hidden_seeds=hidden_seeds, run_job=run_job,
                           check_source=check_source, draw_hidden=draw_hidden)

    def check(self, spec: ProblemSpec, inst: ArrayInstance | None, text: str, *,
              check_source: Callable[..., Any] | None = None) -> GradeResult:
        """Whether the module compiles and binds ``backward`` (``check_source``, the
        sandbox's); its shapes are known only by running it, which a check never does."""
        if check_source is None:
            raise TypeError("numpy answers are checked with the sandbox's check_source")
        problem = check_source(text, FUNCTION)
        if problem is not None:
            return invalid([{"line": problem.line or 0, "message": problem.message}])
        return GradeResult(True, 0.0)

    def model_answer(self, spec: ProblemSpec, inst: ArrayInstance) -> str:
        return numpy_model_answer(spec, inst, model_solution(spec, spec.program(inst.choice_index)))


# A job's output cap: the asked gradients' size as float64, with a margin (a right
# answer never comes near it; a wrong shape may go a little over). Not the
# sandbox's 64 MB default: three such outputs took a grading process from ~42 MB
# to ~354 MB, times threads and workers.
OUTPUT_MARGIN = 1.25
OUTPUT_SLACK_BYTES = 64 << 10


def output_cap(inst: ArrayInstance, asked: Sequence[str]) -> int:
    """The bytes (as float64) that a job on ``inst`` may return for ``asked``."""
    elements = 0
    for name in asked:
        value = inst.reference[name]
        elements += sum(v.size for v in value) if isinstance(value, list) else value.size
    return int(elements * 8 * OUTPUT_MARGIN) + OUTPUT_SLACK_BYTES


def call_arguments(inst: ArrayInstance) -> dict:
    """Keyword arguments for ``backward``: every forward value and d<given>."""
    return {name: value for name, value in inst.values.items()}


def grade_numpy(spec: ProblemSpec, inst: ArrayInstance, source: str, *,
                run_job: Callable[..., Any], check_source: Callable[..., Any],
                hidden_seeds: Sequence[int] | None = None,
                concurrent: bool = True,
                draw_hidden: Callable[[Sequence[int]], list] | None = None) -> GradeResult:
    """Grade ``source`` on ``inst`` and the hidden instances of ``hidden_seeds``
    (the server draws them per submission; without them, the instance's own
    deterministic ones, as for ``nabla grade``). ``run_job`` runs one sandbox job
    (``server.sandbox.run_job``); it is called once per instance. ``check_source``
    (``server.sandbox.check_source``) decides whether the module is an answer.
    ``draw_hidden(seeds)`` draws the hidden instances (the server's judge does, in
    one exchange); without it they are drawn here, one by one."""
    problem = check_source(source, FUNCTION)
    if problem is not None:
        return invalid([{"line": problem.line or 0, "message": problem.message}])
    if hidden_seeds is None:
        hidden_seeds = legacy_hidden_seeds(inst)
    asked = ["d" + a for a in inst.ask]
    jobs = _Jobs(run_job, source, asked, concurrent)
    # The own instance's child starts first; the hidden instances are drawn while
    # the children before them run, then get their own children.
    instances = [inst]
    jobs.start(call_arguments(inst), output_cap(inst, asked), last=not hidden_seeds)
    drawn = iter(draw_hidden(list(hidden_seeds)) if draw_hidden is not None and hidden_seeds
                 else ())
    for k, seed in enumerate(hidden_seeds):
        instances += [next(drawn)] if draw_hidden is not None else draw_hidden_instances(
            spec, inst, [seed])
        jobs.start(call_arguments(instances[-1]), output_cap(instances[-1], asked),
                   last=k == len(hidden_seeds) - 1)
    results = jobs.results()
    if any(r.status == "error" for r in results):  # our fault: costs the student nothing
        return invalid([{"line": 0, "message": OUR_FAILURE}])
    if any(r.status == "invalid" for r in results):  # decided in this process, not a child's
        first = next(r for r in results if r.status == "invalid")
        return invalid([{"line": first.line or 0, "message": first.message}])
    program = spec.program(inst.choice_index)
    checks = [_Check(number, len(instances) - 1, instance, result, source)
              for number, (instance, result) in enumerate(zip(instances, results))]
    verdicts: dict[str, GradientResult] = {}
    shown: list[_Check] = []  # checks whose failure decided a verdict: their error is shown once
    for g in asked:
        for check in checks:
            verdict = check.judge(g, Layout(spec, program, check.instance), spec.numpy_rtol)
            if verdict.verdict != "correct" or check is checks[-1]:
                verdicts[g] = verdict
                if check.failure is not None and check not in shown:
                    shown.append(check)
                break
    verdicts = name_other_layout(verdicts, inst.layout)
    errors = [check.failure.error for check in shown]  # type: ignore[union-attr]
    return GradeResult(True, weighted_score(verdicts, spec.weights), errors, gradients=verdicts)


class _Jobs:
    """One sandbox job per instance: a child never holds another instance's inputs.
    Concurrently, every job but the last runs on a thread of a per-process pool
    (the last in the caller's thread)."""

    def __init__(self, run_job: Callable[..., object], source: str, outputs: Sequence[str],
                 concurrent: bool) -> None:
        self.run_job, self.source, self.concurrent = run_job, source, concurrent
        self.options = {"function": FUNCTION, "time_limit_s": TIME_LIMIT_S,
                        "memory_mb": MEMORY_MB, "outputs": list(outputs)}
        self.pending: list[Future | object] = []

    def start(self, call: dict, max_output_bytes: int, *, last: bool) -> None:
        options = {**self.options, "max_output_bytes": max_output_bytes}
        if self.concurrent and not last:
            self.pending.append(_executor().submit(self.run_job, self.source, [call],
                                                   **options))
        else:
            self.pending.append(self.run_job(self.source, [call], **options))

    def results(self) -> list:
        return [job.result() if isinstance(job, Future) else job for job in self.pending]


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """Threads that wait for sandboxed children (they hold the GIL only briefly)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="nabla-numpy-job")
        return _pool


def _forget_pool_after_fork() -> None:  # a forked server process starts its own threads
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


@dataclass(frozen=True)
class _Failure:
    """A check on which no gradient could be judged."""

    verdict: str  # runtime_error | time_limit | memory_limit | invalid_result
    error: dict  # the errors entry: {"line", "message"}
    note: str  # what each gradient says


class _Check:
    """One instance's job: the own instance (number 0) or hidden check ``number``."""

    def __init__(self, number: int, hidden: int, instance: ArrayInstance, result, source: str):
        self.instance, self.result = instance, result
        self.own = number == 0
        self.name = "your instance" if self.own else f"hidden check {number} of {hidden}"
        self.call = result.calls[0] if result.status == "ok" and result.calls else None
        self.failure = self._failure()

    def _failure(self) -> _Failure | None:
        result, call = self.result, self.call
        prefix = "" if self.own else f"{self.name} (other dims and values): "
        if result.status in LIMIT_MESSAGES:
            text = LIMIT_MESSAGES[result.status]
            return _Failure(result.status, {"line": 0, "message": prefix + text},
                            f"not computed{self._on}: {text}")
        if call is not None and call.status == "ok":
            return None
        if call is not None and call.status == "invalid_result":
            text = (call.message if self.own
                    else "backward() did not return a dict of real-valued arrays")
            return _Failure("invalid_result", {"line": 0, "message": prefix + text},
                            f"not judged{self._on}: the returned value could not be read "
                            "(see the errors)")
        # A runtime error: in a call, while the module loaded, or the process ended.
        facts = call if call is not None else result
        raised = bool(facts.error_type or facts.line or call is not None)
        kind = facts.error_type or "an exception"
        at = f" at line {facts.line}" if facts.line else ""
        summary = (f"backward() raised {kind}{at}" if raised
                   else "the answer's process stopped before returning a result")
        text = (facts.traceback or facts.message or summary) if self.own else summary
        where = f"see the error at line {facts.line}" if facts.line else "see the errors"
        return _Failure("runtime_error", {"line": facts.line or 0, "message": prefix + text},
                        f"not computed{self._on}: the run failed ({where})")

    @property
    def _on(self) -> str:
        return "" if self.own else f" on {self.name}"

    def judge(self, g: str, layout: Layout, rtol: float) -> GradientResult:
        if self.failure is not None:
            return GradientResult(self.failure.verdict, self.failure.note)
        outputs = self.call.outputs  # type: ignore[union-attr]
        if g not in outputs:
            return GradientResult("missing", f"backward() returned no {g!r}{self._on}")
        ref = self.instance.reference[g]
        if isinstance(ref, list):
            return GradientResult("incorrect", f"{g} is indexed over steps; return a list")
        contributions = [c for _, _, c in self.instance.contributions.get(g, [])]
        verdict = judge_gradient(g[1:], outputs[g], ref, layout=layout, rtol=rtol,
                                 contributions=contributions)
        if verdict.verdict == "correct" or self.own:
            return verdict
        text = HIDDEN_VERDICT_TEXT.get(verdict.verdict)
        if verdict.verdict == "transposed":  # the layout rule names dims, not numbers
            message = verdict.message
        elif verdict.verdict == "wrong_shape":
            message = f"{g} {text}: {layout.rule(g[1:])}"
        else:
            message = f"{g} {text or 'is wrong'}"
        return GradientResult(verdict.verdict, f"on {self.name} (other dims and values): "
                                               f"{message}")


def name_other_layout(verdicts: dict[str, GradientResult], layout: str
                      ) -> dict[str, GradientResult]:
    """An answer whose wrong gradients are all transposed (most of them) is in the
    other layout: say that, as the equations grader does, instead of "transposed"
    under every gradient."""
    wrong = [v for v in verdicts.values() if v.verdict != "correct"]
    transposed = [v for v in wrong if v.verdict == "transposed"]
    if not (len(verdicts) > 1 and wrong and len(transposed) == len(wrong)
            and len(transposed) >= max(2, len(verdicts) // 2 + 1)):
        return verdicts
    other = "denominator" if layout == "numerator" else "numerator"
    message = f"this answer uses {other} layout; the problem uses {layout} layout"
    return {g: GradientResult("wrong_layout", message) if v.verdict == "transposed" else v
            for g, v in verdicts.items()}


def _solved_dims(spec: ProblemSpec, program, dims_lines: list[str]) -> list[str]:
    """Dims that are no leaf's axis on their own, solved from a shape (of a leaf, or of an
    intermediate: a window x[t] is C×K) whose other dims are known:
    ``L = (X.shape[0] - (K - 2)) // 2`` for X of length 2*L + K - 2 (strided windows)."""
    known = {line.split("=")[0].strip() for line in dims_lines}
    out: list[str] = []
    progress = True
    while progress:
        progress = False
        for dim in spec.dims:
            if dim in known:
                continue
            for name, axis, d in ((n, a, d) for n in (*program.leaves, *program.intermediates)
                                  for a, d in enumerate(program.shapes[n])):
                coefs = dict(d.terms)
                if dim not in coefs or any(n not in known for n in coefs if n != dim):
                    continue
                rest = d - Lin(0, ((dim, coefs[dim]),))
                array = f"{name}[0]" if name in program.indexed else name  # one step's value
                value = f"{array}.shape[{axis}]" + (f" - ({rest})" if rest != Lin(0) else "")
                coef = coefs[dim]
                out.append(f"    {dim} = " + (f"({value}) // {coef}" if coef != 1 else value))
                known.add(dim)
                progress = True
                break
    return out


def numpy_model_answer(spec: ProblemSpec, inst: ArrayInstance, equations: str) -> str:
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
    dims_lines += _solved_dims(spec, program, dims_lines)
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
            zero = (
                f"np.zeros_like({name}.T)"
                if spec.layout == "numerator"
                else f"np.zeros_like({name})"
            )
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
