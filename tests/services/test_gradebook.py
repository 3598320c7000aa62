"""The gradebook, overrides, extensions and the CSV exports (services.gradebook,
services.overrides, services.exports)."""

import csv
import dataclasses
import datetime as dt
import io
from pathlib import Path

import pytest
from sqlalchemy import select

from server.models import Enrollment, OverrideEvent, utcnow
from server.services import assignments, exports, gradebook, overrides
from server.services.assignments import AssignmentDraft, ProblemChoice
from server.services.errors import ValidationError

pytestmark = pytest.mark.usefixtures("db_backend")
DATA = Path(__file__).parent / "data"
HOUR = dt.timedelta(hours=1)


def _enroll_details(session, course, user, **fields):
    enrollment = session.scalar(select(Enrollment).where(
        Enrollment.course_id == course.id, Enrollment.user_id == user.id))
    for name, value in fields.items():
        setattr(enrollment, name, value)
    session.flush()


@pytest.fixture
def small_course(session, make_user, make_course, make_assignment, make_submission):
    """Three students (one named like a formula), two assignments (one titled like one)."""
    teacher = make_user(session, "teacher@example.edu", "Teacher")
    ada = make_user(session, "ada@example.edu", "Ada Lovelace")
    bob = make_user(session, "bob@example.edu", "Bob, Jr.")
    evil = make_user(session, "evil@example.edu", "=cmd|' /C calc'!A0")
    course = make_course(session, members={teacher: "instructor", ada: "student",
                                           bob: "student", evil: "student"})
    _enroll_details(session, course, ada, section="Sec 1", canvas_user_id="1001",
                    sis_user_id="S1", sis_login_id="ada")
    hw = make_assignment(session, course, "Homework 1", problems=("mlp-relu", "affine-np"))
    hw.canvas_id = "555"
    hw.problems[1].weight = 3.0
    quiz = make_assignment(session, course, "+Quiz", problems=("scalar-chain",),
                           due_offset_h=48)
    quiz.points = 10.0
    mlp, affine = hw.problems
    chain = quiz.problems[0]
    make_submission(session, ada, mlp, score=0.4)
    make_submission(session, ada, mlp, score=1.0)
    make_submission(session, ada, mlp, score=0.7)
    make_submission(session, ada, affine, score=0.5)
    make_submission(session, ada, chain, score=0.8)
    make_submission(session, bob, mlp, score=1 / 3)
    now = utcnow()
    overrides.set_override(session, course, user_id=ada.id, assignment_problem_id=chain.id,
                           score="90%", reason="regraded by hand", actor=teacher, now=now)
    overrides.set_override(session, course, user_id=evil.id, assignment_problem_id=chain.id,
                           score=1, reason="oral exam", actor=teacher, now=now)
    session.flush()
    return dict(course=course, teacher=teacher, ada=ada, bob=bob, evil=evil, hw=hw, quiz=quiz)


def _export(session, course, fmt, **kwargs):
    book = gradebook.course_gradebook(session, course, **kwargs)
    return "".join(exports.export_csv(book, fmt)).encode()


def test_canvas_export_of_a_small_course_equals_the_hand_written_file(session, small_course):
    assert _export(session, small_course["course"], "canvas") == \
        (DATA / "canvas_small.csv").read_bytes()


def test_long_export_policy_late_credit_and_overrides(session, small_course):
    c = small_course
    text = _export(session, c["course"], "long").decode()
    assert text.splitlines()[0] == (
        "email,name,sis_user_id,section,assignment_id,assignment,problem,weight,score,"
        "points,attempts,late,overridden,last_submission_at")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3 * 3  # students x assignment problems
    by = {(r["email"], r["problem"]): r for r in rows}
    ada_mlp = by[("ada@example.edu", "mlp-relu")]
    assert (ada_mlp["score"], ada_mlp["attempts"], ada_mlp["points"], ada_mlp["weight"]) == \
        ("1", "3", "25", "1")  # best of 0.4, 1.0, 0.7; a quarter of 100 points
    assert ada_mlp["overridden"] == "false" and ada_mlp["late"] == "false"
    assert ada_mlp["last_submission_at"].endswith("Z")
    assert by[("ada@example.edu", "affine-np")]["points"] == "75"
    chain = by[("ada@example.edu", "scalar-chain")]
    assert (chain["score"], chain["overridden"], chain["assignment"]) == ("0.9", "true", "'+Quiz")
    evil = by[("evil@example.edu", "mlp-relu")]
    assert (evil["name"], evil["score"], evil["attempts"], evil["last_submission_at"]) == \
        ("'=cmd|' /C calc'!A0", "", "0", "")


def test_last_policy_counts_the_latest_graded_submission(session, small_course):
    c = small_course
    c["hw"].score_policy = "last"
    session.flush()
    book = gradebook.course_gradebook(session, c["course"])
    assert book.cell(c["ada"].id, c["hw"].problems[0].id).score == pytest.approx(0.7)
    assert book.points(c["ada"].id, c["hw"]) == pytest.approx((0.7 + 1.5) / 4 * 100)


def test_removing_an_override_restores_the_computed_score_and_is_audited(session, small_course):
    c = small_course
    chain = c["quiz"].problems[0]
    overrides.remove_override(session, c["course"], user_id=c["ada"].id,
                              assignment_problem_id=chain.id, reason="mistake",
                              actor=c["teacher"], now=utcnow())
    book = gradebook.course_gradebook(session, c["course"])
    assert book.cell(c["ada"].id, chain.id).score == pytest.approx(0.8)
    assert not book.cell(c["ada"].id, chain.id).overridden
    events = overrides.override_history(session, c["ada"].id, chain.id)
    assert [(e.old_score, e.new_score, e.reason, e.actor_id) for e in events] == [
        (0.9, None, "mistake", c["teacher"].id), (None, 0.9, "regraded by hand", c["teacher"].id)]
    assert session.scalar(select(OverrideEvent).where(OverrideEvent.new_score.is_(None)))


def test_the_student_sees_the_override_marked(session, small_course):
    c = small_course
    statuses = assignments.student_assignments(session, c["ada"], utcnow(), c["course"])
    quiz = next(s for s in statuses if s.assignment.id == c["quiz"].id)
    assert quiz.problems[0].score == pytest.approx(0.9) and quiz.problems[0].overridden
    hw = next(s for s in statuses if s.assignment.id == c["hw"].id)
    assert not any(p.overridden for p in hw.problems)


@pytest.mark.parametrize(("score", "reason", "field"), [
    ("1.5", "x", "score"), ("abc", "x", "score"), ("-1%", "x", "score"), ("0.5", "  ", "reason")])
def test_bad_overrides_name_the_field(session, small_course, score, reason, field):
    c = small_course
    with pytest.raises(ValidationError) as excinfo:
        overrides.set_override(session, c["course"], user_id=c["ada"].id,
                               assignment_problem_id=c["hw"].problems[0].id, score=score,
                               reason=reason, actor=None, now=utcnow())
    assert excinfo.value.field == field


def test_section_and_assignment_filters(session, small_course):
    c = small_course
    book = gradebook.course_gradebook(session, c["course"], section="Sec 1")
    assert [s.email for s in book.students] == ["ada@example.edu"]
    assert book.sections == ["Sec 1"]
    one = _export(session, c["course"], "canvas", assignment_id=c["quiz"].id).decode()
    assert one.splitlines()[0].endswith("Section,'+Quiz")


@pytest.mark.parametrize("title", ["Final Score", "My Current Score", "grade", "Unposted HW"])
def test_titles_canvas_reads_as_its_own_are_refused(session, make_course, fake_bank, title):
    course = make_course(session)
    now = utcnow()
    draft = AssignmentDraft(title=title, open_at=now, due_at=now + HOUR,
                            problems=[ProblemChoice("mlp-relu")])
    with pytest.raises(ValidationError) as excinfo:
        assignments.create_assignment(session, course, draft, fake_bank)
    assert excinfo.value.field == "title" and "Canvas" in excinfo.value.reason
    ok = assignments.create_assignment(
        session, course, dataclasses.replace(draft, title="Grades of week 1", canvas_id="12"),
        fake_bank)
    assert ok.points == 100 and ok.canvas_id == "12"


def test_extension_moves_one_students_window(session, small_course, make_assignment):
    c = small_course
    closed = make_assignment(session, c["course"], "Closed", open_offset_h=-48,
                             due_offset_h=-24)
    now = utcnow()
    assert not assignments.student_window(session, c["ada"].id, closed, now).accepting
    overrides.set_extension(session, c["course"], closed, user_id=c["ada"].id,
                            due_at=now + HOUR, late_until=None, actor=c["teacher"])
    assert assignments.student_window(session, c["ada"].id, closed, now).accepting
    assert not assignments.student_window(session, c["bob"].id, closed, now).accepting
    statuses = assignments.student_assignments(session, c["ada"], now, c["course"])
    assert next(s for s in statuses if s.assignment.id == closed.id).window.accepting
    with pytest.raises(ValidationError):
        overrides.set_extension(session, c["course"], closed, user_id=c["ada"].id,
                                due_at=now + HOUR, late_until=now, actor=None)
    overrides.remove_extension(session, c["course"], closed, user_id=c["ada"].id)
    assert not assignments.student_window(session, c["ada"].id, closed, now).accepting


def test_late_is_the_counted_submissions_and_late_credit_is_in_the_score(
        session, make_user, make_course, make_assignment, make_submission):
    user = make_user(session)
    course = make_course(session, members={user: "student"})
    hw = make_assignment(session, course, problems=("mlp-relu", "affine-np"),
                         open_offset_h=-48, due_offset_h=-24, late_offset_h=24, late_credit=50)
    mlp, affine = hw.problems
    early = utcnow() - 30 * HOUR
    make_submission(session, user, mlp, score=0.4, now=early)  # on time
    late_sub = make_submission(session, user, mlp, score=0.45)  # late: 0.9 x 50%
    assert late_sub.late
    make_submission(session, user, affine, score=0.3, now=early)
    make_submission(session, user, affine, score=0.25)
    book = gradebook.course_gradebook(session, course)
    assert book.cell(user.id, mlp.id) == gradebook.Cell(0.45, 0.45, 2, True, False,
                                                        late_sub.created_at)
    assert not book.cell(user.id, affine.id).late  # the on-time 0.3 counts
    rows = list(csv.DictReader(io.StringIO(_export(session, course, "long").decode())))
    assert [(r["problem"], r["score"], r["late"]) for r in rows] == [
        ("mlp-relu", "0.45", "true"), ("affine-np", "0.3", "false")]
