"""Course staff pages (TAs and instructors), per course under /staff/<course_code>
(blueprint ``staff``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template, request

from server.db import get_session
from server.models import STATUS_VALUES, Course, utcnow
from server.services import analytics, staff_invitations
from server.services.assignments import (
    course_assignments,
    get_course_assignment,
    student_assignments,
)
from server.services.courses import roster
from server.services.errors import NotFound, ValidationError
from server.services.feedback import annotated_lines, general_errors, submission_summary
from server.services.submissions import (
    attempts_left_after,
    course_submission,
    course_submission_counts,
)
from server.services.submissions import course_submissions as query_course_submissions
from server.web.access import end_transaction, role_required

bp = Blueprint("staff", __name__, url_prefix="/staff")


@bp.route("/<course_code>/")
@role_required("ta", "instructor")
def course(course: Course) -> str:
    session = get_session()
    assignments = course_assignments(session, course)
    enrollments = roster(session, course)
    counts = course_submission_counts(session, course)
    invitations = staff_invitations.pending_for_course(session, course)
    end_transaction()
    return render_template(
        "staff/course.html", course=course, assignments=assignments, enrollments=enrollments,
        submission_counts=counts, invitations=invitations,
    )


@bp.route("/<course_code>/submissions")
@role_required("ta", "instructor")
def course_submissions(course: Course) -> str:
    """Every submission of the course, with the same filters (analytics link here)."""
    return _submissions(course, None)


@bp.route("/<course_code>/assignments/<int:assignment_id>/submissions")
@role_required("ta", "instructor")
def submissions(course: Course, assignment_id: int) -> str:
    """Every submission of an assignment, refused and invalid ones included, newest first."""
    return _submissions(course, assignment_id)


def _submissions(course: Course, assignment_id: int | None) -> str:
    session = get_session()
    assignment = None
    if assignment_id is not None:
        try:
            assignment = get_course_assignment(session, course, assignment_id)
        except NotFound as exc:
            abort(404, str(exc))
    status = request.args.get("status") or None
    if status is not None and status not in STATUS_VALUES:
        abort(400, f"status: {status!r} is not one of {', '.join(STATUS_VALUES)}")
    members = roster(session, course)
    student = _student_filter(members)
    problem = request.args.get("problem") or None
    assignments = [assignment] if assignment else course_assignments(session, course)
    problem_ids = list(dict.fromkeys(ap.problem_id for a in assignments for ap in a.problems))
    if problem is not None and problem not in problem_ids:
        where = repr(assignment.title) if assignment else course.code
        abort(400, f"problem: {problem!r} is not a problem of {where}")
    try:  # the analytics' filters: verdict per gradient, first-mistake step, ...
        conditions, filters = analytics.submission_filters(course, request.args)
    except ValidationError as exc:
        abort(400, str(exc))
    submissions = query_course_submissions(
        session, course, assignment_id, status=status, problem_id=problem,
        user_id=None if student is None else student.user_id, where=conditions)
    end_transaction()
    return render_template(
        "staff/submissions.html",
        course=course, assignment=assignment, status=status, statuses=STATUS_VALUES,
        submissions=submissions, members=members, student=student, problem=problem,
        problems=problem_ids, filters=filters,
    )


def _student_filter(members: list) -> Any:
    """The enrollment chosen by ``?student=<user id>`` (None: everyone), or a 400."""
    raw = request.args.get("student") or None
    if raw is None:
        return None
    member = next((e for e in members if str(e.user_id) == raw), None)
    if member is None:
        abort(400, f"student: {raw!r} is not the id of someone in this course")
    return member


@bp.route("/<course_code>/students/<int:user_id>")
@role_required("ta", "instructor")
def student(course: Course, user_id: int) -> str:
    """One member of the course: their assignments and scores, and every submission."""
    session = get_session()
    member = next((e for e in roster(session, course) if e.user_id == user_id), None)
    if member is None:
        abort(404, f"student: no one with id {user_id} in {course.code}")
    statuses = student_assignments(session, member.user, utcnow(), course)
    submissions = query_course_submissions(session, course, user_id=user_id)
    end_transaction()
    return render_template("staff/student.html", course=course, member=member,
                           statuses=statuses, submissions=submissions)


@bp.route("/<course_code>/submissions/<int:submission_id>")
@role_required("ta", "instructor")
def submission(course: Course, submission_id: int) -> str:
    session = get_session()
    try:
        sub = course_submission(session, course, submission_id)
    except NotFound as exc:
        abort(404, str(exc))
    left = attempts_left_after(session, sub)  # as of this submission
    sub.user, sub.assignment_problem.problem  # noqa: B018  (for the template)
    end_transaction()
    return render_template(
        "staff/submission.html",
        course=course, sub=sub, summary=submission_summary(sub, left),
        lines=annotated_lines(sub.answer, sub.result),
        general=general_errors(sub.result, sub.answer),
        assignment=sub.assignment_problem.assignment,
    )
