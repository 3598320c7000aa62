"""What one API submission costs the web process: SQL statements, commits, CPU, a profile.

    .venv/bin/python bench/bench_submit_path.py [--submissions 100] [--postgres URL]
                                                [--kinds equations,numpy]
                                                [--profile cumulative|tottime] [--top 30]

The same data as bench_http.py (the demo course, a "Benchmark" assignment with
mlp-relu and mlp-relu-numpy, one student with an API token), but the app is
driven in this process through Flask's test client, so that everything a
gunicorn worker does for ``POST /api/v1/.../submissions`` (token, rate counter,
store, grade through the judge or the sandbox, record, response) is counted
here: the SQL statements it sends (by their first word, and in total), the
transactions it commits, and the CPU of this process per submission (the judge
and the sandbox are other processes; bench_http.py --cpu measures those).
With --profile, a cProfile of the measured submissions, sorted as asked.

To compare versions, run it with ``PYTHONPATH=<other tree>``: the app comes from
there (this script then does not put its own tree first). Figures only; the
statement count is also guarded by a test (tests/web/test_api_grading.py).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import os
import pstats
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("PYTHONPATH"):
    sys.path.append(str(ROOT))  # the tree under test comes first
else:
    sys.path.insert(0, str(ROOT))

from bench_http import BENCH_SUBMIT_RATE, PROBLEMS, model_answers, prepare_data  # noqa: E402
from common import Rows, add_json_argument  # noqa: E402

if os.environ.get("PYTHONPATH"):  # bench_http put this tree first again
    sys.path[:] = [p for p in sys.path if p != str(ROOT)] + [str(ROOT)]

WARM_UP = 5


def measure(client, engine, path: str, headers: dict, body: bytes, count: int,
            profiler: cProfile.Profile | None) -> dict:
    from sqlalchemy import event

    statements: collections.Counter[str] = collections.Counter()
    commits = [0]

    def on_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        word = statement.lstrip().split(None, 1)[0].upper()
        if word == "WITH":  # the rate counter's INSERT ... (a CTE first)
            word = "WITH (rate counter)"
        statements[word] += 1

    def on_commit(conn) -> None:
        commits[0] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    latencies = []
    cpu_before = time.process_time()
    try:
        for _ in range(count):
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            response = client.post(path, data=body, headers=headers)
            if profiler is not None:
                profiler.disable()
            latencies.append((time.perf_counter() - started) * 1e3)
            if response.status_code != 201 or response.get_json()["score"] != 1.0:
                raise SystemExit(f"unexpected answer: {response.status_code} "
                                 f"{response.get_data()[:300]!r}")
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)
    return {"cpu_ms": (time.process_time() - cpu_before) / count * 1e3,
            "p50_ms": statistics.median(latencies), "latencies": latencies,
            "statements": sum(statements.values()) / count,
            "by_word": {k: v / count for k, v in sorted(statements.items())},
            "commits": commits[0] / count}


def by_package(stats: pstats.Stats) -> list[tuple[str, float]]:
    """The profile's own time (tottime) summed by where the code lives, largest first."""
    totals: collections.Counter[str] = collections.Counter()
    for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        tottime = row[2]
        if "site-packages/" in filename:
            name = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/server/" in filename:
            name = "server." + filename.split("/server/", 1)[1].split("/", 1)[0]
        elif filename == "~":
            name = function.strip("<>").split(" of ")[0][:40]  # a C function
        else:
            name = "stdlib " + Path(filename).stem
        totals[name] += tottime
    return totals.most_common(14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=100, help="per answer type")
    parser.add_argument("--postgres", metavar="SERVER_URL",
                        help="a new database on this PostgreSQL server instead of SQLite, "
                             "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--kinds", default="equations,numpy")
    parser.add_argument("--profile", choices=("cumulative", "tottime"))
    parser.add_argument("--top", type=int, default=30)
    add_json_argument(parser)
    args = parser.parse_args()
    rows = Rows("bench_submit_path")
    backend = "postgresql" if args.postgres else "sqlite"
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or any(k not in PROBLEMS for k in kinds):
        parser.error(f"--kinds: a comma-separated list of {', '.join(PROBLEMS)}")
    if not 1 <= args.submissions <= 900:
        parser.error("--submissions must be between 1 and 900")

    import server
    from tests import scratch_db

    folder = Path(tempfile.mkdtemp(prefix="nabla-bench-submit-"))
    url = (scratch_db.create_postgres_database(args.postgres, "nabla_bench") if args.postgres
           else f"sqlite:///{folder / 'bench.sqlite3'}")
    try:
        assignment_id, (token,) = prepare_data(url, 1)
        answers = model_answers()
        from server import create_app, db

        app = create_app({"DATABASE_URL": url, "INSTANCE_PATH": str(folder),
                          "SECRET_KEY": secrets.token_hex(32),
                          "NABLA_SUBMIT_RATE": BENCH_SUBMIT_RATE})
        engine = db.get_engine(app)
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        print(f"app from {Path(server.__file__).parents[1]}; "
              f"{'PostgreSQL' if args.postgres else 'SQLite'}; {args.submissions} submissions "
              f"per kind, one after another; load average {os.getloadavg()[0]:.2f}")
        for kind in kinds:
            path = (f"/api/v1/assignments/{assignment_id}/problems/{PROBLEMS[kind]}"
                    "/submissions")
            body = json.dumps({"answer": answers[kind]}).encode()
            client.get(path.removesuffix("/submissions"), headers=headers)  # draws the instance
            measure(client, engine, path, headers, body, WARM_UP, None)
            profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU
            figures = measure(client, engine, path, headers, body, args.submissions, profiler)
            words = ", ".join(f"{k} {v:g}" for k, v in figures["by_word"].items())
            print(f"{kind:<9} SQL statements per submission {figures['statements']:g} "
                  f"({words}); commits {figures['commits']:g}; CPU of this process "
                  f"{figures['cpu_ms']:.2f} ms; p50 {figures['p50_ms']:.2f} ms")
            rows.add(f"submit_path.{kind}.{backend}",
                     f"API submission in the web process ({kind}), test client",
                     f"{backend}, one after another: {figures['statements']:g} SQL statements,"
                     f" {figures['commits']:g} commits, CPU {figures['cpu_ms']:.2f} ms each",
                     n=args.submissions, samples=figures["latencies"])
            if profiler is not None:
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out)
                stats.sort_stats(args.profile).print_stats(args.top)
                print(out.getvalue())
                print(f"Python function calls per submission (profiled, a figure the load "
                      f"does not move): {stats.total_calls / args.submissions:.0f}")
                print("own time by package: " + ", ".join(
                    f"{name} {seconds / args.submissions * 1e3:.2f} ms"
                    for name, seconds in by_package(stats)))
        print(f"load average {os.getloadavg()[0]:.2f}")
        engine.dispose()
        rows.write(args.json)
    finally:
        if args.postgres:
            scratch_db.drop_postgres_database(args.postgres, url)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
