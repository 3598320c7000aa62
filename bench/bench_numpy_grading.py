"""Grading a numpy backward() answer for mlp-relu-numpy in-process: the stored
instance plus two hidden ones, each in its own sandboxed child (concurrently,
and for comparison one after the other). Prints p50/p99 per grade and
throughput with 2 and 8 concurrent callers, beside two baselines measured in
the same run: the same grade with each instance's job in a fresh interpreter
(``python -I``, numpy imported, the same isolation layers; what the pre-forked
pool saves), and the same network graded with the equations grader (no sandbox).

Every grade draws its own hidden instances from fresh seeds, as the server does
per submission. "First grade" is the first grade of an instance the process
has not seen; "resubmission" grades one of 50 instances again.

    .venv/bin/python bench/bench_numpy_grading.py [--grades 300] [--fresh 20] [--json FILE] [--cpu]

With --cpu, a last phase grades back to back again and prints the CPU per
grade of this process (the grader: hidden draws, jobs encoded and decoded,
verdicts) and of the sandbox (its worker and the children it reaped), from
/proc: CPU time moves far less with the machine's load than latency does.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import statistics
import threading
import time

import numpy as np
from common import Goal, Rows, add_json_argument, fresh_interpreter_job

from server import sandbox
from server.engine.bank import load_bank
from server.engine.grade import grade_equations
from server.engine.instance import draw_instance
from server.engine.kinds.numpy import grade_numpy as engine_grade_numpy
from server.engine.problem import model_answer

# The engine's numpy grader, with the sandbox passed in (as services and the CLI do).
grade_numpy = functools.partial(engine_grade_numpy, run_job=sandbox.run_job,
                                check_source=sandbox.check_source)

_seeds = itertools.count(10_000)
_seeds_lock = threading.Lock()


def fresh_seeds() -> list[int]:
    """Two hidden seeds never used before (the server draws them per submission)."""
    with _seeds_lock:
        return [next(_seeds), next(_seeds)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grades", type=int, default=300)
    parser.add_argument("--fresh", type=int, default=20,
                        help="grades with a fresh interpreter per job (the baseline)")
    parser.add_argument("--cpu", action="store_true", help="CPU per grade, by process")
    add_json_argument(parser)
    args = parser.parse_args()
    rows = Rows("bench_numpy_grading")
    bank = load_bank()
    spec, eq_spec = bank["mlp-relu-numpy"], bank["mlp-relu"]
    insts = [draw_instance(spec, i) for i in range(50)]
    sources = [model_answer(spec, inst) for inst in insts]
    eq_insts = [draw_instance(eq_spec, i) for i in range(50)]
    eq_texts = [model_answer(eq_spec, inst) for inst in eq_insts]
    for i in range(10):  # warm the worker and its pool
        grade_numpy(spec, insts[i], sources[i], hidden_seeds=fresh_seeds())

    def one(i: int, concurrent: bool = True) -> float:
        t = time.perf_counter()
        result = grade_numpy(spec, insts[i % 50], sources[i % 50], hidden_seeds=fresh_seeds(),
                             concurrent=concurrent)
        assert result.score == 1.0, result.to_json()
        return (time.perf_counter() - t) * 1e3

    cold = []
    for k in range(min(100, args.grades)):
        inst = draw_instance(spec, 1000 + k)
        source = model_answer(spec, inst)
        t = time.perf_counter()
        grade_numpy(spec, inst, source, hidden_seeds=fresh_seeds())
        cold.append((time.perf_counter() - t) * 1e3)
    # Concurrent and sequential children, alternating so that both see the same load.
    together: list[float] = []
    apart: list[float] = []
    for i in range(args.grades):
        together.append(one(i))
        apart.append(one(i, concurrent=False))
    base = []
    for i in range(args.grades):
        t = time.perf_counter()
        grade_equations(eq_spec, eq_insts[i % 50], eq_texts[i % 50])
        base.append((time.perf_counter() - t) * 1e3)
    fresh = []
    for i in range(args.fresh):
        t = time.perf_counter()
        result = grade_numpy(spec, insts[i % 50], sources[i % 50], hidden_seeds=fresh_seeds(),
                             run_job=fresh_interpreter_job)
        fresh.append((time.perf_counter() - t) * 1e3)
        assert result.score == 1.0, result.to_json()
    print(f"numpy answer, stored + 2 hidden instances, one child each ({args.grades} grades)")
    row("first grade of an instance", cold)
    row("resubmission, children concurrent", together)
    row("resubmission, children one after another", apart)
    row("baseline: a fresh interpreter per job (same layers), concurrent", fresh)
    row("baseline: the same network as equations, in-process, no sandbox", base)
    setting = f"mlp-relu-numpy, own + 2 hidden instances, {args.grades} grades"
    fresh_label = (f"the same grade, a fresh interpreter per job, same layers "
                   f"(n={len(fresh)})")
    rows.add("numpy.grade.resubmission", "numpy grading in-process, resubmission",
             setting + ", children concurrent", n=len(together), samples=together,
             baseline=fresh_label, baseline_samples=fresh,
             goal=Goal(p50=6, p99=20))  # issue 4
    rows.add("numpy.grade.first", "numpy grading in-process, first grade of an instance",
             f"mlp-relu-numpy, {len(cold)} new instances", n=len(cold), samples=cold,
             baseline=fresh_label, baseline_samples=fresh)
    rows.add("numpy.grade.sequential", "numpy grading in-process, resubmission",
             setting + ", children one after another", n=len(apart), samples=apart,
             baseline="children concurrent, interleaved", baseline_samples=together)
    rows.add("numpy.grade.equations", "equations grading in-process (numpy's baseline)",
             f"mlp-relu as equations, own instance only, {args.grades} grades", n=len(base),
             samples=base)
    for callers in (2, 8):
        lat, wall = concurrent_callers(one, callers, max(args.grades // callers, 10))
        print(f"  {callers} concurrent callers: {len(lat) / wall:6.1f} grades/s   "
              f"p50 {statistics.median(lat):.3f} ms   p99 {np.percentile(lat, 99):.3f} ms")
        rows.add(f"numpy.grade.callers.{callers}", "numpy grading, concurrent callers",
                 f"mlp-relu-numpy, {callers} callers, {len(lat)} grades", n=len(lat),
                 samples=lat, throughput=len(lat) / wall, throughput_unit="grades/s",
                 goal=Goal(throughput=200) if callers == 8 else None)  # issue 4
    if args.cpu:
        grader, box = cpu_per_grade(one, args.grades)
        print(f"  CPU per grade, back to back: grader {grader:.2f} ms, sandbox (worker and "
              f"children) {box:.2f} ms, sum {grader + box:.2f} ms; load average "
              f"{os.getloadavg()[0]:.2f}")
    rows.write(args.json)


def sandbox_cpu() -> float:
    """CPU seconds of the sandbox worker and its reaped children, from /proc."""
    pid = sandbox.get_sandbox().worker_pid()
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def cpu_per_grade(one, grades: int) -> tuple[float, float]:
    """(this process, the sandbox) CPU ms per grade over ``grades`` grades."""
    time.sleep(1.0)  # children of earlier phases end and are reaped
    mine, box = time.process_time(), sandbox_cpu()
    for i in range(grades):
        one(i)
    time.sleep(1.0)  # this phase's children end (at idle priority) and are reaped
    mine = time.process_time() - mine
    return mine / grades * 1e3, (sandbox_cpu() - box) / grades * 1e3


def row(label: str, values: list[float]) -> None:
    print(f"  {label:<66} p50 {statistics.median(values):7.3f} ms   "
          f"p99 {np.percentile(values, 99):7.3f} ms")


def concurrent_callers(one, callers: int, per: int) -> tuple[list[float], float]:
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
