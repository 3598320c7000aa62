"""The JSON API under /api/v1, authenticated with personal API tokens.

Errors are JSON ``{"error": ...}`` (see app.py's error handlers): 400 bad
body, 401 no or bad token, 403 not yours, 404 unknown, 409 refused (closed,
or no attempts left; the answer is stored), 413 too large, 422 invalid answer
(stored, costs no attempt), 429 too many submissions or checks (nothing stored
or checked; ``Retry-After``), 503 the grader failed (stored, costs no attempt).
A submission in an error body is under ``"submission"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, abort, g, jsonify, request
from werkzeug.wrappers import Response

from server.db import get_session, reads_first
from server.models import SubmissionStatus, utcnow
from server.services import grading, workspace
from server.services import submissions as stored_submissions
from server.services.assignments import (
    AssignmentStatus,
    assignment_problem_for,
    student_assignments,
)
from server.services.errors import Conflict, Forbidden, NotFound, ValidationError
from server.services.feedback import submission_summary
from server.services.limits import (
    CheckRateLimited,
    RateLimited,
    SubmissionRateLimited,
    take_check_slot,
    take_submission_slot,
)
from server.services.submissions import (
    attempts_left_after,
    attempts_left_after_each,
    own_submission,
)
from server.web.access import end_transaction, token_required
from server.web.app import limiter, query_id, rate
from server.web.bank import get_bank_for_students
from server.web.student import instance_secret

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
        # This student's own dates (an extension from the staff), which the window follows.
        "extension": None if status.extension is None else {
            "due_at": _iso(status.extension.due_at),
            "late_until": _iso(status.extension.late_until)},
        "score": status.score,
        "problems": [
            {
                "id": p.assignment_problem.problem_id,
                "title": p.assignment_problem.problem.title,
                "answer_type": p.assignment_problem.problem.answer_type,
                "weight": p.assignment_problem.weight,
                "attempts_used": p.attempts_used,
                "score": p.score,  # by the score policy (best or last), or set by staff
                "overridden": p.overridden,
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


def _error(status: int, message: str, **extra: Any) -> Response:
    response = jsonify(error=message, **extra)
    response.status_code = status
    return response


def _too_many(exc: RateLimited) -> Response:
    """429 with Retry-After (in seconds; the error says it in words): nothing was done."""
    response = _error(429, str(exc))
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>")
@token_required
def problem(assignment_id: int, problem_id: str) -> Response:
    """My instance: dims, choices, forward, given, ask, values, layout, the statement."""
    try:
        ws = workspace.open_problem(
            get_session(), g.api_user, assignment_id, problem_id,
            bank=get_bank_for_students(), secret=instance_secret(), now=utcnow())
    except NotFound as exc:
        abort(404, str(exc))
    end_transaction()  # the rest is JSON from loaded data
    document = ws.document
    return jsonify(
        assignment=ws.assignment.id,
        problem=ws.assignment_problem.problem_id,
        title=ws.spec.title,
        statement=ws.spec.statement.strip(),
        answer_type=ws.spec.answer_kind,
        layout=document["layout"],
        dims=document["dims"],
        choices=document["choices"],
        constants=document.get("constants", {}),
        forward=document["forward"],
        given="d" + document["given"],
        ask=["d" + name for name in document["ask"]],
        shapes=document.get("shapes", {}),
        indexed=document.get("indexed", []),
        steps=document.get("steps", 0),
        values=document["values"],
        phase=ws.window.phase.value,
        due_at=_iso(ws.assignment.due_at),
        late_until=_iso(ws.assignment.late_until),
        attempts_used=ws.attempts_used,
        attempts_left=ws.attempts_left,
    )


def _answer_body() -> dict[str, Any]:
    """The request's ``{"answer": "..."}``, or a 400 naming what is wrong."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, 'body: send a JSON object {"answer": "..."} '
                   "with Content-Type: application/json")
    if "answer" not in body:
        abort(400, "answer: is required")
    unknown = sorted(set(body) - {"answer"})
    if unknown:
        abort(400, f"body: unknown field(s) {', '.join(unknown)}; only 'answer' is read")
    return body


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>/check", methods=["POST"])
@token_required
@reads_first  # the write lock only to draw the instance on a first visit (server.db)
def check(assignment_id: int, problem_id: str) -> Response:
    """Validate ``{"answer": "..."}`` without grading or storing it: 200 with ``valid``,
    ``errors`` (line and message, as a submission's) and ``stored: false``."""
    body = _answer_body()
    end_transaction()  # SQLite: the token's use may hold the write lock the counter needs
    try:
        take_check_slot(limiter(), g.api_user.id, rate("NABLA_CHECK_RATE"))
    except CheckRateLimited as exc:
        return _too_many(exc)
    with _service_errors():
        result = grading.check_answer(
            get_session(), user=g.api_user, assignment_id=assignment_id,
            problem_id=problem_id, answer=body["answer"], now=utcnow(),
            bank=get_bank_for_students(), secret=instance_secret(), commit=end_transaction)
    return jsonify(result)


@contextmanager
def _service_errors() -> Iterator[None]:
    """A service's refusal as the HTTP status that says it (the body names the field)."""
    try:
        yield
    except NotFound as exc:
        abort(404, str(exc))
    except grading.AnswerTooLarge as exc:
        abort(413, str(exc))
    except ValidationError as exc:
        abort(400, str(exc))
    except Conflict as exc:  # too many racing submissions: nothing stored, send again
        abort(409, str(exc))


STATUS_CODES = {
    SubmissionStatus.GRADED: 201,
    SubmissionStatus.INVALID: 422,
    SubmissionStatus.REFUSED: 409,
    SubmissionStatus.ERROR: 503,
    SubmissionStatus.PENDING: 202,
}


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>/submissions",
          methods=["POST"])
@token_required
@reads_first  # the write lock for storing the answer and for its verdict only (server.db)
def submit(assignment_id: int, problem_id: str) -> Response:
    """Store and grade ``{"answer": "..."}``; an ``Idempotency-Key`` header makes retries safe."""
    body = _answer_body()
    # Before anything is stored. The request's transaction ends first: on SQLite
    # it may hold the write lock (the token's use), which the counter needs.
    end_transaction()
    try:
        take_submission_slot(limiter(), g.api_user.id, rate("NABLA_SUBMIT_RATE"))
    except SubmissionRateLimited as exc:
        return _too_many(exc)
    session = get_session()
    with _service_errors():
        result = grading.submit_answer(
            session, user=g.api_user, assignment_id=assignment_id, problem_id=problem_id,
            answer=body["answer"], client_key=request.headers.get("Idempotency-Key"),
            now=utcnow(), bank=get_bank_for_students(), secret=instance_secret(),
            commit=session.commit, client_ip=request.remote_addr)
    # Commit here: the teardown rolls back on a 5xx, and a 503 (our grader
    # failed) must still record the submission's error and give its attempt back.
    session.commit()
    submission = result.submission
    summary = submission_summary(submission, result.attempts_left)
    if not result.created:  # the same Idempotency-Key again: what the first request stored
        return jsonify(summary)
    status = STATUS_CODES[SubmissionStatus(submission.status)]
    if status >= 400:
        first_error = (summary["errors"] or [{}])[0].get("message")
        message = summary["message"]
        if first_error is not None:
            message = f"{message}: {first_error}"
        return _error(status, message, submission=summary)
    response = jsonify(summary)
    response.status_code = status
    response.headers["Location"] = f"{bp.url_prefix}/submissions/{submission.id}"
    return response


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>/submissions")
@token_required
def problem_submissions(assignment_id: int, problem_id: str) -> Response:
    """My submissions of one problem, newest first, each in the shape POST returns."""
    session = get_session()
    try:
        assignment_problem = assignment_problem_for(session, g.api_user, assignment_id, problem_id)
    except NotFound as exc:
        abort(404, str(exc))
    submissions = stored_submissions.problem_submissions(session, g.api_user,
                                                         assignment_problem)
    # Each as of that submission, as its page says (not the count now).
    left = attempts_left_after_each(submissions, assignment_problem.assignment.max_attempts)
    end_transaction()
    return jsonify(submissions=[submission_summary(sub, left[sub.id]) for sub in submissions])


@bp.route("/submissions/<int:submission_id>")
@token_required
def submission(submission_id: int) -> Response:
    """One of my submissions, in the shape POST returns."""
    session = get_session()
    try:
        sub = own_submission(session, g.api_user, submission_id)
    except NotFound as exc:
        abort(404, str(exc))
    except Forbidden as exc:
        abort(403, str(exc))
    left = attempts_left_after(session, sub)  # as of this submission, as its page says
    sub.assignment_problem  # noqa: B018  (the summary names its problem)
    end_transaction()
    return jsonify(submission_summary(sub, left))


def _staff_course(course_code: str, what: str) -> Any:
    """The course of ``course_code`` if the token's user is on its staff (or an admin):
    404 when the course is unknown or not theirs, 403 for its students."""
    from server.services.courses import STAFF_ROLES, get_course, role_in_course

    session = get_session()
    user = g.api_user
    course = get_course(session, course_code)
    role = None if course is None else role_in_course(session, user, course)
    if course is None or (role is None and not user.is_admin):
        abort(404, f"There is no course {course_code}.")
    if role not in STAFF_ROLES and not user.is_admin:
        abort(403, f"{what} are for the course's staff only.")
    return course


@bp.route("/courses/<course_code>/grades.csv")
@token_required
@reads_first
def grades_csv(course_code: str) -> Response:
    """The course's grades as CSV (``format=long|canvas``, ``assignment=ID``): the bytes
    of the gradebook page's export. Course staff only."""
    from server.web.gradebook import csv_response

    course = _staff_course(course_code, "Grades")
    return csv_response(get_session(), course, request.args.get("format"),
                        query_id("assignment"))


@bp.route("/courses/<course_code>/analytics/problems/<problem_id>")
@token_required
@reads_first
def problem_analytics(course_code: str, problem_id: str) -> Response:
    """A problem's analytics (``assignment=ID``: in one assignment), as on its staff page:
    docs/analytics.md. Course staff only."""
    from server.services import analytics

    course = _staff_course(course_code, "Analytics")
    try:
        data = analytics.problem_analytics(get_session(), course, problem_id,
                                           query_id("assignment"))
    except NotFound as exc:
        abort(404, str(exc))
    end_transaction()
    return jsonify(data)
