"""services.recovery: submissions left pending (their grader died after the answer was
stored) are graded from what is stored, once, keeping their attempt number."""

from __future__ import annotations

import datetime as dt

import pytest

from server.engine.problem import draw, model_answer
from server.models import Submission
from server.services import grading, recovery

pytestmark = pytest.mark.usefixtures("db_backend")

SECRET = b"recovery-test-secret-" + b"x" * 20
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank


@pytest.fixture
def homework(session, make_user, make_course, make_assignment):
    student = make_user(session, "student1@example.edu", "Student One")
    course = make_course(session, members={student: "student"})
    hw = make_assignment(session, course, max_attempts=2, problems=("mlp-relu", "mlp-relu-numpy"))
    session.commit()
    return student, hw


def store_only(session, bank, student, hw, problem_id, answer):
    """What a worker killed right after storing leaves behind: a pending row."""
    stored = grading.store_answer(
        session, user=student, assignment_id=hw.id, problem_id=problem_id, answer=answer,
        now=dt.datetime.now(dt.UTC), bank=bank, secret=SECRET)
    session.commit()
    assert stored.submission.status == "pending" and stored.submission.attempt == 1
    return stored.submission.id


@pytest.mark.parametrize("problem_id", ["mlp-relu", "mlp-relu-numpy"])
def test_a_stale_pending_submission_is_graded_once_with_its_attempt(
        session, engine_bank, homework, problem_id):
    student, hw = homework
    spec = engine_bank[problem_id]
    sid = store_only(session, engine_bank, student, hw, problem_id,
                     model_answer(spec, draw(spec, 0)))

    def recover(after_s):
        return recovery.recover_pending(
            session, bank=engine_bank, now=lambda: dt.datetime.now(dt.UTC),
            commit=session.commit, older_than=dt.timedelta(seconds=after_s))

    assert recover(600) == []  # not older than the bound: its grader may still run
    assert recover(0) == [recovery.Recovered(sid, "graded")]
    session.expire_all()
    row = session.get(Submission, sid)
    assert (row.status, row.score, row.attempt) == ("graded", 1.0, 1)
    assert recover(0) == []  # finished: nothing left
    assert session.query(Submission).count() == 1


def test_a_submission_claimed_by_another_recoverer_is_left_to_it(session, engine_bank,
                                                                 homework):
    student, hw = homework
    sid = store_only(session, engine_bank, student, hw, "mlp-relu", "1. dz7 = doutput")
    row = session.get(Submission, sid)
    row.graded_at = dt.datetime.now(dt.UTC)  # another recoverer's fresh claim
    session.commit()
    found = recovery.stale_pending(session, now=dt.datetime.now(dt.UTC) + MINUTE,
                                   older_than=dt.timedelta(minutes=5))
    assert found == []
    later = dt.datetime.now(dt.UTC) + 10 * MINUTE  # that recoverer died: claimed again
    done = recovery.recover_pending(session, bank=engine_bank, now=lambda: later,
                                    commit=session.commit, older_than=dt.timedelta(minutes=5))
    assert done == [recovery.Recovered(sid, "graded")]
    session.expire_all()
    assert session.get(Submission, sid).status == "graded"


def test_nabla_submissions_recover(session, engine_bank, homework, database_url, tmp_path):
    from click.testing import CliRunner

    from server.cli import main

    student, hw = homework
    sid = store_only(session, engine_bank, student, hw, "mlp-relu", "1. dz7 = doutput +")
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path)}

    def recover(*args):
        return CliRunner().invoke(main, ["submissions", "recover", *args], env=env,
                                  catch_exceptions=False)

    result = recover()  # the default bound (120 s): too young
    assert result.exit_code == 0 and "0 pending submission(s)" in result.output
    result = recover("--older-than", "0")
    assert result.exit_code == 0, result.output
    assert f"submission {sid}: invalid" in result.output
    session.expire_all()
    row = session.get(Submission, sid)
    assert (row.status, row.attempt) == ("invalid", None)  # the attempt given back
