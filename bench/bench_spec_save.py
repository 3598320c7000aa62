"""Saving every bank spec through the staff API of the real server (issue 22).

    .venv/bin/python bench/bench_spec_save.py [--rounds 2] [--workers 1] [--threads 2]
                                              [--only ID[,ID]] [--json FILE]

Creates a fresh SQLite database in a temporary folder with a course, a TA and the
TA's API token (nothing else: no bank sync), starts ``nabla serve`` from the tree
under test on a free loopback port and, per round, ``PUT``s every spec of
``problems/`` as a course problem: the first save of a text (the whole check:
parse, 20 seeds drawn and verified entry by entry, the model solution graded on
each) and the same text again (unchanged: nothing to create). Each round uses new
ids, so every first save is checked. Prints, per spec, the median first-save and
unchanged-save times over the rounds, then the totals.

Only calls that exist on both sides of issue 22 are used (the migrations, the
account and course services, the API), so the same script measures a tree before
and after: copy it into the other tree's bench/ and run it there (``nabla serve``
must start in the tree under test; bench_http.start_server does).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_http import HOST, free_port, start_server, stop_server  # noqa: E402
from common import Rows, add_json_argument  # noqa: E402

COURSE = "SAVE101"


def prepare(url: str) -> str:
    """A course and a TA; the TA's token."""
    from server import db
    from server.services import accounts, courses, tokens

    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        session = db.make_sessionmaker(engine)()
        with session.begin():
            course = courses.create_course(session, COURSE, "Saving specs")
            ta = accounts.create_user(session, "ta@example.edu", "A TA", None)
            courses.enroll(session, course, ta, "ta")
            token = tokens.create_token(session, ta, "bench_spec_save")[1]
        session.close()
    finally:
        engine.dispose()
    return token


def put(port: int, token: str, spec_id: str, text: str) -> tuple[int, float, dict]:
    connection = http.client.HTTPConnection(HOST, port, timeout=300)
    body = json.dumps({"spec": text})
    start = time.perf_counter()
    try:
        connection.request("PUT", f"/api/v1/courses/{COURSE}/problems/{spec_id}", body=body,
                           headers={"Authorization": f"Bearer {token}",
                                    "Content-Type": "application/json"})
        response = connection.getresponse()
        data = json.loads(response.read() or b"{}")
    finally:
        connection.close()
    return response.status, (time.perf_counter() - start) * 1e3, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", help="spec ids, comma-separated (default: the whole bank)")
    add_json_argument(parser)
    args = parser.parse_args()
    files = sorted((ROOT / "problems").glob("*.toml"))
    if args.only:
        files = [f for f in files if f.stem in set(args.only.split(","))]
    folder = Path(tempfile.mkdtemp(prefix="bench-spec-save-"))
    url = f"sqlite:///{folder}/nabla.sqlite3"
    token = prepare(url)
    env = {**os.environ, "NABLA_DATABASE_URL": url, "NABLA_INSTANCE_PATH": str(folder),
           "NABLA_SECRET_KEY": "s" * 40}
    port = free_port()
    server = start_server(env, port, args.workers, args.threads, folder / "serve.log")
    first: dict[str, list[float]] = {f.stem: [] for f in files}
    again: dict[str, list[float]] = {f.stem: [] for f in files}
    load = os.getloadavg()[0]
    try:
        put(port, token, "warm-up", (ROOT / "problems" / "rule-1a-scalar-mult.toml").read_text(
            ).replace('id = "rule-1a-scalar-mult"', 'id = "warm-up"'))
        for n in range(args.rounds):
            for path in files:
                spec_id = f"{path.stem[:56]}-r{n}"
                text = path.read_text().replace(f'id = "{path.stem}"', f'id = "{spec_id}"', 1)
                status, took, body = put(port, token, spec_id, text)
                assert status == 201, (path.stem, status, body)
                first[path.stem].append(took)
                status, took, body = put(port, token, spec_id, text)
                assert status == 200, (path.stem, status, body)
                again[path.stem].append(took)
    finally:
        stop_server(server)
    print(f"bench_spec_save: {platform.node()} {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, SQLite, {args.workers} workers x {args.threads} threads, "
          f"{args.rounds} rounds, load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"  {'spec':30} {'first save':>12} {'unchanged':>10}  (ms, median of the rounds)")
    for path in files:
        print(f"  {path.stem:30} {statistics.median(first[path.stem]):12.1f} "
              f"{statistics.median(again[path.stem]):10.1f}")
    total_first = sum(statistics.median(v) for v in first.values())
    total_again = sum(statistics.median(v) for v in again.values())
    print(f"  {'all ' + str(len(files)) + ' specs':30} {total_first:12.1f} {total_again:10.1f}")
    rows = Rows("bench_spec_save")
    every_first = [t for v in first.values() for t in v]
    every_again = [t for v in again.values() for t in v]
    setting = f"{len(files)} bank specs, SQLite, {args.workers} workers x {args.threads} threads"
    rows.add("spec.save.first", "PUT a new spec text (checked in full)", setting,
             n=len(every_first), samples=every_first)
    rows.add("spec.save.unchanged", "PUT the same text again", setting, n=len(every_again),
             samples=every_again, baseline="first save", baseline_key="spec.save.first")
    rows.write(args.json)


if __name__ == "__main__":
    main()
