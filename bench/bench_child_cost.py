"""What one sandboxed child costs, stage by stage (CPU, not wall time): where a
numpy submission's CPU goes, since it runs three children (its own instance
and two hidden ones, one child each: docs/sandbox.md).

    .venv/bin/python bench/bench_child_cost.py [--children 200]

Run as root (the sandbox's set-up changes uid and chroots). In a fresh
interpreter that imports what the sandbox worker imports (``python -I``, the
worker's preloaded modules, ``gc.freeze()``), it forks ``--children`` children
per stage and prints the CPU per child, the child's own and the forking
process's, for:

  * fork + exit: nothing else (page tables copied at fork, torn down at exit);
  * + sandbox: ``enter_sandbox`` (descriptors, rlimits, chroot, uid, seccomp);
  * + warm-up: the worker's warm-up job, as a pooled child runs it;
  * + warm-up + job: then a real job, mlp-relu-numpy's model answer on one
    instance (what each child of a numpy submission does);
  * + job, no warm-up: the job straight after the set-up.

Then the cost of fork + exit alone against the modules the process holds:
numpy only, the preloads without numpy.random, and every preload (fork and
exit cost grows with the mappings and pages a process has). Figures only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # as the worker's environment: no BLAS threads

UID = 1_999_999_000  # outside the worker's uid blocks


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def faults() -> tuple[int, int]:
    """Minor page faults so far: (reaped children, this process)."""
    return (resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt,
            resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


FAULTS: list[tuple[float, float]] = []  # per fork_loop: faults per child (child's, parent's)


def fork_loop(n: int, body) -> tuple[float, float]:
    """CPU ms per child: (the child's, this process's). Appends the minor page
    faults per child to FAULTS: a count that, unlike CPU time, does not move
    with the machine's load (copy-on-write copies are most of a child's cost)."""
    c0, s0 = cpu_children(), cpu_self()
    f0 = faults()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                body()
            except BaseException:
                code = 70
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise SystemExit(f"a child failed (wait status {status}); run as root")
    f1 = faults()
    FAULTS.append(((f1[0] - f0[0]) / n, (f1[1] - f0[1]) / n))
    return (cpu_children() - c0) / n * 1e3, (cpu_self() - s0) / n * 1e3


def job_bytes() -> bytes:
    """A real job: mlp-relu-numpy's model answer on one instance, one call."""
    from server.engine.bank import load_bank
    from server.engine.instance import draw_instance
    from server.engine.kinds.numpy import call_arguments
    from server.engine.problem import model_answer
    from server.sandbox import wire

    spec = load_bank()["mlp-relu-numpy"]
    inst = draw_instance(spec, 3)
    limits = {"time_limit_s": 2.0, "memory_mb": 512, "max_output_arrays": 64,
              "max_array_elements": 1_000_000, "max_output_bytes": 64 << 20,
              "max_stream_chars": 10_000, "outputs": ["d" + a for a in inst.ask]}
    source = model_answer(spec, inst)
    try:  # the module compiled by the server, as the client sends it (when it does)
        from server.sandbox.source import compiled_source
    except ImportError:
        return wire.encode_job(source, [call_arguments(inst)], "backward", limits)
    return wire.encode_job(source, [call_arguments(inst)], "backward", limits,
                           compiled_source(source, "backward"))


def stages(n: int, data: bytes, out: str = "") -> None:
    """In a process that imported what the sandbox worker imports, and no more."""
    from server.sandbox import child, isolation, pool, seccomp, wire

    header_len = wire.U64.unpack_from(data, 4)[0]
    decode = getattr(wire, "decode_job_header", json.loads)  # JSON before it was marshal
    header = decode(data[12:12 + header_len])
    blob = bytes(data[12 + header_len + 8:])
    isolation.preload()
    filt = seccomp.build_filter()
    devnull = os.open(os.devnull, os.O_RDWR)
    cfg = {"insecure": False, "root_dir": pool.empty_root(), "uid_mode": "setuid",
           "uid": UID, "host_uid": 0, "worker_pid": os.getpid(), "netns": None,
           "seccomp_error": None, "max_memory_mb": 4096, "max_cpu_s": 60,
           "baseline_vm": isolation.vm_size() + (16 << 20)}
    gc.collect()
    gc.freeze()
    read_end, write_end = os.pipe()

    def sandbox() -> None:
        isolation.enter_sandbox(dict(cfg), filt, write_end, devnull)

    def job() -> None:
        child.use_config(dict(cfg))
        child.execute_job(header, bytearray(blob), lambda head, payload=None: None)

    plans = {
        "fork + exit": [],
        "+ sandbox": [sandbox],
        "+ sandbox + warm-up": [sandbox, child._warm_up],
        "+ sandbox + warm-up + job": [sandbox, child._warm_up, job],
        "+ sandbox + job, no warm-up": [sandbox, job],
    }
    print(f"CPU per child, {n} children per stage (ms): the child's, the forking process's")
    figures = {}
    for label, steps in plans.items():
        # (not ``child``: job() calls the module of that name)
        own, parent = fork_loop(n, lambda steps=steps: [step() for step in steps])
        own_faults, parent_faults = FAULTS[-1]
        print(f"  {label:<30} child {own:6.3f}   parent {parent:6.3f}   "
              f"sum {own + parent:6.3f}   page faults: child {own_faults:5.0f}, "
              f"parent {parent_faults:4.0f}", flush=True)
        figures[label] = own + parent
    if out:
        with open(out, "w") as fh:
            json.dump(figures, fh)
    os.close(read_end)
    os.close(write_end)


_STAGES = """
import sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
from bench_child_cost import stages
stages(int(sys.argv[3]), sys.stdin.buffer.read(), sys.argv[4])
"""


_PRELOADS = """
import gc, os, sys
sys.path.insert(0, sys.argv[1])
from server.sandbox import isolation
which = sys.argv[2]
if which == "numpy":
    import numpy
else:
    for name in isolation._PRELOAD:
        if which == "all" or name != "numpy.random":
            try:
                __import__(name)
            except ImportError:
                pass
gc.collect(); gc.freeze()
sys.path.insert(0, sys.argv[3])
from bench_child_cost import fork_loop
child, parent = fork_loop(int(sys.argv[4]), lambda: None)
with open("/proc/self/maps") as fh:
    maps = sum(1 for _ in fh)
anon = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("RssAnon"))
print(f"  {which:<22} mappings {maps:4d}   anonymous {int(anon) / 1024:5.1f} MiB   "
      f"fork + exit {child + parent:6.3f} ms")
"""


def preloads(n: int) -> None:
    print("fork + exit against what the process has imported (each in a fresh interpreter):")
    for which in ("numpy", "all but numpy.random", "all"):
        subprocess.run([sys.executable, "-c", _PRELOADS, str(ROOT), which,
                        str(Path(__file__).parent), str(n)], check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--json", metavar="FILE", help="also write table rows for run_all.py")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the sandbox set-up changes uid and chroots")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    try:  # the worker's own first statements, where it has them
        from server.sandbox.client import WORKER_PRELUDE
    except ImportError:
        WORKER_PRELUDE = ""
    subprocess.run([sys.executable, "-I", "-c", WORKER_PRELUDE + _STAGES, str(ROOT),
                    str(Path(__file__).parent), str(args.children), args.json or ""],
                   input=job_bytes(), check=True,
                   env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    if args.json:
        from common import Rows

        rows, figures = Rows("bench_child_cost"), json.loads(Path(args.json).read_text())
        for label, cpu in figures.items():
            rows.add("child." + label.strip("+ ").replace(" ", "-"), "sandboxed child, CPU "
                     "(child + forking process)", f"{label}, {args.children} children",
                     n=args.children, mean=cpu, baseline="fork + exit, same run",
                     baseline_p50=figures["fork + exit"] if label != "fork + exit" else None)
        rows.write(args.json)
    preloads(args.children)


if __name__ == "__main__":
    main()
