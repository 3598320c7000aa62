"""Recovery of pending submissions through the job mechanism, against two real `nabla
serve` processes on one database (issue 14 §3): a submission left pending longer than
the bound is graded exactly once, by the looks each app process makes at start and
periodically; the recovery jobs run in the app processes (no Redis) or on `nabla worker`
processes (RQ on the machine's Redis)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter

import pytest
from sqlalchemy import select

from server.engine.problem import draw, model_answer
from server.models import Job, Submission
from server.services import grading, recovery
from server.services.courses import enroll

from .live import LiveServer

pytestmark = pytest.mark.usefixtures("db_backend")

SECRET = b"recovery-live-secret-" + b"x" * 20
PROBLEM = "mlp-relu"


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank


@pytest.fixture
def course(session, make_user, make_course, make_assignment):
    teacher = make_user(session, "teacher@example.edu", "Teacher")
    course = make_course(session, "CS101", members={teacher: "instructor"})
    hw = make_assignment(session, course, max_attempts=2, problems=(PROBLEM,))
    session.commit()
    return hw


def left_pending(session, make_user, engine_bank, hw, n):
    """What a worker killed right after storing leaves: student n's pending answer."""
    student = make_user(session, f"s{n}@example.edu", f"Student {n}")
    enroll(session, hw.course, student, "student")
    session.commit()
    spec = engine_bank[PROBLEM]
    stored = grading.store_answer(
        session, user=student, assignment_id=hw.id, problem_id=PROBLEM,
        answer=model_answer(spec, draw(spec, n)), now=dt.datetime.now(dt.UTC),
        bank=engine_bank, secret=SECRET)
    session.commit()
    return stored.submission.id


def wait_graded(session, sids, timeout=120.0):
    deadline = time.monotonic() + timeout
    while True:
        session.expire_all()
        rows = session.scalars(select(Submission).where(Submission.id.in_(sids))).all()
        session.rollback()  # SQLite: hold no lock while the servers work
        if all(r.status != "pending" for r in rows) or time.monotonic() > deadline:
            return {r.id: (r.status, r.score, r.attempt, r.graded_at) for r in rows}
        time.sleep(0.3)


def recorded_by_jobs(session):
    """How many recovery jobs recorded each submission's verdict, and the jobs."""
    found = session.scalars(select(Job).order_by(Job.id)).all()
    session.rollback()
    counts = Counter(item.submission_id for job in found for item in recovery.recovered_of(job)
                     if item.status != recovery.SKIPPED)
    return counts, found


@pytest.mark.parametrize("runner", ["in-process", "rq"])
def test_two_servers_recover_a_pending_submission_once_at_start_and_periodically(
        runner, session, make_user, engine_bank, course, database_url, tmp_path, redis_url,
        redis_prefix, nabla_workers):
    first = left_pending(session, make_user, engine_bank, course, 1)  # before any start
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path),
           "NABLA_SECRET_KEY": "recovery-live-" + "x" * 32, "NABLA_RECOVER_AFTER_S": "2",
           "NABLA_RECOVER_EVERY_S": "1", "NABLA_JOB_STALE_S": "20",
           "NABLA_REDIS_URL": redis_url if runner == "rq" else "",
           "NABLA_REDIS_PREFIX": redis_prefix}
    if runner == "rq":
        import os

        for _ in range(2):
            nabla_workers({**os.environ, **env})
    servers = [LiveServer(env, workers=1, threads=2) for _ in range(2)]
    try:
        for server in servers:
            assert server.wait_until_up() == 200, server.output()
        graded = wait_graded(session, [first])
        assert graded[first][:3] == ("graded", 1.0, 1), graded
        # The periodic looks: a submission left pending while the servers run.
        second = left_pending(session, make_user, engine_bank, course, 2)
        graded = wait_graded(session, [first, second])
        assert [graded[s][:3] for s in (first, second)] == [("graded", 1.0, 1)] * 2, graded
        time.sleep(3)  # a few more looks by the app processes: nothing more to do
        assert wait_graded(session, [first, second]) == graded  # not graded again
        deadline = time.monotonic() + 60
        while True:  # a job that a look started meanwhile (it finds nothing) ends
            counts, found = recorded_by_jobs(session)
            if all(job.state in ("done", "failed") for job in found) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        for server in servers:
            server.stop()
    assert counts == {first: 1, second: 1}
    assert found and {job.kind for job in found} == {"recover"}
    assert all(job.state == "done" for job in found), [(j.id, j.state, j.error) for j in found]
