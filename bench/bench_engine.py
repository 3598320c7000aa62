"""Engine figures: instance draw + FD verification per problem, and in-process
grading of equation answers. Prints medians and p99 over many seeds, with a
baseline measured in the same run (an unbatched, one-entry-at-a-time finite
difference check, which is what the batched verification replaces).

    .venv/bin/python bench/bench_engine.py [--seeds 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from server.engine import reference as ref
from server.engine.bank import load_bank
from server.engine.grade import grade_equations
from server.engine.instance import draw_instance
from server.engine.problem import draw, model_answer


def pct(xs, q):
    return float(np.percentile(xs, q))


def timed(fn, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1e3)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=200)
    args = parser.parse_args()
    bank = load_bank()
    print(f"draw + FD verification, {args.seeds} seeds each (ms)")
    print(f"{'problem':32} {'median':>8} {'p99':>8}")
    for spec in bank.values():
        xs = timed(lambda i, s=spec: draw(s, i), args.seeds)
        print(f"{spec.id:32} {statistics.median(xs):8.3f} {pct(xs, 99):8.3f}")

    mlp = bank["mlp-relu"]
    insts = [draw_instance(mlp, i) for i in range(args.seeds)]
    base = timed(lambda i: unbatched_fd(mlp, insts[i]), min(args.seeds, 50))
    batched = timed(lambda i: draw_instance(mlp, i), args.seeds)
    print(
        f"\nmlp-relu: unbatched FD of the leaves alone (baseline) median {statistics.median(base):.3f} ms; "
        f"whole draw with batched FD of leaves and intermediates {statistics.median(batched):.3f} ms "
        f"({statistics.median(base) / statistics.median(batched):.1f}x faster)"
    )

    answers = [model_answer(mlp, inst) for inst in insts]
    wrong = [a.replace("(z2 > 0)", "(z5 > 0)") for a in answers]
    print("\nin-process grading of mlp-relu equations (ms)")
    for label, texts in (("correct answer", answers), ("wrong mask on line 10", wrong)):
        xs = timed(lambda i, t=texts: grade_equations(mlp, insts[i], t[i]), args.seeds)
        print(f"{label:32} median {statistics.median(xs):.3f}  p99 {pct(xs, 99):.3f}")
    scan = bank["scan-mlp"]
    sinsts = [draw_instance(scan, i) for i in range(50)]
    sans = [model_answer(scan, inst) for inst in sinsts]
    xs = timed(lambda i: grade_equations(scan, sinsts[i], sans[i]), 50)
    print(f"{'scan-mlp correct answer':32} median {statistics.median(xs):.3f}  p99 {pct(xs, 99):.3f}")


if __name__ == "__main__":
    main()
