"""The JSON API under /api/v1, authenticated with personal API tokens.

Errors are JSON ``{"error": ...}`` (see app.py's error handlers).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify
from werkzeug.wrappers import Response

from server.db import get_session
from server.models import utcnow
from server.services.assignments import AssignmentStatus, student_assignments
from server.web.access import token_required

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def assignment_json(status: AssignmentStatus) -> dict[str, Any]:
    assignment = status.assignment
    return {
        "id": assignment.id,
        "course": assignment.course.code,
        "title": assignment.title,
        "open_at": _iso(assignment.open_at),
        "due_at": _iso(assignment.due_at),
        "late_until": _iso(assignment.late_until),
        "late_credit": assignment.late_credit,
        "max_attempts": assignment.max_attempts,
        "score_policy": assignment.score_policy,
        "phase": status.window.phase.value,
        "score": status.score,
        "problems": [
            {
                "id": p.assignment_problem.problem_id,
                "title": p.assignment_problem.problem.title,
                "answer_type": p.assignment_problem.problem.answer_type,
                "weight": p.assignment_problem.weight,
                "attempts_used": p.attempts_used,
                "score": p.score,  # by the score policy: best or last
            }
            for p in status.problems
        ],
    }


@bp.route("/me")
@token_required
def me() -> Response:
    user = g.api_user
    return jsonify(id=user.id, email=user.email, name=user.name)


@bp.route("/assignments")
@token_required
def assignments() -> Response:
    statuses = student_assignments(get_session(), g.api_user, utcnow())
    return jsonify(assignments=[assignment_json(status) for status in statuses])
