"""services.recovery: submissions left pending (their grader died after the answer was
stored) are graded from what is stored, once, keeping their attempt number; as a
``recover`` job of which one at a time runs, in-process and on RQ with real `nabla worker`
processes."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.db import make_sessionmaker
from server.engine.problem import draw, model_answer
from server.models import Job, Submission, SubmissionVerdict
from server.services import grading, jobs, recovery

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


@pytest.fixture
def recorded(monkeypatch):
    """Counts the verdicts actually written, per submission (a second one is a regrading)."""
    counts: Counter = Counter()
    real = grading.record_outcome

    def counting(session, submission, *args, **kwargs):
        written = real(session, submission, *args, **kwargs)
        if written:
            counts[submission.id] += 1
        return written

    monkeypatch.setattr(grading, "record_outcome", counting)
    monkeypatch.setattr(recovery, "record_outcome", counting)
    return counts


def settings(engine_bank, **extra):
    return {"stale_s": 60, "bank": engine_bank, **extra}


def run_recovery(session, db_engine, engine_bank, older_than_s=0.0, **extra):
    job = recovery.start_recovery(session, settings(engine_bank, **extra),
                                  older_than_s=older_than_s)
    session.commit()
    if job is not None:
        for thread in jobs.dispatch(db_engine, job, settings(engine_bank, **extra)):
            thread.join(120)
        session.expire_all()
    return job


def test_a_recovery_racing_the_request_that_stored_it_records_one_verdict(
        session, db_engine, engine_bank, homework, monkeypatch, recorded):
    """The request's grading outlives the bound: a recovery claims the row, grades and
    records it meanwhile; the request's verdict is then not written (and vice versa)."""
    student, hw = homework
    spec = engine_bank["mlp-relu"]
    real_grade = grading.grade_job
    other = make_sessionmaker(db_engine)()

    def slow_grade(job, **kwargs):
        if threading.current_thread() is threading.main_thread() and not recorded:
            done = recovery.recover_pending(other, bank=engine_bank, commit=other.commit,
                                            now=lambda: dt.datetime.now(dt.UTC),
                                            older_than=dt.timedelta(0))
            assert [d.status for d in done] == ["graded"]
        return real_grade(job, **kwargs)

    monkeypatch.setattr(grading, "grade_job", slow_grade)
    result = grading.submit_answer(
        session, user=student, assignment_id=hw.id, problem_id="mlp-relu",
        answer=model_answer(spec, draw(spec, 0)), now=dt.datetime.now(dt.UTC),
        bank=engine_bank, secret=SECRET, commit=session.commit)
    session.commit()
    other.close()
    sid = result.submission.id
    assert recorded == {sid: 1}  # the recovery's; the request's was refused
    assert (result.submission.status, result.submission.attempt) == ("graded", 1)
    assert result.attempts_left == 1
    gradients = session.scalars(select(SubmissionVerdict.gradient)
                                .where(SubmissionVerdict.submission_id == sid)).all()
    assert gradients and len(gradients) == len(set(gradients))  # written once


def test_two_recoveries_at_once_grade_each_submission_once(
        session, db_engine, engine_bank, make_user, homework, recorded):
    student, hw = homework
    from server.services.courses import enroll

    course = hw.course
    sids = [store_only(session, engine_bank, student, hw, "mlp-relu", "1. dz7 = doutput +")]
    for i in range(5):
        other = make_user(session, f"s{i}@example.edu", f"S {i}")
        enroll(session, course, other, "student")
        session.commit()
        spec = engine_bank["mlp-relu"]
        sids.append(store_only(session, engine_bank, other, hw, "mlp-relu",
                               model_answer(spec, draw(spec, i))))
    factory = make_sessionmaker(db_engine)
    found: list = []
    start = threading.Barrier(2)

    def recoverer():
        with factory() as own:
            start.wait()
            found.extend(recovery.recover_pending(
                own, bank=engine_bank, now=lambda: dt.datetime.now(dt.UTC),
                commit=own.commit, older_than=dt.timedelta(0)))

    threads = [threading.Thread(target=recoverer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert recorded == {sid: 1 for sid in sids}
    assert sorted(f.submission_id for f in found if f.status != "skipped") == sorted(sids)
    session.expire_all()
    rows = session.scalars(select(Submission).order_by(Submission.id)).all()
    assert [(r.status, r.attempt) for r in rows] == [("invalid", None)] + [("graded", 1)] * 5


def test_a_recovery_job_grades_a_stale_submission_once_and_reports_it(
        session, db_engine, engine_bank, homework, recorded):
    student, hw = homework
    spec = engine_bank["mlp-relu"]
    sid = store_only(session, engine_bank, student, hw, "mlp-relu",
                     model_answer(spec, draw(spec, 0)))
    assert run_recovery(session, db_engine, engine_bank, older_than_s=600) is None  # too young
    assert session.scalar(select(func.count(Job.id))) == 0  # nothing to do: no job row
    job = run_recovery(session, db_engine, engine_bank)
    job = session.get(Job, job.id)
    assert (job.kind, job.course_id, job.state) == ("recover", None, "done")
    assert (job.total, job.done, job.changed, job.errors) == (1, 1, 1, 0)
    assert recovery.recovered_of(job) == [recovery.Recovered(sid, "graded")]
    assert recorded == {sid: 1}
    assert run_recovery(session, db_engine, engine_bank) is None  # nothing left
    row = session.get(Submission, sid)
    assert (row.status, row.score, row.attempt) == ("graded", 1.0, 1)


def test_one_recovery_job_at_a_time_and_a_dead_one_is_replaced(
        session, db_engine, engine_bank, homework):
    student, hw = homework
    store_only(session, engine_bank, student, hw, "mlp-relu", "1. dz7 = doutput +")
    factory = make_sessionmaker(db_engine)
    now = dt.datetime.now(dt.UTC)
    with factory() as one, factory() as two:
        first = recovery.start_recovery(one, settings(engine_bank), older_than_s=0)
        one.commit()
        second = recovery.start_recovery(two, settings(engine_bank), older_than_s=0)
        two.commit()
    assert first is not None and second is None
    # Two servers that both passed the look insert at once: the index lets one row in.
    with factory() as three:
        sneaked = Job(kind="recover", args_json="{}", state="queued")
        three.add(sneaked)
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            three.commit()
    # Queued, and the process that queued it died before running it (in-process runner):
    # after stale_s it is failed and the next look starts a new one.
    later = now + dt.timedelta(seconds=61)
    replaced = recovery.start_recovery(session, settings(engine_bank), older_than_s=0,
                                       now=later)
    session.commit()
    assert replaced is not None and replaced.id != first.id
    old = session.get(Job, first.id)
    assert old.state == "failed" and "never started" in old.error
    # Running, and its heartbeat stopped (its worker died): failed, then replaced.
    replaced.state, replaced.heartbeat_at = "running", later
    session.commit()
    assert recovery.start_recovery(session, settings(engine_bank), older_than_s=0,
                                   now=later + dt.timedelta(seconds=30)) is None
    third = recovery.start_recovery(session, settings(engine_bank), older_than_s=0,
                                    now=later + dt.timedelta(seconds=61))
    session.commit()
    assert third is not None and session.get(Job, replaced.id).state == "failed"
    # A failed recovery cannot be restarted while another is active.
    from server.services.errors import Conflict

    with pytest.raises(Conflict, match="another recover job"):
        jobs.restart_job(session, session.get(Job, replaced.id))
    session.rollback()
    # Once it ended, it can: queued again now, so a look does not take it for lost.
    third = session.get(Job, third.id)
    third.state = "done"
    session.commit()
    restarted = jobs.restart_job(session, session.get(Job, replaced.id))
    session.commit()
    assert recovery.start_recovery(session, settings(engine_bank), older_than_s=0) is None
    session.commit()
    assert session.get(Job, restarted.id).state == "queued"


def test_nabla_submissions_recover(session, engine_bank, homework, database_url, tmp_path,
                                   monkeypatch):
    from click.testing import CliRunner

    from server.cli import main

    monkeypatch.delenv("NABLA_REDIS_URL", raising=False)
    student, hw = homework
    sid = store_only(session, engine_bank, student, hw, "mlp-relu", "1. dz7 = doutput +")
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path)}

    def recover(*args):
        return CliRunner().invoke(main, ["submissions", "recover", *args], env=env,
                                  catch_exceptions=False)

    session.rollback()
    result = recover()  # the default bound (120 s): too young
    assert result.exit_code == 0, result.output
    assert "0 pending submission(s) older than 120 s finished" in result.stdout
    result = recover("--older-than", "0")
    assert result.exit_code == 0, result.output
    assert f"submission {sid}: invalid" in result.stdout
    assert "recover job" in result.stderr  # the progress bar
    session.expire_all()
    row = session.get(Submission, sid)
    assert (row.status, row.attempt) == ("invalid", None)  # the attempt given back
    session.rollback()
    summary = json.loads(recover("--older-than", "0", "--json").stdout)
    assert (summary["state"], summary["submissions"], summary["recovered"]) == ("done", [], 0)
    kinds = session.scalars(select(Job.kind)).all()
    assert kinds == ["recover"] * 3  # the command's jobs, shown with the others


# --- on RQ, with `nabla worker` processes started here ------------------------------------

NABLA = str(Path(sys.executable).with_name("nabla"))


@pytest.fixture
def rq_env(database_url, redis_url, redis_prefix, tmp_path):
    import os

    return {**os.environ, "NABLA_DATABASE_URL": database_url, "NABLA_REDIS_URL": redis_url,
            "NABLA_REDIS_PREFIX": redis_prefix, "NABLA_INSTANCE_PATH": str(tmp_path),
            "NABLA_JOB_STALE_S": "5"}


@pytest.fixture
def workers(rq_env, nabla_workers):
    return lambda: nabla_workers(rq_env)


def test_on_rq_two_recover_commands_at_once_grade_each_submission_once(
        session, make_user, engine_bank, homework, rq_env, workers):
    """Two `nabla worker`s and two `nabla submissions recover` at once: one recovery job
    runs on a worker, the other command waits for it; each submission ends graded once."""
    student, hw = homework
    spec = engine_bank["mlp-relu-numpy"]
    sids = [store_only(session, engine_bank, student, hw, "mlp-relu-numpy",
                       model_answer(spec, draw(spec, 0)))]
    from server.services.courses import enroll

    for i in range(3):
        other = make_user(session, f"r{i}@example.edu", f"R {i}")
        enroll(session, hw.course, other, "student")
        session.commit()
        sids.append(store_only(session, engine_bank, other, hw, "mlp-relu-numpy",
                               model_answer(spec, draw(spec, i))))
    session.rollback()
    workers()
    workers()
    commands = [subprocess.Popen([NABLA, "submissions", "recover", "--older-than", "0",
                                  "--json"], env=rq_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [command.communicate(timeout=240) for command in commands]
    assert all(c.returncode == 0 for c in commands), outputs
    summaries = [json.loads(out) for out, _ in outputs]
    ended = [(item["id"], item["status"]) for s in summaries for item in s["submissions"]
             if item["status"] != "skipped"]
    assert sorted(ended) == sorted((sid, "graded") for sid in sids)  # each once, in all
    session.expire_all()
    rows = session.scalars(select(Submission).order_by(Submission.id)).all()
    assert [(r.status, r.score, r.attempt) for r in rows] == [("graded", 1.0, 1)] * 4
    graded_at = {r.id: r.graded_at for r in rows}
    jobs_run = session.scalars(select(Job).order_by(Job.id)).all()
    assert [j.state for j in jobs_run] == ["done", "done"]
    assert sum(j.changed for j in jobs_run) == 4
    session.rollback()  # SQLite: hold no lock while the command runs
    # A later recovery on the workers finds nothing: the verdicts stay as they are.
    again = subprocess.run([NABLA, "submissions", "recover", "--older-than", "0", "--json"],
                           env=rq_env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["recovered"] == 0, again.stderr
    session.expire_all()
    assert {r.id: r.graded_at for r in session.scalars(select(Submission))} == graded_at
