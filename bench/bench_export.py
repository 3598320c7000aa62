"""Grade exports of a large class: 2,000 students x 30 problems (3 assignments of 10).

    .venv/bin/python bench/bench_export.py [--students 2000] [--rounds 5] [--postgres URL]
                                       [--json FILE]

Fills a fresh database (SQLite in a temporary folder, or a new PostgreSQL
database, dropped at the end) with the students, their instances, two graded
submissions per student and problem (one late) and an override in 50, then
times, per round, the whole export as the gradebook page, the API and
``nabla grades export`` produce it: ``course_gradebook`` (the queries) and
every byte of ``export_csv``, for the long and the Canvas format. Beside it,
as the baseline, ``csv.writer`` writing the same number of rows of the same
width from a list already in memory. Prints the median and the slowest round
(p99 of a handful of rounds is their maximum) and the ratio to the baseline.
Figures only.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    NOW,
    Goal,
    Rows,
    add_json_argument,
    backend_name,
    insert_course,
    insert_instances,
    insert_students,
    scratch_database,
)

ASSIGNMENTS, PROBLEMS_EACH = 3, 10


def fill(url: str, students: int) -> int:
    """The course's id, after inserting everything with bulk statements."""
    from sqlalchemy import insert

    from server import db
    from server.models import Assignment, AssignmentProblem, ScoreOverride, Submission

    engine = db.make_engine(url)
    now = NOW
    with engine.begin() as c:
        course_id, versions = insert_course(c, "BIG", [f"p{p}" for p in range(PROBLEMS_EACH)])
        version_ids = list(versions.values())
        user_ids, _ = insert_students(c, course_id, students, enrollment=lambda u: {
            "section": f"S{u % 4}", "sis_user_id": f"SIS{u}", "canvas_user_id": str(1000 + u)})
        aps = []
        for a in range(ASSIGNMENTS):
            assignment_id = c.execute(insert(Assignment).values(
                course_id=course_id, title=f"Homework {a}", open_at=now,
                due_at=now + dt.timedelta(days=a + 1), late_until=now + dt.timedelta(days=9),
                late_credit=50, score_policy="best" if a % 2 == 0 else "last",
                created_at=now, canvas_id=str(500 + a)).returning(Assignment.id)).scalar_one()
            for p in range(PROBLEMS_EACH):
                aps.append((c.execute(insert(AssignmentProblem).values(
                    assignment_id=assignment_id, problem_id=f"p{p}", weight=1 + p % 3,
                    position=p).returning(AssignmentProblem.id)).scalar_one(),
                    version_ids[p]))
        instances = {}
        for ap_id, version_id in aps:
            for u, i in insert_instances(c, user_ids, ap_id, version_id).items():
                instances[(u, ap_id)] = i
        for ap_id, _ in aps:
            rows = []
            for u in user_ids:
                for attempt in (1, 2):
                    rows.append({
                        "user_id": u, "assignment_problem_id": ap_id,
                        "instance_id": instances[(u, ap_id)], "answer": "dx = 1",
                        "kind": "equations", "status": "graded", "result_json": "{}",
                        "score": ((u * 7 + ap_id * 3 + attempt) % 11) / 10 * (
                            0.5 if attempt == 2 else 1),
                        "attempt": attempt, "late": attempt == 2,
                        "created_at": now + dt.timedelta(minutes=attempt),
                        "graded_at": now + dt.timedelta(minutes=attempt)})
            c.execute(insert(Submission), rows)
        c.execute(insert(ScoreOverride), [
            {"user_id": u, "assignment_problem_id": aps[u % len(aps)][0], "score": 1.0,
             "reason": "bench", "created_at": now} for u in user_ids[::50]])
    engine.dispose()
    return course_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a database is made there)")
    add_json_argument(parser)
    args = parser.parse_args()
    from server import db
    from server.models import Course
    from server.services import exports, gradebook

    with scratch_database(args.postgres) as (url, _folder):
        db.upgrade(url)
        start = time.perf_counter()
        course_id = fill(url, args.students)
        print(f"filled {args.students} students x {ASSIGNMENTS * PROBLEMS_EACH} problems "
              f"(2 submissions each) in {time.perf_counter() - start:.1f} s "
              f"({backend_name(args.postgres)})")
        engine = db.make_engine(url)
        factory = db.make_sessionmaker(engine)

        def export(fmt: str) -> tuple[float, float, int]:
            with factory() as session:
                t0 = time.perf_counter()
                course = session.get(Course, course_id)
                book = gradebook.course_gradebook(session, course)
                t1 = time.perf_counter()
                size = sum(len(piece) for piece in exports.export_csv(book, fmt))
                t2 = time.perf_counter()
            return (t1 - t0) * 1e3, (t2 - t0) * 1e3, size

        width = len(exports.LONG_HEADER)
        cells = args.students * ASSIGNMENTS * PROBLEMS_EACH
        prepared = [[f"cell{i % 97}"] * width for i in range(cells)]

        def baseline() -> float:
            t0 = time.perf_counter()
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerows(prepared)
            return (time.perf_counter() - t0) * 1e3

        export("long")  # warm the caches of the database and the statement compiler
        results: dict[str, list[tuple[float, float, int]]] = {"long": [], "canvas": []}
        base: list[float] = []
        for _ in range(args.rounds):
            for fmt in results:
                results[fmt].append(export(fmt))
            base.append(baseline())
        b = statistics.median(base)
        print(f"baseline: csv.writer, {cells} rows x {width} cells from memory: median "
              f"{b:.0f} ms, slowest {max(base):.0f} ms")
        rows = Rows("bench_export")
        for fmt, runs in results.items():
            total = statistics.median(r[1] for r in runs)
            query = statistics.median(r[0] for r in runs)
            print(f"{fmt:6}: {runs[0][2] / 1e6:.1f} MB; whole export median {total:.0f} ms "
                  f"(queries {query:.0f} ms), slowest {max(r[1] for r in runs):.0f} ms; "
                  f"{total / b:.2f}x the baseline")
            rows.add(f"export.{fmt}.{backend_name(args.postgres).lower()}",
                     f"grade export, {fmt} CSV", f"{args.students} students x "
                     f"{ASSIGNMENTS * PROBLEMS_EACH} problems, {backend_name(args.postgres)}, "
                     f"{runs[0][2] / 1e6:.1f} MB; p99: the slowest round", n=len(runs),
                     p50=total, p99=max(r[1] for r in runs),
                     baseline=f"csv.writer, {cells} rows from memory", baseline_samples=base,
                     goal=Goal(p50=1000))
        rows.write(args.json)
        engine.dispose()


if __name__ == "__main__":
    main()
