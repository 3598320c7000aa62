import datetime as dt
import threading

import pytest

from server.models import Submission
from server.services import problems, submissions
from server.services.instances import Draw, get_or_create_instance

pytestmark = pytest.mark.usefixtures("db_backend")
HOUR = dt.timedelta(hours=1)


def _draw(seed):
    return Draw(dims={}, choices={}, values={}, reference={})


@pytest.fixture
def setup(session, make_user, make_course, make_assignment):
    student = make_user(session)
    course = make_course(session, members={student: "student"})
    assignment = make_assignment(session, course, max_attempts=2, late_offset_h=48,
                                 late_credit=50)
    (ap,) = assignment.problems
    version = problems.latest_version(session, ap.problem_id)
    instance = get_or_create_instance(session, student, ap, version, b"k" * 32, _draw)
    return student, ap, instance


def _store(session, setup, now, **kwargs):
    student, ap, instance = setup
    return submissions.store_submission(
        session, user=student, assignment_problem=ap, instance=instance, answer="dx = 1",
        kind="equations", now=now, client_ip="127.0.0.1", **kwargs)


def test_attempts_are_numbered_and_limited(session, setup):
    now = setup[1].assignment.open_at + HOUR
    first, second, third = (_store(session, setup, now) for _ in range(3))
    assert [(s.status, s.attempt) for s in (first, second)] == [("pending", 1), ("pending", 2)]
    assert (third.status, third.attempt) == ("refused", None)
    assert "no attempts left" in third.result["refused"]
    assert (first.answer, first.client_ip, first.late) == ("dx = 1", "127.0.0.1", False)


def test_invalid_answers_cost_no_attempt_and_released_attempts_are_reused(session, setup):
    now = setup[1].assignment.open_at + HOUR
    invalid = _store(session, setup, now, costs_attempt=False)
    assert (invalid.status, invalid.attempt) == ("invalid", None)
    first = _store(session, setup, now)
    second = _store(session, setup, now)
    first.status, first.attempt = "invalid", None  # as record_outcome gives it back
    session.flush()
    third = _store(session, setup, now)
    assert (third.status, third.attempt) == ("pending", 1)
    assert second.attempt == 2
    assert _store(session, setup, now).status == "refused"


def test_deadlines(session, setup):
    assignment = setup[1].assignment
    early = _store(session, setup, assignment.open_at - HOUR)
    assert early.status == "refused" and "opens at" in early.result["refused"]
    late = _store(session, setup, assignment.due_at + HOUR)
    assert (late.status, late.late, late.attempt) == ("pending", True, 1)
    closed = _store(session, setup, assignment.late_until + HOUR)
    assert closed.status == "refused" and "closed" in closed.result["refused"]
    assert closed.answer == "dx = 1"  # the refused text is kept for staff


def test_concurrent_submissions_never_exceed_the_limit(db_backend, db_engine, session, setup,
                                                      monkeypatch):
    student, ap, instance = setup
    looks = []
    real_used_attempts = submissions.used_attempts
    monkeypatch.setattr(submissions, "used_attempts",
                        lambda *a: looks.append(1) or real_used_attempts(*a))
    session.commit()
    now = ap.assignment.open_at + HOUR
    from server.db import make_sessionmaker

    factory = make_sessionmaker(db_engine)
    racers = 4
    barrier = threading.Barrier(racers)
    outcomes, errors = [], []

    def submit():
        try:
            with factory() as sess, sess.begin():
                user = sess.merge(student, load=True)
                problem = sess.merge(ap, load=True)
                inst = sess.merge(instance, load=True)
                if db_backend == "postgresql":
                    # All four are inside their transactions before any inserts.
                    # (SQLite's BEGIN IMMEDIATE serializes them instead.)
                    barrier.wait(timeout=10)
                stored = submissions.store_submission(
                    sess, user=user, assignment_problem=problem, instance=inst,
                    answer="dx = 1", kind="equations", now=now)
                outcomes.append((stored.status, stored.attempt))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(outcomes, key=str) == sorted(
        [("pending", 1), ("pending", 2), ("refused", None), ("refused", None)], key=str)
    session.expire_all()
    stored = session.query(Submission).filter(Submission.attempt.is_not(None)).all()
    assert sorted(s.attempt for s in stored) == [1, 2]
    assert session.query(Submission).count() == racers  # the refused ones are stored too
    if db_backend == "postgresql":
        assert len(looks) > racers  # collisions happened and were retried


def test_factories_feed_the_dashboard_status(session, make_user, make_course, make_assignment,
                                             make_submission):
    from server.models import utcnow
    from server.services.assignments import student_assignments

    student = make_user(session, email="s2@example.edu")
    course = make_course(session, "CS9", members={student: "student"})
    (ap,) = make_assignment(session, course, max_attempts=3).problems
    make_submission(session, student, ap, score=0.5)
    make_submission(session, student, ap, score=0.75)
    (status,) = student_assignments(session, student, utcnow())
    assert status.problems[0].attempts_used == 2 and status.score == 0.75


def test_a_new_row_gets_the_column_defaults_of_what_is_left_unset(session, setup):
    """The prebuilt INSERT names every column: an attribute left unset still gets its
    column's default (``late`` False, ``created_at`` now, ``status`` pending), not NULL."""
    student, ap, instance = setup
    row = Submission(user_id=student.id, assignment_problem_id=ap.id, instance_id=instance.id,
                     answer="dx = 1", kind="equations", attempt=1)
    assert submissions._insert_unless_taken(session, row)
    session.expire(row)
    assert (row.status, row.late) == ("pending", False)
    assert row.created_at is not None
