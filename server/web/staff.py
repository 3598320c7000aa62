"""Course staff pages (TAs and instructors), per course under /staff/<course_code>
(blueprint ``staff``)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from server.db import get_session
from server.models import STATUS_VALUES, Course
from server.services.assignments import course_assignments, get_course_assignment
from server.services.courses import roster
from server.services.errors import NotFound
from server.services.feedback import annotated_lines, general_errors, submission_summary
from server.services.submissions import (
    attempts_left,
    course_submission,
    course_submission_counts,
    course_submissions,
)
from server.web.access import end_transaction, role_required

bp = Blueprint("staff", __name__, url_prefix="/staff")


@bp.route("/<course_code>/")
@role_required("ta", "instructor")
def course(course: Course) -> str:
    session = get_session()
    assignments = course_assignments(session, course)
    enrollments = roster(session, course)
    counts = course_submission_counts(session, course)
    end_transaction()
    return render_template(
        "staff/course.html", course=course, assignments=assignments, enrollments=enrollments,
        submission_counts=counts,
    )


@bp.route("/<course_code>/assignments/<int:assignment_id>/submissions")
@role_required("ta", "instructor")
def submissions(course: Course, assignment_id: int) -> str:
    """Every submission of an assignment, refused and invalid ones included, newest first."""
    session = get_session()
    try:
        assignment = get_course_assignment(session, course, assignment_id)
    except NotFound as exc:
        abort(404, str(exc))
    status = request.args.get("status") or None
    if status is not None and status not in STATUS_VALUES:
        abort(400, f"status: {status!r} is not one of {', '.join(STATUS_VALUES)}")
    submissions = course_submissions(session, course, assignment.id, status=status)
    end_transaction()
    return render_template(
        "staff/submissions.html",
        course=course, assignment=assignment, status=status, statuses=STATUS_VALUES,
        submissions=submissions,
    )


@bp.route("/<course_code>/submissions/<int:submission_id>")
@role_required("ta", "instructor")
def submission(course: Course, submission_id: int) -> str:
    session = get_session()
    try:
        sub = course_submission(session, course, submission_id)
    except NotFound as exc:
        abort(404, str(exc))
    left = attempts_left(session, sub, sub.user_id)
    sub.user, sub.assignment_problem.problem  # noqa: B018  (for the template)
    end_transaction()
    return render_template(
        "staff/submission.html",
        course=course, sub=sub, summary=submission_summary(sub, left),
        lines=annotated_lines(sub.answer, sub.result),
        general=general_errors(sub.result, sub.answer),
        assignment=sub.assignment_problem.assignment,
    )
