"""services.regrade and services.jobs: regrades with audit, in a background thread."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.db import make_sessionmaker
from server.engine.spec import parse_spec
from server.models import Instance, Job, Regrade, Submission
from server.services import grading, jobs, regrade

SECRET = b"regrade-test-secret-" + b"x" * 20
PROBLEM = "rule-1b-matmul"
RIGHT = "dW = x @ dz\ndx = dz @ W\n"
HALF = "dW = dz @ x\ndx = dz @ W\n"  # dx right, dW wrong
WRONG = "dW = dz @ x\ndx = W @ dz\n"
SETTINGS = {"threads": 2}


@pytest.fixture
def fake_bank(engine_bank):
    return engine_bank


def fixed_bank(engine_bank):
    """The bank after a spec fix: dW now weighs three times dx."""
    spec = engine_bank[PROBLEM]
    text = spec.source + '\n[weights]\nx = 1\nW = 3\n'
    return {**engine_bank, PROBLEM: parse_spec(text, f"<{PROBLEM} fixed>")}


@pytest.fixture
def course3(session, make_user, make_course, make_assignment, engine_bank):
    teacher = make_user(session, "teacher@example.edu", "Teacher")
    students = [make_user(session, f"s{i}@example.edu", f"Student {i}") for i in range(3)]
    course = make_course(session, members={teacher: "instructor",
                                           **{s: "student" for s in students}})
    assignment = make_assignment(session, course, problems=(PROBLEM,))
    session.commit()
    subs = {}
    for student, answer in zip(students, (RIGHT, HALF, WRONG)):
        result = grading.submit_answer(
            session, user=student, assignment_id=assignment.id, problem_id=PROBLEM,
            answer=answer, now=grading._utcnow(), bank=engine_bank, secret=SECRET,
            commit=session.commit)
        subs[answer] = result.submission
    session.commit()
    assert [subs[a].score for a in (RIGHT, HALF, WRONG)] == [1.0, 0.5, 0.0]
    return dict(course=course, teacher=teacher, assignment=assignment, subs=subs)


def _run(session, db_engine, course3, bank, **kwargs):
    job = regrade.start_regrade(session, course3["course"], actor=course3["teacher"],
                                reason="spec fix", assignment_id=course3["assignment"].id,
                                **kwargs)
    session.commit()
    for thread in jobs.dispatch(db_engine, job, {**SETTINGS, "bank": bank}):
        thread.join(120)
    session.expire_all()
    return session.get(Job, job.id)


def _audit_rows(session):
    return session.scalar(select(func.count(Regrade.id)))


def test_an_unchanged_engine_changes_nothing_and_writes_no_audit_row(
        session, db_engine, course3, engine_bank):
    before = {s.id: (s.status, s.score, s.result_json, s.graded_at)
              for s in session.scalars(select(Submission))}
    job = _run(session, db_engine, course3, engine_bank)
    assert (job.state, job.total, job.done, job.changed, job.errors) == ("done", 3, 3, 0, 0)
    assert _audit_rows(session) == 0
    after = {s.id: (s.status, s.score, s.result_json, s.graded_at)
             for s in session.scalars(select(Submission))}
    assert after == before


def test_a_spec_fix_changes_exactly_the_affected_submissions(
        session, db_engine, course3, engine_bank):
    bank = fixed_bank(engine_bank)
    ids = regrade.select_submissions(session, course3["course"],
                                     assignment_id=course3["assignment"].id)
    session.commit()
    # Without --redraw the instances keep the version they were drawn from: no change.
    assert regrade.preview_regrade(db_engine, ids, bank=bank, redraw=False).changed == 0
    preview = regrade.preview_regrade(db_engine, ids, bank=bank, redraw=True)
    half = course3["subs"][HALF]
    assert [(c.submission_id, c.old_score, c.new_score) for c in preview.changes] == [
        (half.id, 0.5, 0.25)]
    assert _audit_rows(session) == 0  # the dry run wrote nothing
    versions = set(session.scalars(select(Instance.problem_version_id)))
    job = _run(session, db_engine, course3, bank, redraw=True)
    assert (job.state, job.done, job.changed, job.errors) == ("done", 3, 1, 0)
    rows = list(session.scalars(select(Regrade)))
    assert [(r.submission_id, r.old_score, r.new_score, r.actor_id, r.job_id) for r in rows] == [
        (half.id, 0.5, 0.25, course3["teacher"].id, job.id)]
    assert rows[0].reason.startswith("spec fix") and rows[0].old_result_json
    session.expire_all()
    assert session.get(Submission, half.id).score == 0.25
    seeds = {s.id: s.hidden_seeds for s in session.scalars(select(Submission))}
    assert all(seeds.values())  # hidden seeds kept as stored
    new_versions = set(session.scalars(select(Instance.problem_version_id)))
    assert len(new_versions) == 1 and new_versions != versions
    # Run again: nothing more changes.
    again = _run(session, db_engine, course3, bank, redraw=True)
    assert (again.state, again.changed) == ("done", 0)
    assert _audit_rows(session) == 1


def test_a_job_whose_worker_died_is_failed_and_can_be_restarted(
        session, db_engine, course3, engine_bank):
    job = regrade.start_regrade(session, course3["course"], actor=None,
                                assignment_id=course3["assignment"].id)
    job.state = "running"
    job.heartbeat_at = job.created_at
    session.commit()
    jobs.check_stale(session, job, stale_s=0.0)
    session.commit()
    assert job.state == "failed" and "worker stopped" in job.error
    jobs.restart_job(session, job)
    session.commit()
    assert job.attempt == 2 and job.state == "queued"
    for thread in jobs.dispatch(db_engine, job, {**SETTINGS, "bank": engine_bank}):
        thread.join(120)
    session.expire_all()
    assert session.get(Job, job.id).state == "done"


def test_regrade_needs_a_scope(session, course3):
    from server.services.errors import ValidationError

    with pytest.raises(ValidationError) as excinfo:
        regrade.select_submissions(session, course3["course"])
    assert excinfo.value.field == "assignment"
    with pytest.raises(ValidationError):
        regrade.select_submissions(session, course3["course"], assignment_id=10**9)


def test_results_are_compared_not_their_text(course3, session):
    sub = course3["subs"][RIGHT]
    outcome = grading.Outcome("graded", {k: v for k, v in sub.result.items() if k != "credit"},
                              1.0)
    status, score, text = regrade._new_values(sub, outcome)
    assert not regrade._differs(sub, status, score, text)
    assert regrade._differs(sub, status, 0.5, text)
    assert dataclasses.asdict(regrade.Change(1, 2, "p", "graded", "graded", 1.0, 0.5))


# --- on RQ, with `nabla worker` processes started here ------------------------------------

NABLA = str(Path(sys.executable).with_name("nabla"))
SLOW_NUMPY = "import time\n\n\ndef backward(**kw):\n    time.sleep(0.5)\n    return {}\n"


@pytest.fixture
def rq_env(database_url, redis_url, redis_prefix, tmp_path):
    """Settings of this test's workers and commands: its own queue (``<prefix>jobs``)."""
    return {**os.environ, "NABLA_DATABASE_URL": database_url, "NABLA_REDIS_URL": redis_url,
            "NABLA_REDIS_PREFIX": redis_prefix, "NABLA_INSTANCE_PATH": str(tmp_path),
            "NABLA_JOB_STALE_S": "3", "NABLA_SANDBOX_POOL": "3"}


@pytest.fixture
def workers(rq_env, nabla_workers):
    """Start `nabla worker` processes on this test's queue."""
    return lambda **extra: nabla_workers({**rq_env, **extra})


def _nabla(env, *args, timeout=180):
    result = subprocess.run([NABLA, *args], env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def _tamper(session, submission, score):
    """Make a stored result look like an older engine's."""
    submission.score = score
    submission.result_json = json.dumps({**submission.result, "score": score})
    session.commit()


def test_on_rq_an_unchanged_engine_changes_nothing_and_a_changed_result_is_audited(
        session, course3, engine_bank, rq_env, workers):
    workers()
    assignment = str(course3["assignment"].id)
    out = _nabla(rq_env, "regrade", "--course", "CS101", "--assignment", assignment,
                 "--wait", "--json").stdout
    summary = json.loads(out)
    assert summary["submissions"] == 3 and (summary["changed"], summary["errors"]) == (0, 0)
    assert _audit_rows(session) == 0
    half = course3["subs"][HALF]
    _tamper(session, half, 0.4)
    summary = json.loads(_nabla(rq_env, "regrade", "--course", "CS101", "--assignment",
                                assignment, "--wait", "--json", "--reason", "old engine").stdout)
    assert (summary["changed"], summary["errors"]) == (1, 0)
    row = session.scalar(select(Regrade))
    assert (row.submission_id, row.old_score, row.new_score, row.reason, row.job_id) == (
        half.id, 0.4, 0.5, "old engine", summary["job"])
    session.expire_all()
    assert session.get(Submission, half.id).score == 0.5
    # A spec fix saved in the bank of record (as the editor or `nabla problems sync` saves
    # it): a plain regrade keeps each instance's version; --redraw picks the fix up.
    from server.services import bank as bank_service

    fixed = fixed_bank(engine_bank)[PROBLEM]
    bank_service.save_version(session, fixed.source, origin="sync", spec=fixed)
    session.commit()
    redrawn = json.loads(_nabla(rq_env, "regrade", "--course", "CS101", "--problem", PROBLEM,
                                "--redraw", "--wait", "--json").stdout)
    assert (redrawn["submissions"], redrawn["changed"], redrawn["errors"]) == (3, 1, 0)
    session.expire_all()
    assert session.get(Submission, half.id).score == 0.25
    assert set(session.scalars(select(Instance.problem_version_id))) == {
        bank_service.latest_version(session, PROBLEM).id}


def test_on_rq_a_killed_worker_fails_the_job_which_restarts_without_half_applied_changes(
        session, make_user, make_assignment, course3, engine_bank, rq_env, workers):
    """Four slow numpy submissions, one per chunk; the worker is killed after the first
    change is applied: each submission is either unchanged without an audit row or changed
    with one; the job shows failed, and a restart on a new worker finishes it."""
    course, engine_bank = course3["course"], engine_bank
    assignment = make_assignment(session, course, "Numpy", problems=("mlp-relu-numpy",))
    session.commit()
    subs = []
    students = [make_user(session, f"n{i}@example.edu", f"N {i}") for i in range(4)]
    from server.services.courses import enroll

    for student in students:
        enroll(session, course, student, "student")
    session.commit()
    for student in students:
        subs.append(grading.submit_answer(
            session, user=student, assignment_id=assignment.id, problem_id="mlp-relu-numpy",
            answer=SLOW_NUMPY, now=grading._utcnow(), bank=engine_bank, secret=SECRET,
            commit=session.commit).submission)
    session.commit()
    for sub in subs:
        _tamper(session, sub, 0.25)
    worker = workers(NABLA_REGRADE_THREADS="1")
    out = _nabla({**rq_env, "NABLA_REGRADE_CHUNK": "1"}, "regrade", "--course", "CS101",
                 "--assignment", str(assignment.id), "--json").stdout
    job_id = json.loads(out)["job"]
    factory = make_sessionmaker(session.get_bind())
    deadline = time.monotonic() + 60
    while True:
        with factory() as s:
            job = s.get(Job, job_id)
            if job.done >= 1 or time.monotonic() > deadline:
                break
        time.sleep(0.05)
    assert job.state == "running" and 1 <= job.done < 4, (job.state, job.done)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()

    def applied():
        with factory() as s:
            audited = {r.submission_id for r in s.scalars(select(Regrade))}
            changed = {sub.id for sub in s.scalars(select(Submission).where(
                Submission.id.in_([x.id for x in subs]))) if sub.score != 0.25}
            return audited, changed

    audited, changed = applied()
    assert audited == changed and 1 <= len(changed) < 4
    deadline = time.monotonic() + 30
    while True:
        with factory() as s, s.begin():
            job = jobs.check_stale(s, s.get(Job, job_id), stale_s=3)
            if job.state == "failed" or time.monotonic() > deadline:
                break
        time.sleep(0.3)
    assert job.state == "failed" and "worker stopped" in job.error
    with factory() as s, s.begin():
        job = jobs.restart_job(s, s.get(Job, job_id))
    jobs.dispatch(None, job, {"redis_url": rq_env["NABLA_REDIS_URL"],
                              "queue": rq_env["NABLA_REDIS_PREFIX"] + "jobs"})
    workers()
    deadline = time.monotonic() + 90
    while True:
        with factory() as s:
            job = s.get(Job, job_id)
            if job.state in ("done", "failed") or time.monotonic() > deadline:
                break
        time.sleep(0.2)
    assert (job.state, job.attempt, job.changed) == ("done", 2, 4)
    audited, changed = applied()
    assert audited == changed == {sub.id for sub in subs}
    with factory() as s:
        assert s.scalar(select(func.count(Regrade.id))) == 4  # one row per change, no more


def test_nabla_regrade_in_process_dry_run_and_json(session, course3, database_url, tmp_path,
                                                   monkeypatch):
    from click.testing import CliRunner

    from server.cli import main

    monkeypatch.delenv("NABLA_REDIS_URL", raising=False)
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path)}

    def nabla(*args):
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    _tamper(session, course3["subs"][WRONG], 0.1)
    assignment = str(course3["assignment"].id)
    dry = nabla("regrade", "--course", "CS101", "--assignment", assignment, "--dry-run",
                "--json")
    assert dry.exit_code == 0, dry.output
    summary = json.loads(dry.stdout)
    assert (summary["submissions"], summary["changed"], summary["job"]) == (3, 1, None)
    assert _audit_rows(session) == 0 and session.scalar(select(func.count(Job.id))) == 0
    session.rollback()  # on SQLite an open transaction holds the write lock
    result = nabla("regrade", "--course", "CS101", "--assignment", assignment)
    assert result.exit_code == 0, result.output
    assert "regrade job" in result.stderr  # the progress bar
    assert "3 submissions, 1 changed, 0 errors" in result.stdout
    assert _audit_rows(session) == 1
    session.rollback()
    bad = nabla("regrade", "--course", "CS101")
    assert bad.exit_code == 1 and "choose an assignment or a problem" in bad.stderr

