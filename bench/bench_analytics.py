"""The analytics problem page for a large class: 1,000 students x 10 graded submissions.

    .venv/bin/python bench/bench_analytics.py [--students 1000] [--rounds 30] [--postgres URL]
                                          [--json FILE]

Fills a fresh database (SQLite in a temporary folder, or a new PostgreSQL
database, dropped at the end) with one course, one assignment of two problems:
``p0`` with ten graded submissions per student (seven asked gradients each, so
70,000 verdict rows, first mistakes over 14 model steps and 40 distinct wrong
lines, instances over 6 structural choices), and ``empty`` with none. Then
times, per round, in-process through Flask's test client as a logged-in TA:

- the problem page of ``p0`` (every query, six pygal charts, the template);
- the JSON API for ``p0`` (the same queries, no charts);
- ``services.analytics.problem_analytics`` alone (the queries);
- the baseline, side by side: the problem page of ``empty`` (the same request,
  template and charts with nothing to count).

The tables are ANALYZEd after the load, as PostgreSQL's autovacuum does. Prints the
median, p99 (the slowest of a few dozen rounds) and the ratio of
medians to the baseline. Figures only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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

GRADIENTS = ["dx", "dW1", "db1", "dW2", "db2", "dW3", "db3"]
VERDICTS = ["transposed", "wrong_shape", "sign", "missing_accumulation", "wrong_mask",
            "incorrect"]
CHOICES = [{"act1": a, "act2": b, "depth": "two"}
           for a in ("relu", "sigmoid", "tanh") for b in ("relu", "tanh")]
SUBMISSIONS_EACH = 10


def fill(url: str, students: int) -> tuple[int, int]:
    """(course id, TA's user id), after inserting everything with bulk statements."""
    from sqlalchemy import insert

    from server import db
    from server.models import Assignment, AssignmentProblem, Submission, SubmissionVerdict
    from server.models.base import dumps

    engine = db.make_engine(url)
    now = NOW
    with engine.begin() as c:
        course_id, versions = insert_course(c, "BIG", ("p0", "empty"))
        user_ids, staff = insert_students(c, course_id, students, staff=("ta",))
        ta_id = staff["ta"]
        assignment_id = c.execute(insert(Assignment).values(
            course_id=course_id, title="Homework", open_at=now - dt.timedelta(days=7),
            due_at=now, late_credit=50, score_policy="best", created_at=now)
            .returning(Assignment.id)).scalar_one()
        aps = {pid: c.execute(insert(AssignmentProblem).values(
            assignment_id=assignment_id, problem_id=pid, weight=1, position=k)
            .returning(AssignmentProblem.id)).scalar_one()
            for k, pid in enumerate(("p0", "empty"))}
        ap = aps["p0"]
        instances = insert_instances(c, user_ids, ap, versions["p0"],
                                     [dumps(choice) for choice in CHOICES])
        rows = []
        for u in user_ids:
            for attempt in range(1, SUBMISSIONS_EACH + 1):
                right = min(len(GRADIENTS), (u + attempt) % 9)
                rows.append({
                    "user_id": u, "assignment_problem_id": ap, "instance_id": instances[u],
                    "answer": "dx = 1", "kind": "equations", "status": "graded",
                    "result_json": json.dumps({"valid": True}),
                    "score": round(right / len(GRADIENTS), 6), "attempt": attempt,
                    "late": attempt == SUBMISSIONS_EACH,
                    "created_at": now - dt.timedelta(hours=24 * 6 - 13 * attempt - u % 13),
                    "graded_at": now})
        c.execute(insert(Submission), rows)
        verdicts = []
        for sid, u, score in c.execute(Submission.__table__.select().with_only_columns(
                Submission.id, Submission.user_id, Submission.score)):
            right = round(score * len(GRADIENTS))
            wrong = right < len(GRADIENTS)
            step = 1 + (sid * 7) % 14
            for k, g in enumerate(GRADIENTS):
                verdicts.append({
                    "submission_id": sid, "gradient": g, "position": k,
                    "verdict": "correct" if k < right else VERDICTS[(sid + k) % len(VERDICTS)],
                    "assignment_problem_id": ap, "user_id": u,
                    "first_line": step if wrong else None, "first_step": step if wrong else None,
                    "first_target": f"dz{step}" if wrong else None,
                    "first_text": f"dz{step}=dz{step + 1}@W{sid % 3}.T" if wrong else None})
        c.execute(insert(SubmissionVerdict), verdicts)
    # Statistics, as PostgreSQL's autovacuum gathers them after a load this size
    # (without them its planner guesses one row per table and loops 8,000 x 1,000).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("ANALYZE")
    engine.dispose()
    return course_id, ta_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a database is made there)")
    add_json_argument(parser)
    args = parser.parse_args()
    from server import create_app, db
    from server.models import Course, User
    from server.services import analytics, tokens

    with scratch_database(args.postgres) as (url, folder):
        db.upgrade(url)
        start = time.perf_counter()
        course_id, ta_id = fill(url, args.students)
        print(f"filled {args.students} students x {SUBMISSIONS_EACH} graded submissions "
              f"({args.students * SUBMISSIONS_EACH * len(GRADIENTS)} verdict rows) in "
              f"{time.perf_counter() - start:.1f} s "
              f"({backend_name(args.postgres)})")
        app = create_app({"DATABASE_URL": url, "SECRET_KEY": "bench-" + "x" * 32,
                          "INSTANCE_PATH": str(folder), "NABLA_PROBLEM_BANK": {}})
        client = app.test_client()
        factory = db.make_sessionmaker(db.get_engine(app))
        with factory() as session:
            login_id = session.get(User, ta_id).get_id()
            _, token = tokens.create_token(session, session.get(User, ta_id), "bench")
            session.commit()
        with client.session_transaction() as flask_session:
            flask_session["_user_id"] = login_id
            flask_session["_fresh"] = True

        def timed(fetch) -> float:  # noqa: ANN001
            t0 = time.perf_counter()
            fetch()
            return (time.perf_counter() - t0) * 1e3

        def page(pid: str):  # noqa: ANN202
            def fetch() -> None:
                response = client.get(f"/staff/BIG/analytics/problems/{pid}")
                assert response.status_code == 200, response.status_code
            return fetch

        def api() -> None:
            response = client.get("/api/v1/courses/BIG/analytics/problems/p0",
                                  headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.status_code

        def queries() -> None:
            with factory() as session:
                analytics.problem_analytics(session, session.get(Course, course_id), "p0")

        cases = {"problem page (p0)": page("p0"), "queries only": queries,
                 "JSON API (p0)": api, "baseline: page of an empty problem": page("empty")}
        for fetch in cases.values():
            fetch()  # warm caches
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, fetch in cases.items():
                times[name].append(timed(fetch))
        base = statistics.median(times["baseline: page of an empty problem"])
        rows = Rows("bench_analytics")
        for name, runs in times.items():
            median = statistics.median(runs)
            print(f"{name:36}: median {median:6.1f} ms, p99 {max(runs):6.1f} ms, "
                  f"{median / base:.2f}x the baseline")
            if not name.startswith("baseline"):
                rows.add(f"analytics.{name.split(' (')[0].replace(' ', '-')}."
                         f"{backend_name(args.postgres).lower()}",
                         f"analytics: {name}", f"{args.students} students x "
                         f"{SUBMISSIONS_EACH} submissions, {backend_name(args.postgres)}; "
                         "p99: the slowest round", n=len(runs), p50=median, p99=max(runs),
                         baseline="the page of an empty problem, same rounds",
                         baseline_samples=times["baseline: page of an empty problem"],
                         goal=Goal(p50=200) if name.startswith("problem page") else None)
        rows.write(args.json)


if __name__ == "__main__":
    main()
