import threading

import pytest

from server.models import Instance
from server.services import instances, problems
from server.services.instances import Draw, derive_seed

SECRET = b"k" * 32


def test_derive_seed_is_deterministic_and_in_range():
    seed = derive_seed(SECRET, 1, 2, "mlp-relu", 0)
    assert seed == derive_seed(SECRET, 1, 2, "mlp-relu", 0)
    assert 0 <= seed < 2**31
    seeds = {derive_seed(SECRET, 1, user, "mlp-relu", 0) for user in range(2000)}
    assert len(seeds) > 1990  # collisions are possible but rare in 2**31
    assert all(0 <= s < 2**31 for s in seeds)


def test_derive_seed_depends_on_every_input():
    base = derive_seed(SECRET, 1, 2, "p", 0)
    assert derive_seed(b"other secret", 1, 2, "p", 0) != base
    assert derive_seed(SECRET, 9, 2, "p", 0) != base
    assert derive_seed(SECRET, 1, 9, "p", 0) != base
    assert derive_seed(SECRET, 1, 2, "q", 0) != base
    assert derive_seed(SECRET, 1, 2, "p", 1) != base
    # unambiguous encoding: the parts cannot slide into each other
    assert derive_seed(SECRET, "1,2", 3, "p", 0) != derive_seed(SECRET, 1, "2,3", "p", 0)


def test_derive_seed_needs_a_secret():
    with pytest.raises(ValueError, match="secret"):
        derive_seed(b"", 1, 2, "p", 0)


def _draw(seed):
    return Draw(dims={"N": 3 + seed % 3}, choices={"act": "relu"}, values={"x": [[1.5]]},
                reference={"dx": [[0.25]]})


@pytest.mark.usefixtures("db_backend")
def test_get_or_create_instance_draws_once(session, make_user, make_course, make_assignment,
                                           fake_bank):
    student = make_user(session)
    course = make_course(session, members={student: "student"})
    (ap,) = make_assignment(session, course).problems
    version = problems.latest_version(session, ap.problem_id)
    calls = []

    def draw(seed):
        calls.append(seed)
        return _draw(seed)

    first = instances.get_or_create_instance(session, student, ap, version, SECRET, draw)
    again = instances.get_or_create_instance(session, student, ap, version, SECRET, draw)
    assert first.id == again.id and len(calls) == 1
    assert first.seed == derive_seed(SECRET, course.id, student.id, "mlp-relu", 0)
    assert first.dims == {"N": 3 + first.seed % 3}
    assert first.values == {"x": [[1.5]]} and first.reference == {"dx": [[0.25]]}
    assert first.problem_version_id == version.id


def test_concurrent_first_visits_share_one_instance(db_backend, db_engine, make_user,
                                                    make_course, make_assignment, session):
    # On PostgreSQL both transactions find no instance and both insert: the
    # loser hits the UNIQUE constraint and must return the winner's row. On
    # SQLite, BEGIN IMMEDIATE serializes the two transactions, so the second
    # waits and then finds the first's row; a barrier inside the transaction
    # would deadlock there, so it is only used on PostgreSQL.
    student = make_user(session)
    course = make_course(session, members={student: "student"})
    (ap,) = make_assignment(session, course).problems
    session.commit()
    from server.db import make_sessionmaker

    factory = make_sessionmaker(db_engine)
    barrier = threading.Barrier(2)
    results, errors, draws = [], [], []

    def visit():
        with factory() as sess:
            try:
                user = sess.merge(student, load=True)
                assignment_problem = sess.merge(ap, load=True)
                version = problems.latest_version(sess, "mlp-relu")

                def slow_draw(seed):
                    draws.append(seed)
                    if db_backend == "postgresql":
                        barrier.wait(timeout=10)  # both have checked "no instance yet"
                    return _draw(seed)

                inst = instances.get_or_create_instance(
                    sess, user, assignment_problem, version, SECRET, slow_draw)
                sess.commit()
                results.append(inst.id)
            except Exception as exc:  # surfaced below
                errors.append(exc)

    threads = [threading.Thread(target=visit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(results) == 2 and results[0] == results[1]
    # PostgreSQL: both drew (the race really happened); SQLite: only the first.
    assert len(draws) == (2 if db_backend == "postgresql" else 1)
    session.expire_all()
    assert session.query(Instance).count() == 1
