"""Engine figures: instance draw + FD verification per problem, and in-process
grading of equation answers. Prints medians and p99 over many seeds, with
baselines measured in the same run, interleaved seed by seed:

- the draw without the mutant check (``discriminate=False``: the draw as it
  was before issue 9, which is also how hidden instances are drawn), next to
  the draw that redraws until every plausible mistake is separated;
- an unbatched, one-entry-at-a-time finite difference check (what the batched
  verification replaces);
- grading on the student's instance alone, next to grading on it and on two
  hidden instances (what ``grade_answer`` does since issue 9).

    .venv/bin/python bench/bench_engine.py [--seeds 300]
    .venv/bin/python bench/bench_engine.py --seeds 100 --problems mlp-batch,attention-head

With ``--problems``, only those problems: their draws as above, then grading of
the model answer and of an answer with its last line's sign flipped, on the
student's instance alone and with two hidden instances, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import Goal, Rows, add_json_argument

from server.engine import reference as ref
from server.engine.bank import load_bank
from server.engine.grade import grade_equations
from server.engine.instance import DrawStats, draw_instance, mutant_check
from server.engine.problem import draw, grade_answer, model_answer


def pct(xs, q):
    return float(np.percentile(xs, q))


def timed(fn, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def interleaved(fns, n):
    """Each function on seed i, one after the other, for i in range(n)."""
    out = [[] for _ in fns]
    for i in range(n):
        for times, fn in zip(out, fns):
            t = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t) * 1e3)
    return out


def unbatched_fd(spec, inst):
    """Baseline: central differences entry by entry (two forward passes each)."""
    program = spec.program(inst.choice_index)
    sched = ref.schedule(program, inst.dims)
    leaves = {n: inst.values[n] for n in program.leaves}
    keys = [ex.key for ex in sched if ex.step.target == spec.given]
    dg = inst.values["d" + spec.given]
    dg = dg if isinstance(dg, list) else [dg]
    seeds = {k: ref.to_layout(d, inst.layout) for k, d in zip(keys, dg)}
    for name, v in leaves.items():
        for idx in np.ndindex(v.shape):
            for sign in (1, -1):
                lv = dict(leaves)
                lv[name] = v.copy()
                lv[name][idx] += sign * 1e-5
                ref.loss(ref.run_forward(sched, lv), seeds)


DRAW_GOALS = {"mlp-relu": Goal(p50=5)}  # issue 9
BASE_DRAW = "the same draw without the mutant check, interleaved"


def draws(bank, n: int, rows: Rows) -> None:
    print(f"draw + FD verification, {n} seeds each (ms); baseline: the same draw without the "
          "mutant check, interleaved")
    print(f"{'problem':28} {'median':>7} {'p99':>7} {'base med':>8} {'base p99':>8} "
          f"{'redraws':>7} {'mutants':>7} {'equiv':>5} {'calib ms':>8}")
    for spec in bank.values():
        if spec.answer_kind == "expression":
            xs = timed(lambda i, s=spec: draw(s, i), n)
            print(f"{spec.id:28} {statistics.median(xs):7.3f} {pct(xs, 99):7.3f}")
            rows.add(f"engine.draw.{spec.id}", "engine draw + verification",
                     f"{spec.id} (expression), {n} seeds", n=n, samples=xs)
            continue
        draw_instance(spec, 0)  # compile and calibrate the mutants of seed 0's structure
        stats = [DrawStats() for _ in range(n)]
        with_check, without = interleaved([
            lambda i, s=spec, st=stats: draw_instance(s, i + 1, stats=st[i]),
            lambda i, s=spec: draw_instance(s, i + 1, discriminate=False),
        ], n)
        calibration = [s.calibration_seconds * 1e3 for s in stats if s.calibration_seconds]
        with_check = [t - s.calibration_seconds * 1e3 for t, s in zip(with_check, stats)]
        check = mutant_check(spec, draw_instance(spec, 0).choice_index)
        print(f"{spec.id:28} {statistics.median(with_check):7.3f} {pct(with_check, 99):7.3f} "
              f"{statistics.median(without):8.3f} {pct(without, 99):8.3f} "
              f"{statistics.mean(s.redraws for s in stats):7.2f} "
              f"{len(check.mutants.mutants):7} {len(check.equivalent):5} "
              f"{statistics.median(calibration) if calibration else 0:8.1f}")
        rows.add(f"engine.draw.{spec.id}", "engine draw + verification",
                 f"{spec.id}, {n} seeds, mutant check", n=n, samples=with_check,
                 baseline=BASE_DRAW, baseline_samples=without, goal=DRAW_GOALS.get(spec.id))


def grading(bank, n: int, rows: Rows) -> None:
    print(f"\nin-process grading, {n} seeds each (ms): the student's instance alone, and with "
          "two hidden instances, interleaved")
    print(f"{'problem, answer':40} {'own med':>8} {'own p99':>8} {'+hid med':>8} "
          f"{'+hid p99':>8}")
    for spec in bank.values():
        insts = [draw_instance(spec, i) for i in range(n)]
        right = [model_answer(spec, inst) for inst in insts]
        wrong = [_flip_last_sign(a) for a in right]
        for label, texts in (("model answer", right), ("last line's sign flipped", wrong)):
            own, hidden = interleaved([
                lambda i, t=texts, s=spec, d=insts: grade_equations(s, d[i], t[i]),
                lambda i, t=texts, s=spec, d=insts: grade_answer(s, d[i], t[i],
                                                                hidden_seeds=(i + 7, i + 9)),
            ], n)
            print(f"{spec.id + ', ' + label:40} {statistics.median(own):8.3f} "
                  f"{pct(own, 99):8.3f} {statistics.median(hidden):8.3f} {pct(hidden, 99):8.3f}")
            grading_rows(rows, f"{spec.id}.{'model' if texts is right else 'flipped'}",
                         f"{spec.id}, {label}", n, own, hidden)


def grading_rows(rows: Rows, key: str, setting: str, n: int, own: list[float],
                 hidden: list[float], goal: Goal | None = None) -> None:
    rows.add(f"engine.grade.{key}.own", "equations grading in-process, own instance",
             f"{setting}, {n} seeds", n=n, samples=own, goal=goal)
    rows.add(f"engine.grade.{key}.hidden", "equations grading in-process, + 2 hidden instances",
             f"{setting}, {n} seeds", n=n, samples=hidden,
             baseline="the own instance alone, interleaved", baseline_samples=own)


def _flip_last_sign(answer: str) -> str:
    lines = answer.splitlines()
    head, _, rhs = lines[-1].partition("= ")
    lines[-1] = f"{head}= -({rhs})"
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--problems", default="", help="comma-separated ids: only these")
    add_json_argument(parser)
    args = parser.parse_args()
    rows = Rows("bench_engine")
    bank = load_bank()
    if args.problems:
        chosen = {pid: bank[pid] for pid in args.problems.split(",")}
        draws(chosen, args.seeds, rows)
        grading(chosen, args.seeds, rows)
        rows.write(args.json)
        return
    draws(bank, args.seeds, rows)

    mlp = bank["mlp-relu"]
    insts = [draw_instance(mlp, i) for i in range(args.seeds)]
    base = timed(lambda i: unbatched_fd(mlp, insts[i]), min(args.seeds, 50))
    batched = timed(lambda i: draw_instance(mlp, i, discriminate=False), args.seeds)
    rows.add("engine.fd.mlp-relu", "engine draw, batched FD of leaves and intermediates",
             f"mlp-relu, no mutant check, {args.seeds} seeds", n=args.seeds, samples=batched,
             baseline=f"unbatched FD of the leaves alone ({len(base)} seeds)",
             baseline_samples=base)
    print(
        f"\nmlp-relu: unbatched FD of the leaves alone (baseline) median "
        f"{statistics.median(base):.3f} ms; "
        f"whole draw (no mutant check) with batched FD of leaves and intermediates "
        f"{statistics.median(batched):.3f} ms "
        f"({statistics.median(base) / statistics.median(batched):.1f}x faster)"
    )

    answers = [model_answer(mlp, inst) for inst in insts]
    wrong = [a.replace("(z2 > 0)", "(z5 > 0)") for a in answers]
    print("\nin-process grading of mlp-relu equations (ms): the student's instance alone, and "
          "with two hidden instances (drawn per submission, as grade_answer does)")
    for label, texts in (("correct answer", answers), ("wrong mask on line 10", wrong)):
        own, hidden = interleaved([
            lambda i, t=texts: grade_equations(mlp, insts[i], t[i]),
            lambda i, t=texts: grade_answer(mlp, insts[i], t[i], hidden_seeds=(i + 7, i + 9)),
        ], args.seeds)
        print(f"{label:24} own median {statistics.median(own):.3f}  p99 {pct(own, 99):.3f}   "
              f"+ hidden median {statistics.median(hidden):.3f}  p99 {pct(hidden, 99):.3f}")
        grading_rows(rows, "mlp-relu." + ("model" if texts is answers else "wrong-mask"),
                     f"mlp-relu, {label}", args.seeds, own, hidden,
                     goal=Goal(p50=2) if texts is answers else None)  # issue 3
    scan = bank["scan-mlp"]
    sinsts = [draw_instance(scan, i) for i in range(50)]
    sans = [model_answer(scan, inst) for inst in sinsts]
    xs = timed(lambda i: grade_equations(scan, sinsts[i], sans[i]), 50)
    print(f"{'scan-mlp correct answer':24} own median {statistics.median(xs):.3f}  "
          f"p99 {pct(xs, 99):.3f}")
    rows.add("engine.grade.scan-mlp.model.own", "equations grading in-process, own instance",
             "scan-mlp, correct answer, 50 seeds", n=len(xs), samples=xs)
    rows.write(args.json)


if __name__ == "__main__":
    main()
