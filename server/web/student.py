"""The student's pages: the dashboard (the problem page is added by grading)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from server.db import get_session
from server.models import utcnow
from server.services.assignments import student_assignments
from server.services.courses import STAFF_ROLES, courses_for_user
from server.web.access import login_required

bp = Blueprint("student", __name__)


@bp.route("/")
@login_required
def dashboard() -> str:
    session = get_session()
    courses = courses_for_user(session, current_user)
    statuses = student_assignments(session, current_user, utcnow())
    by_course: dict[int, list] = {}
    for status in statuses:
        by_course.setdefault(status.assignment.course_id, []).append(status)
    return render_template(
        "student/dashboard.html",
        courses=courses,
        by_course=by_course,
        staff_roles=STAFF_ROLES,
    )
