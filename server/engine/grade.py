"""Grading backward-equation answers against an instance's references.

Every executed assignment (per step in loops) is compared with the reference
value of its target at that point; running sums of accumulated gradients are
matched contribution by contribution, so the order in which a student visits
the steps does not matter. Each line is also re-evaluated with every gradient
it reads replaced by its reference ("carry-forward"): one early slip is named
once, and a later line that is right given correct inputs says which wrong
lines its value carries, following what it reads. A line that reads a
gradient no earlier line assigned is an error at that line.

An answer is also run on hidden instances (the same structure with other dims
and values): a line or gradient is correct only if it is correct on every
instance, and a failure on a hidden one is reported by line and verdict,
without its values. ``weighted_score`` is the score of every answer kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from server.engine.dimexpr import shape_text
from server.engine.equations import (
    AnswerContext,
    AnswerFormatError,
    AnswerRuntimeError,
    AssignEvent,
    evaluate_rhs,
    parse_equations,
    prepare_values,
    run_equations,
)
from server.engine.instance import ArrayInstance
from server.engine.ops import ELEMENTWISE, OPS, l2_norm, rule_text
from server.engine.program import Program
from server.engine.results import (
    GradeResult,
    GradientResult,
    LineResult,
    invalid,
    weighted_score,
)
from server.engine.solution import model_lines

if TYPE_CHECKING:
    from server.engine.spec import ProblemSpec


# --------------------------------------------------------------------------- context


def answer_context(spec: ProblemSpec, inst: ArrayInstance) -> AnswerContext:
    """What an answer to this instance may name, with shapes in the layout."""
    program = spec.program(inst.choice_index)
    forward: dict = {}
    gradients: dict = {}
    for name in list(program.leaves) + list(program.intermediates):
        shape = tuple(inst.shapes[name])
        layout_shape = shape[::-1] if inst.layout == "numerator" else shape
        per_step = name in program.indexed
        forward[name] = [shape] * inst.steps if per_step else shape
        if (
            name == spec.given
            or spec.vars.get(name) is not None
            and spec.vars[name].role == "const"
        ):
            continue
        gradients["d" + name] = [layout_shape] * inst.steps if per_step else layout_shape
    return AnswerContext(
        forward=forward,
        gradients=gradients,
        readonly=frozenset({"d" + spec.given}),
        dims=dict(inst.dims),
    )


def _initial_grads(spec: ProblemSpec, inst: ArrayInstance) -> dict:
    return {"d" + spec.given: inst.values["d" + spec.given]}


def _forward_values(inst: ArrayInstance) -> dict:
    return {
        k: v for k, v in inst.values.items() if not k.startswith("d") or k[1:] not in inst.values
    }


# --------------------------------------------------------------------------- comparing


def close(a: np.ndarray, b: np.ndarray, rtol: float) -> bool:
    if a.shape != b.shape:
        return False
    return l2_norm(a - b) <= rtol * l2_norm(b) + 1e-12


def _ref_at(inst: ArrayInstance, target: str, index: tuple[int, ...]) -> np.ndarray:
    r = inst.reference[target]
    return r[index[0]] if isinstance(r, list) else r


def _label(target: str, index: tuple[int, ...], loop_env: Mapping[str, int] | None = None) -> str:
    if index:
        return f"{target}[{index[0]}]"
    if loop_env:
        return f"{target} (at {', '.join(f'{k} = {v}' for k, v in loop_env.items())})"
    return target


def _region_slices(region: str, shape: tuple[int, int]) -> tuple[slice, slice]:
    parts = region.strip("[]").split(",")

    def one(text: str, n: int) -> slice:
        text = text.strip()
        if text == ":":
            return slice(0, n)
        bits = [int(b) for b in text.split(":")]
        return slice(bits[0], bits[1])

    return one(parts[0], shape[0]), one(parts[1], shape[1])


class Layout:
    """Explains shapes: what a gradient's shape must be, and why."""

    def __init__(self, spec: ProblemSpec, program: Program, inst: ArrayInstance):
        self.spec, self.program, self.inst = spec, program, inst

    def rule(self, var: str) -> str:
        shape = self.program.shapes.get(var)
        if shape is None:
            return ""
        r, c = (str(s) for s in shape)
        if self.inst.layout == "numerator":
            if c == "1":
                return f"in numerator layout the derivative with respect to a {r}×1 vector is 1×{r}"
            return f"in numerator layout the derivative with respect to a {r}×{c} matrix is {c}×{r}"
        return (
            f"in denominator layout a gradient has the shape of its variable ({shape_text(shape)})"
        )

    def expected(self, var: str, actual: np.ndarray, expected: np.ndarray) -> str:
        got = "×".join(map(str, actual.shape))
        want = "×".join(map(str, expected.shape))
        rule = self.rule(var)
        return f"d{var} is {got} but should be {want}" + (f": {rule}" if rule else "")


# --------------------------------------------------------------------------- grading


def grade_equations(spec: ProblemSpec, inst: ArrayInstance, text: str, *,
                    hidden: Sequence[ArrayInstance] = ()) -> GradeResult:
    """Grade ``text`` on ``inst`` and on the ``hidden`` instances (drawn with
    ``draw_hidden_instances``: the same structure, other dims and values)."""
    program = spec.program(inst.choice_index)
    ctx = answer_context(spec, inst)
    try:
        parsed = parse_equations(text, ctx)
    except AnswerFormatError as exc:
        lines = exc.source_lines or text.splitlines()
        return invalid([{"line": e.line, "message": e.render(lines)} for e in exc.errors])
    result = _Grader(spec, program, inst, parsed, text).run()
    if result.score < 1 and spec.credit == "gradients":
        result = _check_other_layout(spec, program, inst, text, result)
    if hidden and result.valid and _anything_correct(result):
        # The same structure: the same names, so the parse stands; only shapes and dims differ.
        others = []
        for h in hidden:
            on_h = dataclasses.replace(parsed, ctx=answer_context(spec, h))
            others.append(_Grader(spec, program, h, on_h, text).run())
        result = _merge_hidden(spec, result, others)
    return result


def check_equations(spec: ProblemSpec, inst: ArrayInstance, text: str) -> GradeResult:
    """Validation only: parse ``text`` and run it on ``inst`` without comparing anything
    with the reference. Every line that does not parse, has the wrong shape for this
    instance or reads a gradient no earlier line assigned is an error at its line; the
    result has no verdicts and no score (``valid`` says whether grading would run)."""
    try:
        parsed = parse_equations(text, answer_context(spec, inst))
    except AnswerFormatError as exc:
        lines = exc.source_lines or text.splitlines()
        return invalid([{"line": e.line, "message": e.render(lines)} for e in exc.errors])
    lines = text.splitlines()
    errors: list[dict] = []

    def on_error(exc: AnswerRuntimeError) -> None:
        errors.append({"line": exc.line, "message": exc.render(lines)})

    try:
        run_equations(parsed, _forward_values(inst), _initial_grads(spec, inst),
                      on_error=on_error, strict_reads=True)
    except AnswerRuntimeError as exc:  # a whole-run limit (too many steps)
        errors.append({"line": exc.line, "message": exc.render(lines)})
    # A loop body fails once per step: its first failure, and how many steps failed.
    first: dict[int, dict] = {}
    count: dict[int, int] = {}
    for error in errors:
        first.setdefault(error["line"], error)
        count[error["line"]] = count.get(error["line"], 0) + 1
    merged = [{"line": line, "message": error["message"] + (
        f"\n(and at {count[line] - 1} more step{'s' if count[line] > 2 else ''} of the loop)"
        if count[line] > 1 else "")} for line, error in sorted(first.items())]
    return GradeResult(True, 0.0, merged)


def _anything_correct(result: GradeResult) -> bool:
    return (any(e.verdict == "correct" for e in result.equations)
            or any(g.verdict == "correct" for g in result.gradients.values()))


def _hidden_message(verdict: str, number: int, count: int) -> str:
    return (f"right on your instance, but {verdict.replace('_', ' ')} on hidden check {number} of "
            f"{count} (the same network with other dims and values): does it depend on your "
            "instance's sizes or numbers?")


def _merge_hidden(spec: ProblemSpec, own: GradeResult, others: list[GradeResult]) -> GradeResult:
    """A line or gradient is correct only if it is correct on every instance."""
    count = len(others)
    equations = []
    for e in own.equations:
        rule = e.rule_correct
        for number, other in enumerate(others, 1):
            h = next((x for x in other.equations if x.line == e.line), None)
            failed = "invalid" if not other.valid else (h.verdict if h is not None else "correct")
            if rule and (not other.valid or (h is not None and h.rule_correct is False)):
                rule = False
            if e.verdict == "correct" and failed != "correct":
                message = _hidden_message(failed, number, count)
                e = LineResult(e.line, e.target, failed, rule, message)
        equations.append(dataclasses.replace(e, rule_correct=rule))
    gradients = dict(own.gradients)
    for g, v in own.gradients.items():
        if v.verdict != "correct":
            continue
        for number, other in enumerate(others, 1):
            h = other.gradients.get(g) if other.valid else GradientResult("invalid")
            if h is not None and h.verdict != "correct":
                gradients[g] = GradientResult(h.verdict, _hidden_message(h.verdict, number, count))
                break
    score = _score(spec, equations, gradients)
    return dataclasses.replace(own, score=score, equations=equations, gradients=gradients)


def _score(spec: ProblemSpec, equations: list[LineResult], gradients: dict[str, GradientResult]):
    if spec.credit == "rules":
        if not equations:
            return 0.0
        return round(sum(1 for e in equations if e.rule_correct) / len(equations), 6)
    return weighted_score(gradients, spec.weights)


def flip_layout(inst: ArrayInstance) -> ArrayInstance:
    """The same instance seen in the other layout (every gradient transposed)."""

    def t(v):
        return [x.T.copy() for x in v] if isinstance(v, list) else v.T.copy()

    given = "d" + inst.given
    return dataclasses.replace(
        inst,
        layout="denominator" if inst.layout == "numerator" else "numerator",
        values={k: t(v) if k == given else v for k, v in inst.values.items()},
        reference={k: t(v) for k, v in inst.reference.items()},
        contributions={
            k: [(ln, step, c.T.copy()) for ln, step, c in items]
            for k, items in inst.contributions.items()
        },
    )


def _check_other_layout(spec, program, inst, text, result: GradeResult) -> GradeResult:
    """An answer that is right in the other layout gets told exactly that."""
    other = flip_layout(inst)
    try:
        parsed = parse_equations(text, answer_context(spec, other))
    except AnswerFormatError:
        return result
    alt = _Grader(spec, program, other, parsed, text).run()
    if alt.score <= result.score or alt.score < 1:
        return result
    message = (
        f"this answer is right in {other.layout} layout, but the problem uses "
        f"{inst.layout} layout: "
        + Layout(spec, program, inst).rule(program.ask[0])
    )
    gradients = {
        k: v if v.verdict == "correct" else GradientResult("wrong_layout", message)
        for k, v in result.gradients.items()
    }
    return dataclasses.replace(result, gradients=gradients)


class _Grader:
    def __init__(self, spec, program, inst, parsed, text):
        self.spec, self.program, self.inst, self.parsed = spec, program, inst, parsed
        self.lines = text.splitlines()
        self.rtol = spec.rtol
        self.layout = Layout(spec, program, inst)
        self.values = _forward_values(inst)
        self.prepared = prepare_values(parsed, self.values)  # for evaluate_rhs, converted once
        self.matched: dict[tuple[str, tuple], list[int]] = {}  # contributions matched so far
        self.per_line: dict[int, list[LineResult]] = {}
        self.tainted: dict[str, int] = {}  # gradient -> line of the runtime error it depends on
        # (gradient, step) -> the lines whose mistakes its current value carries
        self.carries: dict[tuple[str, tuple], frozenset[int]] = {}
        self.accumulation_errors: dict[str, int] = {}
        self.rule_claims: dict[tuple[str, tuple], set[int]] = {}  # contributions lines matched
        self.errors: list[dict] = []
        self.assigned: set[str] = set()
        self.last_line: dict[str, int] = {}  # gradient -> the line that last assigned it
        self.flags: dict[int, LineResult] = {}  # right lines after which something is missing

    # contributions of a target element, in the layout
    def contributions(self, target: str, index: tuple) -> list[np.ndarray]:
        label = f"{target}[{index[0]}]" if index else target
        items = self.inst.contributions.get(label)
        if items:
            return [c for _, _, c in items]
        return [_ref_at(self.inst, target, index)]

    def lookup(self, name: str, index: tuple) -> np.ndarray:
        if name == "d" + self.spec.given:
            v = self.inst.values[name]
        else:
            v = self.inst.reference[name]
        return v[index[0]] if isinstance(v, list) else v

    def run(self) -> GradeResult:
        try:
            final = run_equations(
                self.parsed, self.values, _initial_grads(self.spec, self.inst),
                on_assign=self.on_assign, on_error=self.on_error, strict_reads=True,
            )
        except AnswerRuntimeError as exc:  # a whole-run limit (too many steps)
            return invalid([{"line": exc.line, "message": exc.render(self.lines)}])
        gradients = self.judge_gradients(final)  # may flag a line where a contribution is missing
        equations = [self.merge(line, results) for line, results in sorted(self.per_line.items())]
        equations = [self.flags.get(e.line, e) if e.verdict == "correct" else e for e in equations]
        return GradeResult(True, _score(self.spec, equations, gradients), self.errors, equations,
                           gradients)

    def merge(self, line: int, results: list[LineResult]) -> LineResult:
        wrong = [r for r in results if r.verdict != "correct"]
        first = wrong[0] if wrong else results[0]
        rule = (
            all(r.rule_correct for r in results if r.rule_correct is not None) if results else None
        )
        if wrong and len(results) > 1 and len(wrong) < len(results):
            message = first.message + f" (wrong at {len(wrong)} of {len(results)} steps)"
        else:
            message = first.message
        return LineResult(line, first.target, first.verdict, rule, message)

    def record(self, line: int, result: LineResult) -> None:
        self.per_line.setdefault(line, []).append(result)

    # -- a runtime error on one line -------------------------------------------

    def on_error(self, exc: AnswerRuntimeError) -> None:
        target = exc.target or "?"
        message = exc.render(self.lines).split("\n")[0].split(": ", 1)[-1]
        hint = self.mask_hint(target)
        if hint:
            message += f"; {hint}"
        verdict = "wrong_shape" if "shape" in exc.message or "×" in exc.message else "incorrect"
        self.tainted[target] = exc.line
        self.carries[(target, exc.index)] = frozenset({exc.line})
        self.assigned.add(target)
        self.record(
            exc.line, LineResult(exc.line, _label(target, exc.index), verdict, False, message)
        )

    def mask_hint(self, target: str) -> str:
        """For the gradient of an element-wise function's input: where its derivative comes from."""
        var = target[1:]
        for number, (step, _) in enumerate(self.program.steps(), 1):
            fn = ELEMENTWISE.get(step.op)
            if fn and step.args[0].name == var:
                what = "the mask" if step.op == "relu" else f"the derivative of {step.op}"
                return f"{what} must come from {var}, the input of step {number} ({step.source})"
        return ""

    # -- one executed assignment --------------------------------------------------

    def on_assign(self, ev: AssignEvent) -> None:
        self.assigned.add(ev.target)
        self.last_line[ev.target] = ev.line
        label = _label(ev.target, ev.index, ev.loop_env if not ev.index else None)
        taint = next((self.tainted[g] for g, _ in ev.reads if g in self.tainted), None)
        if taint is not None:
            self.tainted[ev.target] = taint
        elif ev.op == "=" and ev.target in self.tainted:
            del self.tainted[ev.target]
        rule_ok = self.rule_correct(ev)
        verdict, message = self.judge_value(ev)
        # the mistakes this value carries: those of what the line reads (and, for +=, of
        # what the target held), plus its own
        carried = set().union(*(self.carries.get(r, ()) for r in ev.reads))
        if ev.op != "=" or ev.region is not None:
            carried |= self.carries.get((ev.target, ev.index), frozenset())
        carried.discard(ev.line)
        if verdict == "missing_accumulation":
            rule_ok = False  # '=' where the rule accumulates is this line's own mistake
        elif verdict != "correct" and rule_ok and carried:
            message = f"right rule; the value carries {_mistakes_from(carried)}"
        elif verdict == "correct" and rule_ok is False:
            rule_ok = True  # right value by another route
        key = (ev.target, ev.index)
        if verdict == "correct":
            self.carries.pop(key, None)
        else:
            self.carries[key] = frozenset(carried | ({ev.line} if not rule_ok else set()))
        self.record(ev.line, LineResult(ev.line, label, verdict, rule_ok, message))

    def rule_correct(self, ev: AssignEvent) -> bool | None:
        try:
            rhs = evaluate_rhs(self.parsed, ev, self.prepared, self.lookup)
        except AnswerRuntimeError:
            return False
        expected = self.contributions(ev.target, ev.index)
        if ev.region is not None:
            rows, cols = _region_slices(ev.region, ev.before.shape)
            expected = [c[rows, cols] for c in expected]
        if ev.op == "-=":
            rhs = -rhs
        # each contribution is one line's to claim: a line that adds one that an earlier
        # line already added (db += du3 twice) is not right by rule
        claimed = self.rule_claims.setdefault((ev.target, ev.index), set())
        if ev.op == "=" and ev.region is None:
            claimed.clear()  # what the target held is overwritten
        for i, c in enumerate(expected):
            if i not in claimed and close(rhs, c, self.rtol):
                claimed.add(i)
                return True
        # a whole gradient may also be written in one line
        ref = _ref_at(self.inst, ev.target, ev.index)
        if ev.region is None and not claimed and close(rhs, ref, self.rtol):
            claimed.update(range(len(expected)))
            return True
        return False

    def judge_value(self, ev: AssignEvent) -> tuple[str, str]:
        var = ev.target[1:]
        ref = _ref_at(self.inst, ev.target, ev.index)
        after = ev.after
        key = (ev.target, ev.index)
        contribs = self.contributions(ev.target, ev.index)
        matched = self.matched.setdefault(key, [])
        if after.shape != ref.shape:
            if after.shape == ref.T.shape and close(after, ref.T, self.rtol):
                return (
                    "transposed",
                    f"d{var} is the transpose of the right value: " + self.layout.rule(var),
                )
            hint = self.broadcast_hint(var, after, ref)
            shape = self.layout.expected(var, after, ref)
            return "wrong_shape", f"{hint} ({shape})" if hint else shape
        if close(after, ref, self.rtol):
            self.matched[key] = list(range(len(contribs)))
            return "correct", ""
        increment = after - ev.before if ev.op != "=" else after
        unmatched = [i for i in range(len(contribs)) if i not in matched]
        if ev.region is not None and ev.op == "=":
            return self.judge_region_assignment(ev, var, contribs, matched, unmatched, ref)
        for i in unmatched:
            if close(increment, contribs[i], self.rtol):
                if ev.op == "=" and matched:
                    self.matched[key] = [i]
                    self.accumulation_errors.setdefault(ev.target, ev.line)
                    return "missing_accumulation", (
                        f"'=' overwrites what earlier steps added to {ev.target}: {var} is "
                        "used more than once in the forward pass, so its gradient "
                        "accumulates; use '+='"
                    )
                matched.append(i)
                return "correct", ""
        partial = sum((contribs[i] for i in matched), np.zeros_like(ref))
        if matched and close(after, partial, self.rtol):
            return "correct", ""
        if (ev.op == "=" and ev.before.shape == after.shape and ev.before.any()
                and close(ev.before + after, ref, self.rtol)):
            self.accumulation_errors.setdefault(ev.target, ev.line)
            return (
                "missing_accumulation",
                f"use '+=' for {ev.target}: it already holds another contribution",
            )
        return self.diagnose(
            var, after - partial if ev.op != "=" else after, contribs, unmatched, ref, ev.index
        )

    def judge_region_assignment(
        self, ev, var, contribs, matched, unmatched, ref
    ) -> tuple[str, str]:
        """``dX[:, a:b] = value``: right only if nothing else was added to that region."""
        rows, cols = _region_slices(ev.region, ev.before.shape)
        written = ev.after[rows, cols]
        partial = sum((contribs[i] for i in matched), np.zeros_like(ref))
        for i in unmatched:
            if close(written, contribs[i][rows, cols], self.rtol):
                matched.append(i)
                if np.any(partial[rows, cols]):
                    self.accumulation_errors.setdefault(ev.target, ev.line)
                    return "missing_accumulation", (
                        f"'=' overwrites what earlier steps added to "
                        f"{ev.target}{ev.region}: the windows overlap, so use '+='"
                    )
                return "correct", ""
        return self.diagnose(
            var, written, [c[rows, cols] for c in contribs], unmatched, ref[rows, cols], None
        )

    def diagnose(self, var: str, value: np.ndarray, contribs, unmatched, ref,
                 index: tuple | None = ()) -> tuple[str, str]:
        targets = [contribs[i] for i in unmatched] or [ref]
        for expected in targets + [ref]:
            if value.shape == expected.shape and close(value, -expected, self.rtol):
                return "sign", f"d{var} has the wrong sign"
            if (
                value.shape == expected.T.shape
                and value.shape != expected.shape
                and close(value, expected.T, self.rtol)
            ):
                return "transposed", f"d{var} is transposed: " + self.layout.rule(var)
            if (
                value.shape == expected.shape
                and value.shape[0] == value.shape[1]
                and close(value, expected.T, self.rtol)
            ):
                return "transposed", f"d{var} is transposed"
        hint = (self.derivative_hint(var, value)
                or (self.named_mistake(var, value, index) if index is not None else ""))
        return "incorrect", hint or f"d{var} does not match the expected value"

    def derivative_hint(self, var: str, value: np.ndarray) -> str:
        """Name a missing or misplaced element-wise derivative (a relu mask...)."""
        for step, _ in self.program.steps():
            fn = ELEMENTWISE.get(step.op)
            if not fn or step.args[0].name != var or step.indexed:
                continue
            upstream = self.inst.reference.get("d" + step.target)
            if upstream is None or isinstance(upstream, list):
                return ""
            if close(value, upstream, self.rtol):
                what = (
                    f"the mask ({var} > 0)" if step.op == "relu" else f"the derivative of {step.op}"
                )
                return f"d{var} is missing {what}: '{step.source}' is element-wise"
            swapped = self.swapped_derivative(step, fn, var, value, upstream)
            if swapped:
                return swapped
            for other, _ in self.program.steps():
                if other is step or other.op != step.op or other.indexed:
                    continue
                a = self.inst.values[other.args[0].name]
                z = self.inst.values[other.target]
                deriv = ELEMENTWISE[step.op].derivative(a, z)
                if deriv.shape[::-1] == upstream.shape or deriv.shape == upstream.shape:
                    d = deriv.T if self.inst.layout == "numerator" else deriv
                    if d.shape == upstream.shape and close(value, upstream * d, self.rtol):
                        return (f"the derivative must come from {var}, the input of "
                                f"'{step.source}', not {other.args[0].name}")
            a, z = self.inst.values[var], self.inst.values[step.target]
            for name, other_fn in ELEMENTWISE.items():
                if name == step.op:
                    continue
                with np.errstate(all="ignore"):
                    d = other_fn.derivative(a, z)
                d = d.T if self.inst.layout == "numerator" else d
                if (
                    d.shape == upstream.shape
                    and np.all(np.isfinite(d))
                    and close(value, upstream * d, self.rtol)
                ):
                    return (
                        f"wrong derivative: d{var} uses the derivative formula of {name}, "
                        f"but '{step.source}' applies {step.op}"
                    )
        return ""

    def swapped_derivative(self, step, fn, var: str, value, upstream) -> str:
        """``g * (1 - g)`` written at the input ``ag`` of ``g = sigmoid(ag)``, and the like."""
        a, z = self.inst.values[var], self.inst.values[step.target]
        with np.errstate(all="ignore"):
            right, wrong = fn.derivative(a, z), fn.derivative(z, a)
        if self.inst.layout == "numerator":
            right, wrong = right.T, wrong.T
        if (wrong.shape != upstream.shape or not np.all(np.isfinite(wrong))
                or close(wrong, right, self.rtol) or not close(value, upstream * wrong, self.rtol)):
            return ""
        return (f"derivative at the wrong variable: for '{step.source}' the derivative is "
                f"{fn.derivative_text.format(a=var, z=step.target)}, not "
                f"{fn.derivative_text.format(a=step.target, z=var)}")

    def upstream(self, step, index: tuple) -> np.ndarray | None:
        g = self.inst.reference.get("d" + step.target)
        if g is None and step.target == self.spec.given:
            g = self.inst.values["d" + step.target]
        if isinstance(g, list):
            return g[index[0]] if step.indexed and index else None
        return g

    def forward_value(self, name: str, indexed: bool, index: tuple) -> np.ndarray | None:
        v = self.inst.values[name]
        if isinstance(v, list):
            return v[index[0]] if indexed and index else None
        return v

    def named_mistake(self, var: str, value: np.ndarray, index: tuple) -> str:
        """A mistake its operation's record names (``Operation.mistakes``: a mean's missing
        1/B, a constant factor left out, a softmax Jacobian taken as its diagonal, a
        maximum's gradient sent to every element), for the step that ``var`` feeds."""
        numerator = self.inst.layout == "numerator"
        for step, _ in self.program.steps():
            record = OPS[step.op]
            names = [a.name for a in step.args]
            if record.mistakes is None or var not in names:
                continue
            up = self.upstream(step, index)
            out = self.forward_value(step.target, step.indexed, index)
            args = [a.const if a.name is None else
                    self.forward_value(a.name, a.indexed, index) for a in step.args]
            if up is None or out is None or any(a is None for a in args):
                continue
            i = names.index(var)
            g = up.T if numerator else up
            for wrong, message in record.mistakes(i, g, args, out, step.region_text):
                wrong = wrong.T if numerator else wrong
                if value.shape == wrong.shape and close(value, wrong, self.rtol):
                    return message.format(var=var, source=step.source)
        return ""

    def broadcast_hint(self, var: str, value: np.ndarray, ref: np.ndarray) -> str:
        """A bias broadcast with a row (column) of ones whose gradient was not summed over
        the batch, or was summed over the wrong axis."""
        for step, _ in self.program.steps():
            names = [a.name for a in step.args]
            if step.op != "matmul" or step.indexed or var not in names:
                continue
            i = names.index(var)
            decl = self.spec.vars.get(names[1 - i])
            up = self.inst.reference.get("d" + step.target)
            if decl is None or decl.dist != "ones" or up is None or isinstance(up, list):
                continue
            rule = rule_text("matmul", i, "d" + step.target, names, step.target,
                             self.inst.layout)[1]
            why = f"'{step.source}' copies {var} to every sample, so d{var} = {rule}"
            if value.shape == up.shape:
                return f"d{var} is not summed over the batch: {why}"
            for axis in (0, 1):
                summed = up.sum(axis=axis, keepdims=True)
                if summed.shape != ref.shape and value.shape == summed.shape \
                        and close(value, summed, self.rtol):
                    return f"d{var} is summed over the wrong axis (axis={axis}): {why}"
        return ""

    def missing_contribution(self, g: str, value: np.ndarray, ref: np.ndarray,
                             t: int | None = None) -> str:
        """A gradient (``t``: its value at that loop step) that lacks exactly the
        contributions of one forward step: name the step and flag the line after
        which they should have been added. A step inside a loop contributes once
        per loop step, and those contributions are missed together."""
        items = self.inst.contributions.get(g if t is None else f"{g}[{t}]", [])
        by_line: dict[int, np.ndarray] = {}
        for line, _t, c in items:
            by_line[line] = by_line[line] + c if line in by_line else c
        if len(by_line) < 2:
            return ""
        for line, c in by_line.items():
            if not close(value, ref - c, self.rtol):
                continue
            step = next((s for s, _ in self.program.steps() if s.line == line), None)
            model = next((m for m in model_lines(self.spec, self.program)
                          if step is not None and m.step is step and m.target == g), None)
            if model is None:
                return ""
            add = f"{model.target}{model.suffix} += {model.rhs}"
            inside = f" inside '{model.loop.header.strip()}'" if model.loop is not None else ""
            after = self.last_line.get("d" + step.target)
            if after is not None:
                self.flags.setdefault(after, LineResult(
                    after, "d" + step.target, "missing_accumulation", True,
                    f"after this line, add the contribution of d{step.target} to {g} "
                    f"through '{step.source}'{inside}: {add}"))
            where = f" after line {after}" if after is not None else ""
            return (f"{g} is missing its contribution through '{step.source}': add {add}"
                    f"{inside}{where}")
        return ""

    # -- final gradients ----------------------------------------------------------

    def judge_gradients(self, final: Mapping[str, np.ndarray | list]) -> dict[str, GradientResult]:
        out: dict[str, GradientResult] = {}
        for a in self.program.ask:
            g = "d" + a
            ref = self.inst.reference[g]
            if g not in self.assigned:
                out[g] = GradientResult("missing", f"{g} is never assigned")
                continue
            if g in self.tainted:
                out[g] = GradientResult(
                    "incorrect", f"{g} depends on line {self.tainted[g]}, which failed"
                )
                continue
            if isinstance(final[g], list):
                verdicts = [self.final_verdict(a, v, r, t)
                            for t, (v, r) in enumerate(zip(final[g], ref))]
            else:
                verdicts = [self.final_verdict(a, final[g], ref)]
            out[g] = next((v for v in verdicts if v.verdict != "correct"), verdicts[0])
        wrong = [v for v in out.values() if v.verdict != "correct"]
        transposed = [v for v in out.values() if v.verdict == "transposed"]
        if (
            len(out) > 1
            and wrong
            and len(transposed) == len(wrong)
            and len(transposed) >= max(2, len(out) // 2 + 1)
        ):
            other = "denominator" if self.inst.layout == "numerator" else "numerator"
            message = f"this answer uses {other} layout; the problem uses {self.inst.layout} layout"
            out = {
                k: GradientResult("wrong_layout", message) if v.verdict == "transposed" else v
                for k, v in out.items()
            }
        return out

    def final_verdict(self, var: str, value: np.ndarray, ref: np.ndarray,
                      t: int | None = None) -> GradientResult:
        g = "d" + var
        if value.shape == ref.shape and not close(value, ref, self.rtol) \
                and g not in self.accumulation_errors:
            missing = self.missing_contribution(g, value, ref, t)
            if missing:
                return GradientResult("missing_accumulation", missing)
        return judge_gradient(
            var,
            value,
            ref,
            layout=self.layout,
            rtol=self.rtol,
            contributions=[c for _, _, c in self.inst.contributions.get(g, [])],
            accumulation_line=self.accumulation_errors.get(g, 0)
            if g in self.accumulation_errors
            else None,
        )


def _mistakes_from(lines) -> str:
    ordered = sorted(lines)
    if len(ordered) == 1:
        return f"the mistake from line {ordered[0]}"
    return "the mistakes from lines " + ", ".join(map(str, ordered[:-1])) + f" and {ordered[-1]}"


def judge_gradient(
    var: str,
    value: np.ndarray,
    ref: np.ndarray,
    *,
    layout: Layout,
    rtol: float,
    contributions: list[np.ndarray] | None = None,
    accumulation_line: int | None = None,
) -> GradientResult:
    """The verdict on one final gradient value against its reference."""
    g = "d" + var
    if close(value, ref, rtol):
        return GradientResult("correct")
    if value.shape != ref.shape:
        if value.shape == ref.T.shape and close(value, ref.T, rtol):
            return GradientResult("transposed", f"{g} is transposed: " + layout.rule(var))
        return GradientResult("wrong_shape", layout.expected(var, value, ref))
    if close(value, -ref, rtol):
        return GradientResult("sign", f"{g} has the wrong sign")
    if accumulation_line is not None or (
        contributions
        and len(contributions) > 1
        and any(close(value, c, rtol) for c in contributions)
    ):
        where = f" (line {accumulation_line})" if accumulation_line else ""
        return GradientResult(
            "missing_accumulation",
            f"{g} holds only part of its gradient{where}: {var} is used more than once, "
            "so its contributions add up (+=)",
        )
    return GradientResult("incorrect", f"{g} does not match the expected value")
