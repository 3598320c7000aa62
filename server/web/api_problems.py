"""The staff API for the problem bank, under /api/v1/courses/<code>/problems
(personal tokens of the course's TAs and instructors; students get 403, users
outside the course 404). See docs/authoring.md.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, jsonify, request
from werkzeug.wrappers import Response

from server.db import get_session, reads_first
from server.models import Course, Problem
from server.services import bank
from server.services.courses import STAFF_ROLES, get_course, role_in_course
from server.services.errors import Conflict, Forbidden, NotFound, ValidationError
from server.web.access import end_transaction, token_required

bp = Blueprint("api_problems", __name__, url_prefix="/api/v1")


def _staff_course(code: str) -> Course:
    session = get_session()
    course = get_course(session, code)
    role = None if course is None else role_in_course(session, g.api_user, course)
    if course is None or (role is None and not g.api_user.is_admin):
        abort(404, f"course: there is no course {code}")
    if role not in STAFF_ROLES and not g.api_user.is_admin:
        abort(403, f"course: the problem bank of {code} is for its TAs and instructors only")
    return course


def _body(allowed: set[str]) -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, 'body: send a JSON object, e.g. {"spec": "..."}')
    unknown = sorted(set(body) - allowed)
    if unknown:
        abort(400, f"body: unknown field(s) {', '.join(unknown)}; "
                   f"only {', '.join(sorted(allowed))} are read")
    return body


def _refused(exc: bank.SpecRefused) -> Response:
    response = jsonify(error=str(exc), errors=exc.errors)
    response.status_code = 422
    return response


@bp.route("/courses/<code>/problems")
@token_required
def problems(code: str) -> Response:
    course = _staff_course(code)
    rows = bank.course_problems(get_session(), course)
    return jsonify(problems=[row.to_json() for row in rows])


@bp.route("/courses/<code>/problems/<spec_id>", methods=["PUT"])
@token_required
@reads_first
def put_problem(code: str, spec_id: str) -> Response:
    """Save a version of the course's problem ``spec_id`` (created if new)."""
    course = _staff_course(code)
    body = _body({"spec"})
    if "spec" not in body:
        abort(400, "spec: is required (the spec's TOML text)")
    session = get_session()
    own = session.get(Problem, bank.problem_key(spec_id, course))
    shared = session.get(Problem, spec_id)
    if own is None and shared is not None and shared.course_id is None:
        abort(403, f"problem: {spec_id!r} is a shared problem: it changes only with `nabla "
                   "problems sync`; copy it to the course first (on the staff problem page)")
    try:
        known = bank.known_version(session, body["spec"], key=bank.problem_key(spec_id, course))
        if known is not None:  # the same text again: nothing to check or create
            return jsonify(id=known.problem_id, version=known.version)
        end_transaction()  # the check takes a while (in the judge); no transaction meanwhile
        spec = bank.validate_spec(body["spec"])
        if spec.id != spec_id:
            from server.engine.spec import key_line

            raise bank.SpecRefused([{"line": key_line(body["spec"], "id"), "message": (
                f"id: the spec's id {spec.id!r} is not the {spec_id!r} of the address")}])
        saved = bank.save_version(session, body["spec"], course=course, author=g.api_user,
                                  origin="api", spec=spec)
    except bank.SpecRefused as exc:
        return _refused(exc)
    except Conflict as exc:
        abort(409, str(exc))
    response = jsonify(id=saved.version.problem_id, version=saved.version.version)
    response.status_code = 201 if saved.created else 200
    return response


@bp.route("/courses/<code>/problems/<spec_id>/preview", methods=["POST"])
@token_required
@reads_first
def preview(code: str, spec_id: str) -> Response:
    """Seed N of the problem (the course's own ``spec_id``, else the shared one) or of
    a draft ``spec``; with ``answer``, its grade as a submission's, nothing stored."""
    course = _staff_course(code)
    body = _body({"seed", "answer", "spec"})
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        abort(400, f"seed: must be a whole number from 0 to {2**31 - 1}, got {seed!r}")
    answer = body.get("answer")
    if answer is not None and not isinstance(answer, str):
        abort(400, "answer: must be a string")
    session = get_session()
    try:
        if body.get("spec") is not None:
            end_transaction()
            text, spec_hash = body["spec"], None
        else:
            key = bank.problem_key(spec_id, course)
            if session.get(Problem, key) is None:
                key = spec_id
            problem = bank.staff_problem(session, course, key)
            version = bank.get_version(session, problem, None)
            text, spec_hash = version.spec_text, version.spec_hash
            end_transaction()
        result = bank.preview(text, seed, answer, spec_hash=spec_hash)
    except bank.SpecRefused as exc:
        return _refused(exc)
    except NotFound as exc:
        abort(404, str(exc))
    except (Forbidden, ValidationError) as exc:
        abort(400 if isinstance(exc, ValidationError) else 403, str(exc))
    return jsonify(instance=result.document, solution=result.solution, grade=result.grade_json())
