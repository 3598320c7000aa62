import dataclasses
import datetime as dt

import pytest
from sqlalchemy.exc import IntegrityError

from server.models import Instance, ProblemVersion, Submission, utcnow
from server.services import assignments, problems
from server.services.assignments import AssignmentDraft, Phase, ProblemChoice
from server.services.errors import ValidationError

pytestmark = pytest.mark.usefixtures("db_backend")
HOUR = dt.timedelta(hours=1)


def _draft(**changes):
    now = dt.datetime(2026, 1, 10, 12, tzinfo=dt.UTC)
    base = AssignmentDraft(
        title="HW", open_at=now, due_at=now + 24 * HOUR,
        problems=[ProblemChoice("mlp-relu", 2), ProblemChoice("affine-np", 1)],
    )
    return dataclasses.replace(base, **changes)


def test_create_assignment_records_problems_in_order(session, make_course, fake_bank):
    course = make_course(session)
    assignment = assignments.create_assignment(session, course, _draft(), fake_bank)
    assert [(ap.problem_id, ap.weight, ap.position) for ap in assignment.problems] == [
        ("mlp-relu", 2.0, 0), ("affine-np", 1.0, 1)]
    version = problems.latest_version(session, "mlp-relu")
    assert (version.version, version.spec_hash, version.spec_text) == (1, "h1", "id='mlp-relu'")
    assert assignments.course_assignments(session, course) == [assignment]


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"title": "  "}, "title", "is required"),
        ({"due_at": dt.datetime(2026, 1, 9, tzinfo=dt.UTC)}, "due_at", "before the opening"),
        ({"open_at": dt.datetime(2026, 1, 9)}, "open_at", "no time zone"),
        ({"late_until": dt.datetime(2026, 1, 10, tzinfo=dt.UTC)}, "late_until", "before the due"),
        ({"late_credit": 150, "late_until": dt.datetime(2026, 2, 1, tzinfo=dt.UTC)},
         "late_credit", "between 0 and 100"),
        ({"late_credit": 50}, "late_credit", "needs a late-until date"),
        ({"max_attempts": 0}, "max_attempts", "between 1 and"),
        ({"score_policy": "average"}, "score_policy", "is not 'best' or 'last'"),
        ({"problems": []}, "problems", "at least one"),
        ({"problems": [ProblemChoice("nope")]}, "problems", "'nope' is not in the problem bank"),
        ({"problems": [ProblemChoice("mlp-relu"), ProblemChoice("mlp-relu")]}, "problems", "twice"),
        ({"problems": [ProblemChoice("mlp-relu", 0)]}, "problems", "positive number"),
        ({"problems": [ProblemChoice("mlp-relu", float("nan"))]}, "problems", "positive number"),
    ],
)
def test_invalid_drafts_name_the_field(session, make_course, fake_bank, changes, field, reason):
    course = make_course(session)
    with pytest.raises(ValidationError) as excinfo:
        assignments.create_assignment(session, course, _draft(**changes), fake_bank)
    assert excinfo.value.field == field
    assert reason in excinfo.value.reason


def test_changed_spec_gets_a_new_version_and_same_spec_reuses_it(session, fake_bank):
    spec = fake_bank["mlp-relu"]
    first = problems.record_problem_version(session, spec)
    assert problems.record_problem_version(session, spec).id == first.id
    changed = dataclasses.replace(spec, version="h1b", source="id='mlp-relu' # v2")
    second = problems.record_problem_version(session, changed)
    assert (first.version, second.version) == (1, 2)
    assert session.query(ProblemVersion).count() == 2


def test_submission_window_phases():
    now = dt.datetime(2026, 1, 10, 12, tzinfo=dt.UTC)
    a = _draft(late_until=now + 48 * HOUR, late_credit=50)
    assert assignments.submission_window(a, now - HOUR).phase is Phase.UPCOMING
    assert assignments.submission_window(a, now - HOUR).accepting is False
    on_time = assignments.submission_window(a, now + 24 * HOUR)
    assert (on_time.phase, on_time.late, on_time.credit) == (Phase.OPEN, False, 1.0)
    late = assignments.submission_window(a, now + 30 * HOUR)
    assert (late.phase, late.accepting, late.late, late.credit) == (Phase.LATE, True, True, 0.5)
    closed = assignments.submission_window(a, now + 49 * HOUR)
    assert (closed.phase, closed.accepting) == (Phase.CLOSED, False)
    assert "closed" in closed.message
    no_late = _draft()
    assert assignments.submission_window(no_late, now + 25 * HOUR).phase is Phase.CLOSED


def _submit(session, user, ap, instance, attempt, score, status="graded", minutes=0):
    submission = Submission(
        user_id=user.id, assignment_problem_id=ap.id, instance_id=instance.id, answer="x",
        kind="equations", status=status, score=score, attempt=attempt,
        created_at=utcnow() + dt.timedelta(minutes=minutes),
    )
    session.add(submission)
    session.flush()
    return submission


def _instance(session, user, ap):
    version = problems.latest_version(session, ap.problem_id)
    instance = Instance(user_id=user.id, assignment_problem_id=ap.id,
                        problem_version_id=version.id, seed=1, dims_json="{}",
                        choices_json="{}", values_json="{}", reference_json="{}")
    session.add(instance)
    session.flush()
    return instance


def test_student_status_by_policy(session, make_user, make_course, make_assignment):
    student = make_user(session)
    course = make_course(session, members={student: "student"})
    best = make_assignment(session, course, "Best", problems=("mlp-relu", "affine-np"))
    last = make_assignment(session, course, "Last", problems=("mlp-relu",), score_policy="last")
    ap_best, ap_other = best.problems
    (ap_last,) = last.problems
    inst = _instance(session, student, ap_best)
    _submit(session, student, ap_best, inst, 1, 1.0, minutes=0)
    _submit(session, student, ap_best, inst, 2, 0.5, minutes=1)
    _submit(session, student, ap_best, inst, None, None, status="invalid", minutes=2)
    inst_last = _instance(session, student, ap_last)
    _submit(session, student, ap_last, inst_last, 1, 1.0, minutes=0)
    _submit(session, student, ap_last, inst_last, 2, 0.25, minutes=1)
    statuses = {s.assignment.title: s for s in
                assignments.student_assignments(session, student, utcnow())}
    best_status = statuses["Best"]
    assert [p.score for p in best_status.problems] == [1.0, None]
    assert [p.attempts_used for p in best_status.problems] == [2, 0]
    assert best_status.score == pytest.approx(0.5)  # weights 1 and 1, one unattempted
    assert statuses["Last"].score == pytest.approx(0.25)
    assert ap_other.problem_id == "affine-np"


def test_attempt_numbers_are_unique_in_the_database(session, make_user, make_course,
                                                    make_assignment):
    student = make_user(session)
    course = make_course(session, members={student: "student"})
    (ap,) = make_assignment(session, course).problems
    inst = _instance(session, student, ap)
    _submit(session, student, ap, inst, 1, 1.0)
    _submit(session, student, ap, inst, None, None, status="refused")
    _submit(session, student, ap, inst, None, None, status="invalid")  # NULLs never collide
    with pytest.raises(IntegrityError):
        _submit(session, student, ap, inst, 1, 0.0)


def test_every_problem_of_the_real_bank_can_be_recorded(session):
    from server.engine.bank import load_bank

    bank = load_bank()
    assert bank, "the problem bank is empty"
    for spec in bank.values():
        version = problems.record_problem_version(session, spec)
        assert (version.problem.title, version.problem.answer_type) == (
            spec.title,
            spec.answer_kind,
        )
        assert version.spec_text == spec.source and version.spec_hash == spec.version


def test_assignment_problem_for_checks_enrollment(session, make_user, make_course,
                                                  make_assignment):
    from server.services.errors import NotFound

    student = make_user(session, email="s@example.edu")
    outsider = make_user(session, email="o@example.edu")
    admin = make_user(session, email="a@example.edu", is_admin=True)
    course = make_course(session, members={student: "student"})
    assignment = make_assignment(session, course, problems=("mlp-relu", "affine-np"))
    found = assignments.assignment_problem_for(session, student, assignment.id, "affine-np")
    assert found.problem_id == "affine-np" and found.assignment is assignment
    assert assignments.assignment_problem_for(session, admin, assignment.id, "mlp-relu")
    for user, aid, pid in [(outsider, assignment.id, "mlp-relu"),
                           (student, assignment.id, "scalar-chain"),
                           (student, assignment.id + 100, "mlp-relu")]:
        with pytest.raises(NotFound, match="problem: no problem"):
            assignments.assignment_problem_for(session, user, aid, pid)
