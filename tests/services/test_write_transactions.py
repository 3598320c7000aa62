"""Services that write take the write lock themselves (``server.db.write_transaction``),
so a request that began as a reader (every GET, and the submission views) stays
correct when another request writes between its reads and its writes."""

import datetime as dt

import pytest

from server.db import begin_as_reader, make_sessionmaker, transaction_mode
from server.models import Instance, Submission
from server.services import instances, problems, submissions
from server.services.instances import Draw

pytestmark = pytest.mark.usefixtures("db_backend")
SECRET = b"k" * 32
HOUR = dt.timedelta(hours=1)


def _draw(seed):
    return Draw(dims={}, choices={}, values={}, reference={})


@pytest.fixture
def arranged(session, make_user, make_course, make_assignment):
    student = make_user(session)
    course = make_course(session, members={student: "student"})
    (ap,) = make_assignment(session, course, max_attempts=1).problems
    session.commit()
    return student, ap


def _reader(db_engine, student, ap):
    sess = make_sessionmaker(db_engine)()
    begin_as_reader(sess)
    user = sess.merge(student, load=True)
    assignment_problem = sess.merge(ap, load=True)
    assignment_problem.assignment  # noqa: B018  (read before the other request writes)
    return sess, user, assignment_problem


def test_readers_racing_for_a_first_visit_share_one_instance(db_backend, db_engine, session,
                                                              arranged):
    (one, user1, ap1), (two, user2, ap2) = (_reader(db_engine, *arranged) for _ in range(2))
    try:
        # Both looked and found no instance (the page's first read)...
        assert instances.get_instance(one, user1, ap1) is None
        assert instances.get_instance(two, user2, ap2) is None
        if db_backend == "sqlite":
            assert transaction_mode(two) == "DEFERRED"
        version = problems.latest_version(one, ap1.problem_id)
        first = instances.get_or_create_instance(one, user1, ap1, version, SECRET, _draw)
        one.commit()
        # ...the second draws after the first committed, in its stale snapshot.
        version = problems.latest_version(two, ap2.problem_id)
        second = instances.get_or_create_instance(two, user2, ap2, version, SECRET, _draw)
        two.commit()
    finally:
        one.close()
        two.close()
    assert first.id == second.id
    assert session.query(Instance).count() == 1


def test_readers_racing_for_the_last_attempt(db_backend, db_engine, session, arranged):
    student, ap = arranged
    version = problems.latest_version(session, ap.problem_id)
    instance = instances.get_or_create_instance(session, student, ap, version, SECRET, _draw)
    session.commit()
    racers = [_reader(db_engine, *arranged) for _ in range(2)]
    try:
        for sess, user, assignment_problem in racers:  # both see no attempt used yet
            assert submissions.used_attempts(sess, user.id, assignment_problem.id) == []
        outcomes = []
        for sess, user, assignment_problem in racers:
            stored = submissions.store_submission(
                sess, user=user, assignment_problem=assignment_problem,
                instance=sess.merge(instance, load=True), answer="dx = 1", kind="equations",
                now=ap.assignment.open_at + HOUR)
            sess.commit()
            outcomes.append((stored.status, stored.attempt))
    finally:
        for sess, _, _ in racers:
            sess.close()
    assert outcomes == [("pending", 1), ("refused", None)]
    assert session.query(Submission).count() == 2
