"""Grading a numpy backward() answer for mlp-relu-numpy in-process: the stored
instance plus two hidden ones in one sandbox job. Prints p50/p99 per grade and
throughput with 2 and 8 concurrent callers, beside the same answer graded with
the equations grader (no sandbox) as a baseline.

    .venv/bin/python bench/bench_numpy_grading.py [--grades 300]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

from server.engine.bank import load_bank
from server.engine.grade import grade_equations
from server.engine.instance import draw_instance
from server.engine.problem import model_answer
from server.grading import grade_numpy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grades", type=int, default=300)
    args = parser.parse_args()
    bank = load_bank()
    spec, eq_spec = bank["mlp-relu-numpy"], bank["mlp-relu"]
    insts = [draw_instance(spec, i) for i in range(50)]
    sources = [model_answer(spec, inst) for inst in insts]
    eq_insts = [draw_instance(eq_spec, i) for i in range(50)]
    eq_texts = [model_answer(eq_spec, inst) for inst in eq_insts]
    for i in range(10):  # warm the worker and its pool
        grade_numpy(spec, insts[i], sources[i])

    def one(i):
        t = time.perf_counter()
        result = grade_numpy(spec, insts[i % 50], sources[i % 50])
        assert result.score == 1.0, result.to_json()
        return (time.perf_counter() - t) * 1e3

    cold_insts = [draw_instance(spec, 1000 + i) for i in range(100)]
    cold = []
    for inst in cold_insts:  # first grade of an instance: its hidden instances are drawn and verified
        t = time.perf_counter()
        grade_numpy(spec, inst, model_answer(spec, inst))
        cold.append((time.perf_counter() - t) * 1e3)
    xs = [one(i) for i in range(args.grades)]
    base = []
    for i in range(args.grades):
        t = time.perf_counter()
        grade_equations(eq_spec, eq_insts[i % 50], eq_texts[i % 50])
        base.append((time.perf_counter() - t) * 1e3)
    print(f"numpy answer, stored + 2 hidden instances, one sandbox job ({args.grades} grades, sequential)")
    print(f"  first grade of an instance (hidden draws)  p50 {statistics.median(cold):7.3f} ms   "
          f"p99 {np.percentile(cold, 99):7.3f} ms")
    print(f"  grade_numpy, resubmission      p50 {statistics.median(xs):7.3f} ms   p99 {np.percentile(xs, 99):7.3f} ms")
    print(f"  baseline: the same network as equations, in-process, no sandbox: "
          f"p50 {statistics.median(base):.3f} ms  p99 {np.percentile(base, 99):.3f} ms")
    for callers in (2, 8):
        lat, wall = concurrent(one, callers, max(args.grades // callers, 10))
        print(f"  {callers} concurrent callers: {len(lat) / wall:6.1f} grades/s   "
              f"p50 {statistics.median(lat):.3f} ms   p99 {np.percentile(lat, 99):.3f} ms")


def concurrent(one, callers: int, per: int) -> tuple[list[float], float]:
    """Latencies from ``callers`` threads each grading ``per`` times, and the wall time."""
    lat: list[float] = []
    lock = threading.Lock()

    def run(k: int) -> None:
        mine = [one(k * per + j) for j in range(per)]
        with lock:
            lat.extend(mine)

    t = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(callers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return lat, time.perf_counter() - t

if __name__ == "__main__":
    main()
