"""services.regrade and services.jobs: regrades with audit, in a background thread."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select

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
