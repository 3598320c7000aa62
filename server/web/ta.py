"""Course staff pages (TAs and instructors), per course under /staff/<course_code>."""

from __future__ import annotations

from flask import Blueprint, render_template

from server.db import get_session
from server.models import Course
from server.services.assignments import course_assignments
from server.services.courses import roster
from server.web.access import role_required

bp = Blueprint("ta", __name__, url_prefix="/staff")


@bp.route("/<course_code>/")
@role_required("ta", "instructor")
def course(course: Course) -> str:
    session = get_session()
    return render_template(
        "ta/course.html",
        course=course,
        assignments=course_assignments(session, course),
        enrollments=roster(session, course),
    )
