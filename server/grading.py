"""Grading numpy ``backward`` answers: the engine's references, run through the sandbox.

The student's function runs in one sandbox job on the stored instance and on
hidden instances of the same structure with other dims and values (their seeds
drawn per submission), so hard-coded numbers and shapes fail. Feedback says
which instance failed, never its values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from server.engine.grade import (
    GradeResult,
    GradientResult,
    Layout,
    invalid,
    judge_gradient,
    weighted_score,
)
from server.engine.instance import Instance, draw_hidden_instances, legacy_hidden_seeds
from server.engine.spec import ProblemSpec

TIME_LIMIT_S = 2.0
MEMORY_MB = 512
JOB_VERDICTS = {"time_limit", "memory_limit", "runtime_error"}


def call_arguments(spec: ProblemSpec, inst: Instance) -> dict:
    """Keyword arguments for ``backward``: every forward value and d<given>."""
    return {name: value for name, value in inst.values.items()}


def grade_numpy(spec: ProblemSpec, inst: Instance, source: str, *,
                hidden_seeds: Sequence[int] | None = None, run_job=None) -> GradeResult:
    """Grade ``source`` on ``inst`` and the hidden instances of ``hidden_seeds``
    (the server draws them per submission; without them, the instance's own
    deterministic ones, as for ``nabla grade``)."""
    if run_job is None:
        from server.sandbox import run_job
    if hidden_seeds is None:
        hidden_seeds = legacy_hidden_seeds(inst)
    instances = [inst] + draw_hidden_instances(spec, inst, hidden_seeds)
    result = run_job(
        source,
        [call_arguments(spec, i) for i in instances],
        function="backward",
        time_limit_s=TIME_LIMIT_S,
        memory_mb=MEMORY_MB,
    )
    asked = ["d" + a for a in inst.ask]
    if result.status == "invalid":
        return invalid([{"line": _line_of(result.message), "message": result.message}])
    if result.status == "error":  # our fault: costs the student nothing
        return invalid([{"line": 0, "message": _job_message(result)}])
    if result.status in JOB_VERDICTS:
        verdict = result.status
        message = _job_message(result)
        return GradeResult(True, 0.0, [{"line": 0, "message": message}],
                           gradients={g: GradientResult(verdict, message) for g in asked})
    program = spec.program(inst.choice_index)
    verdicts: dict[str, GradientResult] = {}
    for number, (instance, call) in enumerate(zip(instances, result.calls)):
        where = "your instance" if number == 0 else f"hidden check {number} of {len(instances) - 1}"
        for g in asked:
            if g in verdicts and verdicts[g].verdict != "correct":
                continue
            verdicts[g] = _judge_call(g, instance, call, where, Layout(spec, program, instance), spec.numpy_rtol)
    return GradeResult(True, weighted_score(verdicts, spec.weights), [], gradients=verdicts)


def _judge_call(g: str, instance: Instance, call, where: str, layout: Layout, rtol: float) -> GradientResult:
    if call.status == "runtime_error":
        return GradientResult("runtime_error", f"on {where}: {call.traceback or call.message}")
    if call.status != "ok":
        return GradientResult("invalid_result", f"on {where}: {call.message}")
    if g not in call.outputs:
        return GradientResult("missing", f"backward() returned no {g!r} (on {where})")
    value = np.asarray(call.outputs[g], dtype=float)
    ref = instance.reference[g]
    if isinstance(ref, list):
        return GradientResult("incorrect", f"{g} is indexed over steps; return a list")
    verdict = judge_gradient(g[1:], value, ref, layout=layout, rtol=rtol,
                             contributions=[c for _, _, c in instance.contributions.get(g, [])])
    if verdict.verdict == "correct" or where == "your instance":
        return verdict
    return GradientResult(verdict.verdict, f"on {where} (other dims and values): {verdict.message}")


def _job_message(result) -> str:
    if result.status == "time_limit":
        return f"time limit: backward() ran longer than {TIME_LIMIT_S:g} s"
    if result.status == "memory_limit":
        return f"memory limit: backward() used more than {MEMORY_MB} MB"
    if result.status == "runtime_error":
        return result.message or "your module failed to load"
    return "the grader could not run your code; try again (this attempt is not counted against you)"


def _line_of(message: str) -> int:
    match = re.search(r"line (\d+)", message or "")
    return int(match.group(1)) if match else 0
