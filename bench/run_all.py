"""Run every benchmark (``make bench``) and print one table: a row per measurement.

Each benchmark runs in its own process with ``--json FILE`` and writes its
measurements as rows (bench/common.py); this script reads those files, never
the benchmarks' printed text (which it passes through, above the table). Every
row has the same columns: measure, setting (with the sizes), n, p50, p99,
throughput, the baseline measured in the same run, the ratio of p50 to it, the
goal and whether it is met. The benchmarks that use a database run on SQLite
and on PostgreSQL.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME[,NAME]] [--json FILE]
                                      [--record] [--postgres SERVER_URL]

``--quick`` runs tiny sizes (seconds per benchmark, for the test that checks the
table has every row; its figures mean nothing). ``--record`` writes the table,
with the date, the machine, the load average before and after, the commit and
the command, at the top of docs/benchmarks.md (between the bench-table markers).
Exits 1 when a benchmark fails or an expected row is missing; a goal not met is
a figure, not a failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import POSTGRES, finish  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
BOTH = ("sqlite", "postgresql")  # the benchmarks with a database run on both

# script -> (arguments for the full run, for --quick, databases or None)
BENCHES: dict[str, tuple[list[str], list[str], tuple[str, ...] | None]] = {
    "bench_engine.py": (["--seeds", "100"], ["--seeds", "3"], None),
    "bench_answer.py": (["--n", "1000"], ["--n", "30"], None),
    "bench_numpy_grading.py": (["--grades", "200", "--fresh", "20"],
                               ["--grades", "10", "--fresh", "2"], None),
    "bench_sandbox.py": (["--jobs", "200", "--fresh-jobs", "20", "--throughput-jobs", "400"],
                         ["--jobs", "10", "--fresh-jobs", "2", "--throughput-jobs", "20"],
                         None),
    "bench_child_cost.py": (["--children", "100"], ["--children", "5"], None),
    "bench_judge.py": (["--rounds", "200"], ["--rounds", "10"], None),
    "bench_limits.py": (["--takes", "1000"], ["--takes", "20"], None),
    "bench_pages.py": (["--requests", "100"], ["--requests", "3"], None),
    "bench_spec_save.py": (["--rounds", "2"],
                           ["--rounds", "1", "--only", "rule-1a-scalar-mult,mlp-relu"], None),
    "bench_preview.py": (["--requests", "100"],
                         ["--requests", "3", "--seeds", "2", "--workers", "1"], None),
    "bench_submit_path.py": (["--submissions", "150"], ["--submissions", "3"], BOTH),
    "bench_http.py": (["--clients", "1", "--requests", "200", "--seconds", "20",
                       "--first", "20"],
                      ["--clients", "1", "--requests", "5", "--seconds", "5", "--first", "1",
                       "--workers", "1"], BOTH),
    "burst.py": (["--students", "300", "--seconds", "60"],
                 ["--students", "6", "--seconds", "2", "--workers", "1", "--threads", "2"],
                 BOTH),
    "bench_export.py": (["--students", "2000", "--rounds", "5"],
                        ["--students", "20", "--rounds", "2"], BOTH),
    "bench_analytics.py": (["--students", "1000", "--rounds", "20"],
                           ["--students", "20", "--rounds", "2"], BOTH),
    "bench_regrade.py": (["--submissions", "10000", "--runner", "both"],
                          ["--submissions", "20", "--students", "2", "--sample", "2",
                          "--runner", "inprocess"], BOTH),
}
# Not in the table: it counts mistakes that grade as right (docs/grading.md), not time.
NOT_TIMED = {"bench_mutants.py"}

COLUMNS = ["measure", "setting", "n", "p50", "p99", "throughput", "baseline (same run)",
           "ratio", "goal", "met"]


def expected_keys(only: set[str], quick: bool) -> list[str]:
    """The rows the table must have (of the benchmarks that ran)."""
    keys = {"bench_engine": [f"engine.draw.{p.stem}"
                             for p in sorted((ROOT / "problems").glob("*.toml"))]
            + ["engine.grade.mlp-relu.model.own", "engine.grade.mlp-relu.model.hidden"],
            "bench_numpy_grading": ["numpy.grade.resubmission", "numpy.grade.callers.8"],
            "bench_http": [f"http.{kind}.{db}" for kind in ("equations", "numpy")
                           for db in BOTH],
            "burst": [f"burst.{db}" for db in BOTH],
            "bench_export": [f"export.{fmt}.{db}" for fmt in ("long", "canvas") for db in BOTH],
            "bench_regrade": [f"regrade.{runner}.{db}" for db in BOTH
                              for runner in ("in-process",) + (() if quick else ("rq",))]}
    return [key for bench, names in keys.items() if not only or bench in only
            for key in names]


def run_bench(script: str, args: list[str], database: str | None, postgres: str,
              folder: Path) -> tuple[list[dict], int, float]:
    """Run one benchmark; (its rows, exit code, seconds)."""
    out = folder / f"{Path(script).stem}-{database or 'any'}.json"
    command = [sys.executable, str(HERE / script), *args, "--json", str(out)]
    if script == "burst.py":
        command += ["--db", database or "sqlite"]
    if database == "postgresql":
        command += ["--postgres", postgres]
    print(f"\n### {script}{f' ({database})' if database else ''}: "
          f"{shlex.join(command[1:])}", flush=True)
    started = time.monotonic()
    code = subprocess.call(command, cwd=ROOT)
    seconds = time.monotonic() - started
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    if code or not rows:
        rows.append({"bench": Path(script).stem, "key": f"{Path(script).stem}.failed",
                     "measure": f"{script} failed (exit {code})",
                     "setting": database or "", "n": 0, "unit": "", "p50": None, "p99": None,
                     "mean": None, "throughput": None, "throughput_unit": "",
                     "baseline": None, "baseline_p50": None, "baseline_key": None,
                     "ratio": None, "goal": "runs", "goal_limits": None,
                     "checks": {"runs": False}, "met": False})
    return rows, code, seconds


def link_baselines(rows: list[dict]) -> None:
    """Rows whose baseline is another row of this run (``baseline_key``)."""
    by_key = {row["key"]: row for row in rows}
    for row in rows:
        other = by_key.get(row.get("baseline_key") or "")
        if other is not None and other["p50"] is not None:
            row["baseline"] = f"{other['measure']} ({other['setting']})"
            row["baseline_p50"] = other["p50"]
            finish(row)


def figure(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
    return f"{value:.{digits}f} {unit}".strip()


def cells(row: dict) -> list[str]:
    unit = row["unit"]
    p50 = (figure(row["p50"], unit) if row["p50"] is not None
           else f"mean {figure(row['mean'], unit)}" if row["mean"] is not None else "—")
    throughput = (f"{figure(row['throughput'], '')} {row['throughput_unit']}"
                  if row["throughput"] is not None else "—")
    baseline = (f"{row['baseline']}: {figure(row['baseline_p50'], unit)}"
                if row["baseline"] and row["baseline_p50"] is not None else "—")
    ratio = f"{row['ratio']:.3g}×" if row["ratio"] is not None else "—"
    met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
    return [row["measure"], row["setting"], str(row["n"]), p50, figure(row["p99"], unit),
            throughput, baseline, ratio, row["goal"] or "—", met]


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|---|---|---:|---:|---:|---:|---|---:|---|---|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells(row)) + " |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal")), 0)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "server",
                            "bench", "problems"], capture_output=True, text=True).stdout.strip()
    return {"cpu": f"{os.cpu_count()} × {model}", "ram": f"{kb / 1024 ** 2:.1f} GiB",
            "os": platform.platform(), "python": platform.python_version(),
            "commit": commit + (" (with uncommitted changes)" if dirty else "")}


def loadavg() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def header(meta: dict) -> str:
    return (f"{meta['finished']} UTC (started {meta['started']}), commit {meta['commit']}; "
            f"{meta['cpu']}, {meta['ram']} RAM, {meta['os']}, Python {meta['python']}; "
            f"load average (1 / 5 / 15 min) {meta['load_before']} before, "
            f"{meta['load_after']} after; {meta['minutes']:.1f} min in all.\n\n"
            f"    {meta['command']}")


def record(meta: dict, table: str) -> None:
    """The table at the top of docs/benchmarks.md, between the markers (replaced)."""
    sizes = "quick sizes: the figures mean nothing" if meta["quick"] else "full sizes"
    block = (f"{START}\n## Latest `make bench` ({sizes})\n\n"
             f"{header(meta)}\n\n{table}\n\n{meta['per_bench']}\n{END}")
    text = DOCS.read_text()
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        title, _, rest = text.partition("\n\n")
        text = f"{title}\n\n{block}\n\n{rest}"
    DOCS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks the table)")
    parser.add_argument("--json", metavar="FILE", help="write the rows and the machine (JSON)")
    parser.add_argument("--record", action="store_true",
                        help="write the table at the top of docs/benchmarks.md")
    parser.add_argument("--postgres", default=POSTGRES, metavar="SERVER_URL")
    parser.add_argument("--rows-from", metavar="DIR",
                        help="run nothing: build the table from the benchmarks' --json files "
                             "in DIR (e.g. benchmarks run one by one)")
    args = parser.parse_args()
    only = {name.removesuffix(".py") for name in args.only.split(",") if name}
    unknown = only - {Path(s).stem for s in BENCHES}
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    present = {p.name for p in HERE.glob("bench_*.py")} | {"burst.py"}
    missing_scripts = present - set(BENCHES) - NOT_TIMED
    if missing_scripts:  # a new benchmark must be added to BENCHES
        parser.error(f"not in run_all.BENCHES: {', '.join(sorted(missing_scripts))}")

    meta = {"started": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}", "quick": args.quick,
            "load_before": loadavg(), "command": shlex.join(
                [".venv/bin/python", "bench/run_all.py", *sys.argv[1:]]), **machine()}
    started = time.monotonic()
    rows: list[dict] = []
    status = 0
    took = []
    if args.rows_from:
        files = sorted(Path(args.rows_from).glob("*.json"))
        rows = [row for f in files for row in json.loads(f.read_text())["rows"]]
        took.append(f"rows of {len(files)} files in {args.rows_from}")
    with tempfile.TemporaryDirectory(prefix="nabla-bench-rows-") as folder:
        for script, (full, quick, databases) in BENCHES.items():
            if args.rows_from:
                break
            if only and Path(script).stem not in only:
                continue
            for database in databases or (None,):
                got, code, seconds = run_bench(script, quick if args.quick else full,
                                               database, args.postgres, Path(folder))
                rows += got
                status |= int(code != 0)
                took.append(f"{Path(script).stem}{f' ({database})' if database else ''} "
                            f"{seconds:.0f} s")
    link_baselines(rows)
    have = {row["key"] for row in rows}
    missing = [key for key in expected_keys(only, args.quick) if key not in have]
    meta.update(finished=f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}", load_after=loadavg(),
                minutes=(time.monotonic() - started) / 60,
                per_bench="Time per benchmark: " + ", ".join(took) + ".")
    table = markdown(rows)
    print(f"\n## All benchmarks\n\n{header(meta)}\n\n{table}\n\n{meta['per_bench']}")
    if missing:
        status = 1
        print(f"\nMISSING rows: {', '.join(missing)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "columns": COLUMNS,
                                               "rows": rows, "missing": missing}, indent=1))
    if args.record:
        record(meta, table)
        print(f"recorded in {DOCS.relative_to(ROOT)}")
    sys.exit(status)


if __name__ == "__main__":
    main()
