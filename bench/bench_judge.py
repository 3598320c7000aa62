"""Grading in-process vs through the judge (a pre-forked process per grading), side by side.

For each case the same answers are graded in this process (``grade_answer``,
the baseline: what the server did before the judge) and through a
``server.judge.Judge`` pool, alternating one by one so that both see the same
machine load. Prints medians, p99s and the judge's overhead per grading, and the CPU time
per grading on each side (this thread's, plus the judge processes' from
/proc: a figure that other work on the machine shifts much less); then
what a fresh process costs (spec and instance texts sent once), a round trip
with no work, forking a judge process, and starting the zygote.

    .venv/bin/python bench/bench_judge.py [--rounds 300] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from common import Rows, add_json_argument

from server.engine.bank import load_bank
from server.engine.problem import draw, grade_answer, instance_from_document, model_answer
from server.judge import Judge, grade


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(seconds: float) -> float:
    return seconds * 1e3


def cases(bank) -> dict[str, tuple]:
    """name -> (spec, [(document_json, engine instance, answer)])"""
    out = {}
    mlp = bank["mlp-relu"]
    rule = bank["rule-4a-generalized-chain"]
    mlp_jobs, wrong_jobs, expr_jobs, tower_jobs = [], [], [], []
    for seed in range(20):
        inst = draw(mlp, seed)
        document = json.dumps(inst.to_json())
        answer = model_answer(mlp, inst)
        engine_inst = instance_from_document(mlp, json.loads(document))
        mlp_jobs.append((document, engine_inst, answer))
        wrong_jobs.append((document, engine_inst, answer.replace("(z2 > 0)", "(z1 > 0)")))
        e_inst = draw(rule, seed)
        e_document = json.dumps(e_inst.to_json())
        expr_jobs.append((e_document, e_inst, e_inst.reference))
        tower_jobs.append((e_document, e_inst, "exp(exp(exp(exp(exp(x)))))"))
    out["mlp-relu, correct (14 lines)"] = (mlp, mlp_jobs)
    out["mlp-relu, wrong mask on line 10"] = (mlp, wrong_jobs)
    out["rule-4a expression, correct"] = (rule, expr_jobs)
    out["rule-4a, exp(exp(exp(exp(exp(x)))))"] = (rule, tower_jobs)
    return out


def judge_cpu_seconds(judge: Judge) -> float:
    """CPU time (user + system) used so far by the pool's judge processes."""
    total = 0
    for pid in judge.status()["idle"]:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def side_by_side(judge: Judge, spec, jobs, rounds: int):
    """Wall times of each grading on both sides, and CPU seconds per grading."""
    hidden = (101, 102)
    for document, inst, answer in jobs:  # warm: texts sent, caches filled on both sides
        grade(judge, spec, document, answer, hidden)
        grade_answer(spec, inst, answer, hidden_seeds=hidden)
    local, remote = [], []
    local_cpu = remote_cpu = 0.0
    judge_cpu = judge_cpu_seconds(judge)
    for i in range(rounds):
        document, inst, answer = jobs[i % len(jobs)]
        start, cpu = time.perf_counter(), time.thread_time()
        expected = grade_answer(spec, inst, answer, hidden_seeds=hidden).to_json()
        local.append(time.perf_counter() - start)
        local_cpu += time.thread_time() - cpu
        start, cpu = time.perf_counter(), time.thread_time()
        result = grade(judge, spec, document, answer, hidden)
        remote.append(time.perf_counter() - start)
        remote_cpu += time.thread_time() - cpu
        assert result == expected, "the judge and the engine disagree"
    remote_cpu += judge_cpu_seconds(judge) - judge_cpu
    return local, remote, local_cpu / rounds, remote_cpu / rounds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--size", type=int, default=2, help="judge processes")
    add_json_argument(parser)
    args = parser.parse_args()
    rows = Rows("bench_judge")
    bank = load_bank()
    print(f"machine: {os.cpu_count()} cores, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    start = time.perf_counter()
    judge = Judge(size=args.size, timeout_s=10)
    judge.start()
    print(f"zygote start + {args.size} judge processes: {ms(time.perf_counter() - start):.0f} ms")
    try:
        print(f"\n{'case':40} {'in-process p50/p99':>20} {'judge p50/p99':>16} "
              f"{'overhead p50':>13} {'ratio':>6} {'CPU in-process / judge':>24}")
        for name, (spec, jobs) in cases(bank).items():
            local, remote, local_cpu, remote_cpu = side_by_side(judge, spec, jobs, args.rounds)
            lp50, rp50 = statistics.median(local), statistics.median(remote)
            print(f"{name:40} {ms(lp50):9.3f} / {ms(pct(local, 99)):7.3f} "
                  f"{ms(rp50):7.3f} / {ms(pct(remote, 99)):6.3f} {ms(rp50 - lp50):10.3f} ms "
                  f"{rp50 / lp50:6.2f} {ms(local_cpu):12.3f} / {ms(remote_cpu):.3f} ms")
            rows.add("judge." + name.split(",")[0].split()[0] + "." + str(len(rows.rows)),
                     "grading through the judge", f"{name}, {args.size} judge processes",
                     n=len(remote), samples=[ms(x) for x in remote],
                     baseline="the same grading in-process (grade_answer), alternating",
                     baseline_samples=[ms(x) for x in local])

        round_trips = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            judge.call({"task": "ping"})
            round_trips.append(time.perf_counter() - start)
        print(f"\nround trip, no work: p50 {ms(statistics.median(round_trips)):.3f} ms, "
              f"p99 {ms(pct(round_trips, 99)):.3f} ms")

        # a process that has never seen this spec or instance: texts sent, parsed once
        mlp = bank["mlp-relu"]
        first, again = [], []
        for seed in range(1000, 1000 + min(args.rounds, 100)):
            inst = draw(mlp, seed)
            document, answer = json.dumps(inst.to_json()), model_answer(mlp, inst)
            start = time.perf_counter()
            grade(judge, mlp, document, answer)
            first.append(time.perf_counter() - start)
            start = time.perf_counter()
            grade(judge, mlp, document, answer)
            again.append(time.perf_counter() - start)
        print(f"mlp-relu, first grading of an instance in a process (its text sent): p50 "
              f"{ms(statistics.median(first)):.3f} ms; the next one: "
              f"{ms(statistics.median(again)):.3f} ms")

        forks = []
        for _ in range(30):
            start = time.perf_counter()
            process = judge._spawn()  # what replacing a killed judge process costs
            forks.append(time.perf_counter() - start)
            process.kill()
            process.close()
        print(f"forking a judge process from the zygote: p50 "
              f"{ms(statistics.median(forks)):.2f} ms, p99 {ms(pct(forks, 99)):.2f} ms")
    finally:
        judge.close()
    rows.write(args.json)


if __name__ == "__main__":
    main()
