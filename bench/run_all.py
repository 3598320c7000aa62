"""Run every benchmark in bench/ in turn (``make bench``) and print one table at the end.

Each benchmark prints its own figures as it runs (kept in full above the table);
the table has one row per benchmark: its wall time, whether it succeeded, and
its headline figures (the lines that carry medians, p50/p99 or throughput).
``--only NAME[,NAME]`` runs some of them; ``--quick`` passes the small sizes
that the benchmarks accept (burst: 60 students in 20 s).
"""

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

here = Path(__file__).resolve().parent
FIGURES = re.compile(r"p50|p99|median|/s\b|per second|ratio|x faster|slower", re.I)
QUICK = {"burst.py": ["--students", "60", "--seconds", "20"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scripts = sorted(here.glob("bench_*.py")) + [here / "burst.py"]
    if args.only:
        wanted = set(args.only.split(","))
        scripts = [s for s in scripts if s.stem in wanted or s.name in wanted]
    rows = []
    status = 0
    for script in scripts:
        print(f"\n### {script.name}", flush=True)
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, str(script), *(QUICK.get(script.name, []) if args.quick else [])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip())
        code = process.wait()
        status |= code
        headline = [line.strip() for line in lines if FIGURES.search(line)][:6]
        rows.append((script.name, time.monotonic() - started, code, headline))
    print(f"\n## All benchmarks: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} CPUs, {platform.platform()}, load {os.getloadavg()[0]:.2f}\n")
    print("| benchmark | s | ok | headline figures |")
    print("|---|---:|---|---|")
    for name, seconds, code, headline in rows:
        figures = "<br>".join(h.replace("|", "/")[:160] for h in headline) or "(see above)"
        print(f"| {name} | {seconds:.0f} | {'yes' if code == 0 else f'exit {code}'} "
              f"| {figures} |")
    sys.exit(status)


if __name__ == "__main__":
    main()
