"""Sandbox overhead: the pre-forked pool vs a fresh interpreter per job.

    .venv/bin/python bench/bench_sandbox.py [--jobs 200] [--fresh-jobs 20]

Prints, in one run on this machine:
  * per-job latency of a trivial job through the pool (back to back, and with
    the pool given time to refill between jobs), p50/p90/p99;
  * the same job in a fresh interpreter per job with the same isolation
    (python -I, import numpy, chroot, setuid, seccomp, netns), p50/p90;
  * the unsafe in-process reference (exec + call, no isolation);
  * three calls in one job beside three one-call jobs at once (one child per
    call, as the grader runs a student's own and hidden instances);
  * throughput with 2 and 8 concurrent callers.
Figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from common import Goal, Rows, add_json_argument, fresh_interpreter_job  # noqa: E402

from server.sandbox import client, run_job, sandbox_status  # noqa: E402

SOURCE = """
import numpy as np

def backward(x, W1, z1, dy):
    dz1 = dy * (z1 > 0)
    return {"dW1": x.T @ dz1, "dx": dz1 @ W1.T}
"""


def make_call(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, w1 = rng.standard_normal((4, 3)), rng.standard_normal((3, 5))
    z1 = x @ w1
    return {"x": x, "W1": w1, "z1": z1, "dy": rng.standard_normal((4, 5))}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(values: list[float]) -> str:
    return (f"p50 {statistics.median(values):7.2f} ms   p90 {pct(values, 0.9):7.2f} ms   "
            f"p99 {pct(values, 0.99):7.2f} ms   (n={len(values)})")


def worker_cpu_s() -> float:
    """CPU seconds of the sandbox worker and its reaped children (fork, set-up,
    warm-up, job, exit) so far."""
    pid = client.get_sandbox().worker_pid()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def split_latency(n: int, gap_s: float, ncalls: int = 3) -> list[float]:
    """``ncalls`` calls as ``ncalls`` one-call jobs at once (one child each, as the
    grader runs a student's instance and the hidden ones), all but one on threads."""
    calls = [make_call(seed) for seed in range(ncalls)]
    out = []
    with ThreadPoolExecutor(ncalls) as pool:
        for _ in range(n):
            t = time.perf_counter()
            others = [pool.submit(run_job, SOURCE, [c]) for c in calls[1:]]
            results = [run_job(SOURCE, calls[:1])] + [f.result() for f in others]
            out.append((time.perf_counter() - t) * 1e3)
            assert all(r.status == "ok" and r.calls[0].status == "ok" for r in results), results
            if gap_s:
                time.sleep(gap_s)
    return out


def pool_latency(n: int, gap_s: float, ncalls: int = 1) -> list[float]:
    calls = [make_call(seed) for seed in range(ncalls)]
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = run_job(SOURCE, calls)
        out.append((time.perf_counter() - t) * 1e3)
        assert r.status == "ok" and all(c.status == "ok" for c in r.calls), r
        if gap_s:
            time.sleep(gap_s)
    return out


def fresh_latency(n: int) -> list[float]:
    call = make_call()
    limits = {"time_limit_s": 5.0, "memory_mb": 512}
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = fresh_interpreter_job(SOURCE, [call], **limits)
        out.append((time.perf_counter() - t) * 1e3)
        assert r.status == "ok" and r.calls[0].status == "ok", r
    return out


def in_process_latency(n: int) -> list[float]:
    call = make_call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        ns: dict[str, object] = {}
        exec(compile(SOURCE, "answer.py", "exec"), ns)
        ns["backward"](**{k: v.copy() for k, v in call.items()})
        out.append((time.perf_counter() - t) * 1e3)
    return out


def throughput(callers: int, jobs_each: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def caller(seed: int) -> None:
        call = make_call(seed)
        mine = []
        for _ in range(jobs_each):
            t = time.perf_counter()
            r = run_job(SOURCE, [call])
            mine.append((time.perf_counter() - t) * 1e3)
            assert r.status == "ok", r
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return callers * jobs_each / (time.perf_counter() - t), latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--fresh-jobs", type=int, default=20)
    ap.add_argument("--throughput-jobs", type=int, default=400)
    ap.add_argument("--gap-ms", type=float, default=10.0,
                    help="pause between spaced jobs (lets the pool refill)")
    add_json_argument(ap)
    opts = ap.parse_args()
    rows = Rows("bench_sandbox")

    status = sandbox_status()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"pool size {status.get('pool_size')}")
    print("layers: " + ", ".join(k for k, v in (status.get("layers") or {}).items() if v)
          + ("" if status["available"] else f"   (MISSING: {status['missing']})"))
    pool_latency(20, 0)  # warm-up: worker start, first jobs

    time.sleep(1)
    cpu_before = worker_cpu_s()
    gap = opts.gap_ms / 1e3
    spaced = pool_latency(opts.jobs, gap)
    time.sleep(1)  # the last children are torn down and reaped
    cpu_per_job = (worker_cpu_s() - cpu_before) / opts.jobs * 1e3
    back = pool_latency(opts.jobs, 0)
    three = pool_latency(opts.jobs, gap, ncalls=3)
    split = split_latency(opts.jobs, gap)
    fresh = fresh_latency(opts.fresh_jobs)
    inproc = in_process_latency(opts.jobs)
    print()
    print("per-job latency, trivial MLP-layer backward (one call):")
    g = f"{opts.gap_ms:g} ms"
    print(f"  pool, {g + ' between jobs':<25} {summary(spaced)}")
    print(f"  pool, back to back              {summary(back)}")
    print(f"  fresh interpreter + same layers {summary(fresh)}")
    print(f"  in-process, no isolation        {summary(inproc)}")
    print(f"  pool, 3 calls/job, {g + ' gaps':<12} {summary(three)}")
    print(f"  pool, 3 one-call jobs at once   {summary(split)}  ({g} gaps; one child per call)")
    print(f"  CPU per pooled job (worker + child: fork, set-up, warm-up, job, exit): "
          f"{cpu_per_job:.1f} ms")
    print(
        "  speed-up of the pool (p50): "
        f"{statistics.median(fresh) / statistics.median(spaced):.0f}x "
        f"({g} gaps), {statistics.median(fresh) / statistics.median(back):.0f}x (back to back)"
    )
    fresh_label = f"a fresh interpreter per job, same layers (n={len(fresh)})"
    rows.add("sandbox.pool.spaced", "sandbox job, pre-forked pool",
             f"trivial one-call job, {g} between jobs", n=len(spaced), samples=spaced,
             baseline=fresh_label, baseline_samples=fresh, goal=Goal(p50=3, ratio_max=1 / 50))
    rows.add("sandbox.pool.back", "sandbox job, pre-forked pool", "trivial one-call job, "
             "back to back", n=len(back), samples=back, baseline=fresh_label,
             baseline_samples=fresh, goal=Goal(ratio_max=1 / 50))
    print()
    print("throughput (concurrent callers in one process, back to back):")
    for callers in (2, 8):
        rate, lat = throughput(callers, max(1, opts.throughput_jobs // callers))
        print(f"  {callers} callers: {rate:6.0f} jobs/s   latency {summary(lat)}")
        rows.add(f"sandbox.callers.{callers}", "sandbox jobs, concurrent callers",
                 f"{callers} callers back to back, trivial job", n=len(lat), samples=lat,
                 throughput=rate, throughput_unit="jobs/s", goal=Goal(throughput=200))
    client.get_sandbox().close()
    rows.write(opts.json)


if __name__ == "__main__":
    main()
