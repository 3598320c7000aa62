"""Per-student instances: a deterministic, discriminating draw of one problem.

``draw_instance(spec, seed)`` picks the structural choices, the dims (distinct
where the ranges allow, so that a transpose changes the shape) and values
rounded to the spec's decimals (used exactly as shown), runs the forward
program and reverse mode, and redraws the values until the draw is
discriminating (docs/design.md section 6): every relu input is at least a margin
away from its kink, every relu layer has active and inactive units, log
inputs are positive, no gradient that matters is all zeros, square matrices
are not symmetric and no variable has all-equal entries, and until every
plausible mistake (engine.mutants) that can differ from the right answer
changes an asked gradient by more than the tolerance. The analytic
gradients are then checked against central finite differences; a mismatch
means the problem itself is broken and raises ``BrokenProblemError``.

Which mistakes "can differ" is decided once per structure (a spec version and
its choices): the mutants are evaluated on ``CALIBRATION_DRAWS`` fixed draws,
and one that no calibration draw separates from the model (a mask from
``z6 = relu(z5)`` instead of ``z5``, ``db3 = dz7`` for ``db3 = doutput``) is
equal to it by structure: it is listed as equivalent, and a correct answer.
Hidden instances (``draw_hidden_instances``) skip the mutant check: the
student's own instance already separates every mutant; and their
finite-difference check runs once per process for each structure and dims.
The check is entry by entry for staff work (``verify="full"``: a spec's check,
previews) and along random directions for a student's draw and hidden draws
(``verify="directional"``; docs/grading.md, "What finite differences verify").
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from server.engine import progress
from server.engine import reference as ref
from server.engine.mutants import Evaluation, MutantSet, compile_mutants
from server.engine.ops import OPS
from server.engine.program import Loop, Program

if TYPE_CHECKING:
    from server.engine.spec import ProblemSpec

MAX_DRAWS = 400
DIMS_ROUNDS = 8  # dims a seed tries, MAX_DRAWS value draws each, before it is refused
CALIBRATION_DRAWS = 48  # fixed draws per structure that decide which mutants are equivalent
CALIBRATION_FULL = 16  # of those, the draws on which every mutant is evaluated (shares)
CALIBRATION_SEED = 0x6D75740000
MUTANT_CHECKS_CACHED = 2048


class InstanceError(Exception):
    """No acceptable instance could be drawn (a problem too constrained)."""


class BrokenProblemError(InstanceError):
    """Analytic and finite-difference gradients disagree: the problem is broken."""

    def __init__(self, problem: str, variable: str, error: float):
        self.variable = variable
        self.error = error
        super().__init__(
            f"{problem}: the analytic gradient of {variable} disagrees with finite differences "
            f"(relative error {error:.2e} > {ref.FD_RTOL:g}); the problem is broken"
        )


Value = np.ndarray | list[np.ndarray]


@dataclass(frozen=True)
class ArrayInstance:
    problem: str
    version: str
    seed: int
    layout: str
    dims: dict[str, int]
    choices: dict[str, str]  # choice name -> label
    choice_index: tuple[int, ...]
    forward: str
    given: str
    ask: tuple[str, ...]
    shapes: dict[str, tuple[int, int]]  # every variable (per step for indexed ones)
    indexed: frozenset[str]
    steps: int  # loop steps (0 without a loop)
    values: dict[str, Value]  # leaves, intermediates and d<given>
    reference: dict[str, Value]  # d<name> for inputs, params and intermediates, in the layout
    # for gradients that receive several contributions:
    # d<name> (or "d<name>[t]") -> [(forward line, t, value)]
    contributions: dict[str, list[tuple[int, int | None, np.ndarray]]] = field(default_factory=dict)

    def to_json(self, *, include_reference: bool = True) -> dict:
        out = {
            "problem": self.problem,
            "version": self.version,
            "seed": self.seed,
            "layout": self.layout,
            "dims": self.dims,
            "choices": self.choices,
            "choice_index": list(self.choice_index),
            "forward": self.forward,
            "given": self.given,
            "ask": list(self.ask),
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "indexed": sorted(self.indexed),
            "steps": self.steps,
            "values": {k: _tolist(v) for k, v in self.values.items()},
        }
        if include_reference:
            out["reference"] = {k: _tolist(v) for k, v in self.reference.items()}
            out["accumulation"] = {
                k: [
                    {"line": line, "t": t, "contribution": c.tolist(), "partial": p.tolist()}
                    for (line, t, c), p in zip(items, _partials(items))
                ]
                for k, items in self.contributions.items()
            }
        return out

    @classmethod
    def from_json(cls, data: Mapping) -> ArrayInstance:
        indexed = frozenset(data["indexed"])

        def arr(name: str, v):
            base = name[1:] if name.startswith("d") and name[1:] in indexed else name
            if base in indexed:
                return [np.asarray(x, dtype=float) for x in v]
            return np.asarray(v, dtype=float)

        return cls(
            problem=data["problem"],
            version=data["version"],
            seed=int(data["seed"]),
            layout=data["layout"],
            dims=dict(data["dims"]),
            choices=dict(data["choices"]),
            choice_index=tuple(data["choice_index"]),
            forward=data["forward"],
            given=data["given"],
            ask=tuple(data["ask"]),
            shapes={k: tuple(v) for k, v in data["shapes"].items()},
            indexed=indexed,
            steps=int(data["steps"]),
            values={k: arr(k, v) for k, v in data["values"].items()},
            reference={k: arr(k, v) for k, v in data.get("reference", {}).items()},
            contributions={
                k: [(c["line"], c["t"], np.asarray(c["contribution"], dtype=float)) for c in items]
                for k, items in data.get("accumulation", {}).items()
            },
        )


# The name before the engine's instance and the database model's stopped sharing
# one; kept for code written against it (new code: ArrayInstance).
Instance = ArrayInstance


def used_dims(program: Program, ranges: Mapping[str, tuple[int, int]]) -> set[str]:
    """Dims that this program variant actually uses (shapes, loops, slices).

    A dim with a fixed value is folded into the program's numbers, so it is found
    by its name in the forward text: a slice ``X[2*t:2*t + K]`` with ``K = 3``
    still shows ``K``, and the model answer and the student's answer name it."""
    names: set[str] = {
        name for name, (lo, hi) in ranges.items()
        if lo == hi and re.search(rf"\b{re.escape(name)}\b", program.text)
    }
    for shape in program.shapes.values():
        for d in shape:
            names |= d.names
    for item in program.items:
        if isinstance(item, Loop):
            names |= item.start.names | item.stop.names
            for step in item.body:
                for lo, hi in step.region or ():
                    names |= lo.names | hi.names
    return names


def used_choices(spec: ProblemSpec, choice_index: tuple[int, ...]) -> dict[str, str]:
    """The choices that shape this instance (a choice inside an unused block is left out)."""
    picked = {n: spec.choices[n][i] for n, i in zip(spec.choices, choice_index)}
    used: dict[str, str] = {}
    texts = [spec.forward_template]
    while texts:
        text = texts.pop()
        for name, (label, value) in picked.items():
            if name not in used and "{" + name + "}" in text:
                used[name] = label
                texts.append(value)
    return {n: used[n] for n in spec.choices if n in used}


def _partials(items) -> list[np.ndarray]:
    out, total = [], None
    for _, _, c in items:
        total = c.copy() if total is None else total + c
        out.append(total)
    return out


def _tolist(v: Value):
    return [x.tolist() for x in v] if isinstance(v, list) else v.tolist()


# --------------------------------------------------------------------------- drawing


def draw_dims(ranges: Mapping[str, tuple[int, int]], rng: np.random.Generator) -> dict[str, int]:
    """Distinct values where the ranges allow: narrowest ranges pick first."""
    used: set[int] = set()
    out: dict[str, int] = {}
    for name in sorted(ranges, key=lambda n: (ranges[n][1] - ranges[n][0], n)):
        lo, hi = ranges[name]
        free = [v for v in range(lo, hi + 1) if v not in used]
        pool = free or list(range(lo, hi + 1))
        value = int(pool[int(rng.integers(len(pool)))])
        used.add(value)
        out[name] = value
    return {n: out[n] for n in ranges}


def round_to(x: np.ndarray, decimals: int) -> np.ndarray:
    """The float64 nearest to each value as shown with ``decimals`` digits."""
    scale = 10.0**decimals
    return np.rint(x * scale) / scale


@dataclass
class DrawStats:
    """What one draw cost (filled in by ``draw_instance(..., stats=...)``)."""

    attempts: int = 0  # value draws tried; 1 when the first was accepted
    mutant_rejections: int = 0  # draws rejected because a mutant was not separated
    mutants: int = 0  # mutants of this structure
    equivalent: int = 0  # of which equal to the model by structure
    calibration_seconds: float = 0.0  # compiling and calibrating the mutants, if this draw did

    @property
    def redraws(self) -> int:
        return max(self.attempts - 1, 0)


def draw_instance(
    spec: ProblemSpec,
    seed: int,
    *,
    choice_index: tuple[int, ...] | None = None,
    other_than: Mapping[str, int] | None = None,
    discriminate: bool = True,
    stats: DrawStats | None = None,
    verify: str = "full",
) -> ArrayInstance:
    """The instance for ``seed``. ``choice_index`` forces the structure and
    ``other_than`` asks for dims that differ from those (hidden instances that
    check an answer on the same structure at other sizes). ``discriminate``
    False skips the mutant check (hidden instances). ``verify``: how the
    reference is checked by finite differences (``_verify``: every entry, or
    along random directions)."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES} (got {verify!r})")
    if not spec.programs:
        raise InstanceError(f"{spec.id} has no forward program of arrays: draw it with its "
                            "answer kind (spec.kind.draw)")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    rng = np.random.default_rng(seed)
    drawn = tuple(int(rng.integers(len(v))) for v in spec.choices.values())
    choice_index = drawn if choice_index is None else tuple(choice_index)
    program = spec.program(choice_index)

    def new_dims() -> dict[str, int]:
        dims = draw_dims(spec.dims, rng)
        for _ in range(20):
            if not other_than or any(dims.get(k) != v for k, v in other_than.items()):
                break
            dims = draw_dims(spec.dims, rng)
        return dims

    dims = new_dims()
    check = mutant_check(spec, choice_index, stats) if discriminate else None
    for round_ in range(1, DIMS_ROUNDS + 1):
        # Some dims leave a mistake almost never separable (mlp-random's relu mask from
        # b3 instead of z8 with H3 = 2: seed 291): other dims, drawn from the same
        # generator after the failed tries, so a seed that drew before draws the same.
        what = f"seed {seed} ({_dims_text(dims)})" if dims else f"seed {seed}"
        progress.stage(f"drawing {what}")
        try:
            draw = _draw_values(spec, program, dims, rng, check, stats, f"seed {seed}")
            break
        except InstanceError as exc:
            if not spec.dims:
                raise
            if round_ == DIMS_ROUNDS:
                raise InstanceError(f"{exc}; {DIMS_ROUNDS - 1} other dims were tried too"
                                    ) from None
            dims = new_dims()
    if discriminate:
        _verify(spec, draw.sched, draw.leaves, draw.seeds, draw.back.grads, draw.values,
                draw.no_grad, mode=verify, what=what)
    else:
        _verify_once(spec, program, dims, draw, verify, what)
    return _build(spec, seed, program, choice_index, dims, draw)


@dataclass
class _Draw:
    sched: list
    shapes: dict
    steps: int
    leaves: dict
    seeds: dict
    values: dict
    back: ref.Backward
    no_grad: frozenset[str]


def _draw_values(spec: ProblemSpec, program: Program, dims, rng, check, stats, what: str) -> _Draw:
    """Values for these dims, redrawn until the draw is discriminating."""
    sched = ref.schedule(program, dims)
    shapes = {name: tuple(d.eval(dims) for d in shape) for name, shape in program.shapes.items()}
    steps = max((ex.t + 1 for ex in sched if ex.t is not None), default=0)
    given_keys = [ex.key for ex in sched if ex.step.target == spec.given]
    no_grad = frozenset(n for n in program.leaves if spec.vars[n].role == "const")
    reason = ""
    missed: dict[int, int] = {}  # mutant -> draws it was not separated on
    checked = 0  # draws that reached the mutant check
    for _ in range(MAX_DRAWS):
        if stats is not None:
            stats.attempts += 1
        leaves = {n: _draw_value(spec, n, shapes[n], rng) for n in program.leaves}
        seeds = {
            k: round_to(rng.uniform(-1, 1, shapes[spec.given]), spec.decimals) for k in given_keys
        }
        reason = _reject_values(spec, program, leaves, shapes) or ""
        if reason:
            continue
        values = ref.run_forward(sched, leaves)
        reason = _reject_forward(spec, sched, values) or ""
        if reason:
            continue
        # quick mutant tests first (they reject most draws): a derivative at another
        # variable that equals the model's needs no gradient; then each hard mutant's line
        ev = check.evaluation(dims, values) if check else None
        unseparated = ev.stuck_by_factor(check.hard) if check else []
        back = None
        if not unseparated:
            back = ref.run_backward(sched, values, seeds, no_grad)
            if check is not None:
                ev.gradient = _gradients(spec, seeds, back.grads)
                unseparated = check.stuck(ev)
        if not unseparated:
            reason = _reject_gradients(program, back.grads, values, no_grad)
            if reason:
                continue
            if check is not None:
                unseparated = check.unseparated(ev)
        if check is not None:
            checked += 1
        if unseparated:
            for i in unseparated:
                missed[i] = missed.get(i, 0) + 1
            if stats is not None:
                stats.mutant_rejections += 1
            first = check.mutants.mutants[unseparated[0]]
            reason = f"mutant not separated: {check.mutants.label(first)}"
            continue
        return _Draw(sched, shapes, steps, leaves, seeds, values, back, no_grad)
    if missed:
        worst = max(missed, key=lambda i: missed[i])
        label = check.mutants.label(check.mutants.mutants[worst])
        raise InstanceError(
            f"{spec.id}: no draw for {what} in {MAX_DRAWS} tries separates every plausible mistake "
            f"from the right answer; the mutant {label} was not separated on {missed[worst]} of "
            f"the {checked} draws checked (last: {reason})")
    raise InstanceError(
        f"{spec.id}: no acceptable draw for {what} in {MAX_DRAWS} tries (last: {reason})")


# --------------------------------------------------------------------------- mutants


@dataclass(frozen=True)
class MutantCheck:
    """The mutants of one structure and which of them a draw must separate."""

    mutants: MutantSet
    equivalent: frozenset[int]  # equal to the model by structure (never separated in calibration)
    # the others: those some calibration draw did not separate, which reject most draws (a
    # quick test for them comes first), and the rest
    hard: tuple[int, ...]
    easy: tuple[int, ...]
    # per mutant, the share of the first CALIBRATION_FULL calibration draws that separate it
    separated_share: tuple[float, ...]
    rtol: float  # the tolerance the answers of this problem are graded with
    seconds: float  # compile + calibration time

    def evaluation(self, dims, values) -> Evaluation:
        """An evaluation on these forward values; its ``gradient`` is set once
        reverse mode has run."""
        return Evaluation(self.mutants, dims, values, None)

    def stuck(self, ev: Evaluation) -> list[int]:
        """A quick test: the mutants that calibration found hard to separate and
        that write exactly the model's value on this draw (most rejections)."""
        return ev.stuck(self.hard)

    def unseparated(self, ev: Evaluation) -> list[int]:
        """The mutants (that must be separated) this draw does not separate; the
        first one found ends the check."""
        return ev.unseparated(self.hard + self.easy, self.rtol, stop_early=True)


_MUTANT_CHECKS: dict[tuple, MutantCheck] = {}
_MUTANT_CHECKS_LOCK = threading.Lock()  # the app draws from several threads


def mutant_check(spec: ProblemSpec, choice_index: tuple[int, ...],
                 stats: DrawStats | None = None) -> MutantCheck:
    """The mutant check of one structure, compiled and calibrated once per
    spec version and choice."""
    rtol = spec.kind.tolerance(spec)
    key = (spec.id, spec.version, spec.layout, rtol, tuple(choice_index))
    check = _MUTANT_CHECKS.get(key)
    if check is None:
        check = _calibrate(spec, tuple(choice_index), rtol)  # two threads may both: same result
        with _MUTANT_CHECKS_LOCK:
            if len(_MUTANT_CHECKS) >= MUTANT_CHECKS_CACHED:
                _MUTANT_CHECKS.pop(next(iter(_MUTANT_CHECKS)))
            _MUTANT_CHECKS[key] = check
        if stats is not None:
            stats.calibration_seconds = check.seconds
    if stats is not None:
        stats.mutants = len(check.mutants.mutants)
        stats.equivalent = len(check.equivalent)
    return check


def _dims_text(dims: Mapping[str, int]) -> str:
    return ", ".join(f"{name} = {value}" for name, value in dims.items())


def _calibrate(spec: ProblemSpec, choice_index: tuple[int, ...], rtol: float) -> MutantCheck:
    start = time.perf_counter()
    program = spec.program(choice_index)
    structure = ", ".join(f"{name} = {spec.choices[name][i][0]!r}"
                          for name, i in zip(spec.choices, choice_index))
    progress.stage("calibrating the plausible mistakes of "
                   + (f"the structure {structure}" if structure else "the program")
                   + f" ({CALIBRATION_DRAWS} draws)")
    mset = compile_mutants(spec, program)
    count = len(mset.mutants)
    separated = [0] * count
    pending = list(range(count))
    for k in range(CALIBRATION_DRAWS):
        if not pending:
            break
        rng = np.random.default_rng(CALIBRATION_SEED + k)
        dims = draw_dims(spec.dims, rng)
        draw = _draw_values(spec, program, dims, rng, None, None, f"calibration draw {k}")
        ev = Evaluation(mset, dims, draw.values, _gradients(spec, draw.seeds, draw.back.grads))
        tried = range(count) if k < CALIBRATION_FULL else pending
        missed = set(ev.unseparated(tried, rtol))
        for i in tried:
            if i not in missed:
                separated[i] += k < CALIBRATION_FULL
        pending = [i for i in pending if i in missed]
    equivalent = frozenset(pending)
    full = min(CALIBRATION_DRAWS, CALIBRATION_FULL)
    shares = tuple(n / full for n in separated)
    hard = tuple(i for i in range(count) if i not in equivalent and shares[i] < 1)
    easy = tuple(i for i in range(count) if i not in equivalent and shares[i] == 1)
    return MutantCheck(mset, equivalent, hard, easy, shares, rtol, time.perf_counter() - start)


def _gradients(spec: ProblemSpec, seeds, grads):
    """Gradients as the mutant check reads them: keyed "dz5" or ("dz5", t), in
    the problem's layout (the drawn d<given>, or the reverse-mode reference)."""
    numerator = spec.layout == "numerator"

    def gradient(key):
        name, t = key if isinstance(key, tuple) else (key, None)
        forward = name[1:] if t is None else (name[1:], t)
        value = seeds[forward] if name[1:] == spec.given else grads[forward]
        return value.T if numerator else value  # a view: the check only reads it

    return gradient


HIDDEN_INSTANCES = 2  # hidden checks per answer, besides the student's own instance


def draw_hidden_instances(
    spec: ProblemSpec, inst: ArrayInstance, seeds: Sequence[int]
) -> list[ArrayInstance]:
    """The hidden instances an answer is also checked on: the structure of
    ``inst`` (its choices) with other dims and values, one per seed. The server
    draws the seeds per submission, so nothing learned about one submission's
    hidden instances helps the next."""
    return [draw_instance(spec, int(s), choice_index=inst.choice_index, other_than=inst.dims,
                          discriminate=False, verify="directional")
            for s in seeds]


def legacy_hidden_seeds(inst: ArrayInstance | Mapping, count: int = HIDDEN_INSTANCES
                        ) -> list[int]:
    """The hidden seeds of submissions stored before seeds were drawn per
    submission (they were a function of the instance alone, or of its document's
    ``problem`` and ``seed``); regrades of those reproduce them."""
    problem, seed = ((inst["problem"], int(inst["seed"])) if isinstance(inst, Mapping)
                     else (inst.problem, inst.seed))
    return [int.from_bytes(hashlib.sha256(f"{problem}:{seed}:hidden:{k}".encode())
                           .digest()[:4], "big") & 0x7FFFFFFF for k in range(count)]


def _draw_value(spec: ProblemSpec, name: str, shape, rng) -> np.ndarray:
    decl = spec.vars[name]
    if decl.dist == "onehot":
        v = np.zeros(shape)
        v[int(rng.integers(shape[0])), 0] = 1.0
        return v
    if decl.dist == "ones":
        return np.ones(shape)
    return round_to(rng.uniform(decl.low, decl.high, shape), spec.decimals)


def _reject_values(spec, program: Program, leaves, shapes) -> str | None:
    for name, v in leaves.items():
        if spec.vars[name].dist in ("onehot", "ones"):
            continue
        if v.size > 1 and (v == v.flat[0]).all():
            return f"{name} has all-equal entries"
        r, c = shapes[name]
        if r == c and r > 1 and (v == v.T).all():
            return f"{name} is symmetric"
    return None


def _reject_forward(spec: ProblemSpec, sched, values) -> str | None:
    margin = spec.kink_margin
    inputs: dict[int, list[np.ndarray]] = {}
    for ex in sched:
        fn = OPS[ex.step.op]  # the operation's record says where its inputs may not go
        if fn.kink is None and not fn.positive_domain and fn.gaps is None:
            continue
        a = values[ex.args[0]]
        if not np.isfinite(a).all():
            return f"non-finite input on line {ex.step.line}"
        if fn.gaps is not None and fn.gaps(a).min() < margin:
            return f"{fn.name} input has a near tie on line {ex.step.line}"
        if fn.kink is not None:
            if np.abs(a - fn.kink).min() < margin:
                return f"{fn.name} input within {margin} of its kink on line {ex.step.line}"
            inputs.setdefault(ex.step.line, []).append(a.ravel())
        if fn.positive_domain and a.min() < margin:
            return f"{fn.name} input below {margin} on line {ex.step.line}"
    for line, parts in inputs.items():
        a = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if a.size > 1 and ((a > 0).all() or (a < 0).all()):
            return f"relu layer on line {line} is all active or all inactive"
    everything = np.concatenate([v.ravel() for v in values.values()])
    if everything.size and not np.abs(everything).max() <= 1e6:  # NaN too
        for key, v in values.items():
            if v.size and not np.abs(v).max() <= 1e6:
                return f"{ref.key_name(key)} overflows"
    return None


def _reject_gradients(program: Program, grads, values, no_grad) -> str:
    for key in values:
        name = ref.key_name(key)
        if name in no_grad or name not in program.influencing:
            continue
        g = grads.get(key)
        if g is None or not np.abs(g).max() > 1e-9:
            return f"the gradient of {name} is all zeros"
    return ""


VERIFY_MODES = ("full", "directional")


def _verify(spec, sched, leaves, seeds, grads, values, no_grad, *, mode: str = "full",
            what: str = "") -> None:
    """Reverse mode against central differences: ``full`` checks every entry of every
    value (the spec's saved check, previews, ``nabla problems check``); ``directional``
    checks each value along random directions (a student's draw and hidden draws: the
    saved check verified every entry of the same structure)."""
    keys = [k for k in values if ref.key_name(k) not in no_grad]
    shapes = {k: values[k].shape for k in keys}
    check = ref.finite_difference_errors if mode == "full" else ref.directional_errors
    errors = check(sched, leaves, seeds, grads, keys, shapes, what)
    for key, err in errors.items():
        if not err <= ref.FD_RTOL:
            name = ref.key_name(key)
            label = f"{name}[{key[1]}]" if isinstance(key, tuple) else name
            raise BrokenProblemError(spec.id, label, err)


_VERIFIED: set[tuple] = set()  # (spec, version, program, dims) checked by finite differences


def _verify_once(spec, program: Program, dims, draw: _Draw, mode: str, what: str) -> None:
    """The finite-difference check of a draw without the mutant check (a hidden
    instance), once per process for each structure and dims: the reference's
    gradients are exact functions of the structure and shapes (values near a kink
    are redrawn), so a second check at the same dims repeats the first. It took
    about half of a hidden draw's time (bench/bench_engine.py). The student's own
    instance is always checked."""
    key = (spec.id, spec.version, spec.layout, program.text, tuple(sorted(dims.items())))
    if key in _VERIFIED:
        return
    _verify(spec, draw.sched, draw.leaves, draw.seeds, draw.back.grads, draw.values, draw.no_grad,
            mode=mode, what=what)
    if len(_VERIFIED) >= 4 * MUTANT_CHECKS_CACHED:
        _VERIFIED.clear()
    _VERIFIED.add(key)


def _build(spec, seed, program, choice_index, dims, draw: _Draw):
    layout = spec.layout
    shapes, steps, sched, values, seeds, back = (
        draw.shapes, draw.steps, draw.sched, draw.values, draw.seeds, draw.back)
    no_grad = draw.no_grad
    indexed = program.indexed

    def collect(getter, names) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for name in names:
            if name in indexed:
                out[name] = [getter((name, t)) for t in range(steps)]
            else:
                out[name] = getter(name)
        return out

    names = list(program.leaves) + list(program.intermediates)
    vals = collect(lambda k: values[k], names)
    vals["d" + spec.given] = collect(lambda k: ref.to_layout(seeds[k], layout), [spec.given])[
        spec.given
    ]

    def grad(k):
        g = back.grads.get(k)
        return ref.to_layout(g if g is not None else np.zeros(values[k].shape), layout)

    refs = {"d" + n: v for n, v in collect(grad, [n for n in names if n not in no_grad]).items()}
    line_of = {ex.index: ex.step.line for ex in sched}
    contributions = {}
    for key, items in back.contributions.items():
        if len(items) > 1:
            label = "d" + (f"{key[0]}[{key[1]}]" if isinstance(key, tuple) else key)
            t_of = {ex.index: ex.t for ex in sched}
            contributions[label] = [
                (line_of[i], t_of[i], ref.to_layout(c, layout)) for i, c in items
            ]
    used = used_dims(program, spec.dims)
    return ArrayInstance(
        problem=spec.id,
        version=spec.version,
        seed=seed,
        layout=layout,
        dims={n: v for n, v in dims.items() if n in used},
        choices=used_choices(spec, choice_index),
        choice_index=choice_index,
        forward=program.text,
        given=spec.given,
        ask=program.ask,
        shapes=shapes,
        indexed=indexed,
        steps=steps,
        values=vals,
        reference=refs,
        contributions=contributions,
    )
