"""The student's pages: the dashboard, a problem, its downloads, and a submission's feedback."""

from __future__ import annotations

import json
import secrets
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from server.db import get_session, reads_first
from server.engine.kinds import kind_of
from server.models import utcnow
from server.services import grading, staff_invitations, workspace
from server.services.assignments import student_assignments
from server.services.courses import STAFF_ROLES, courses_for_user
from server.services.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceError,
    Unavailable,
    ValidationError,
)
from server.services.feedback import annotated_lines, general_errors, submission_summary
from server.services.limits import (
    CheckRateLimited,
    RateLimited,
    SubmissionRateLimited,
    take_check_slot,
    take_submission_slot,
)
from server.services.submissions import (
    attempts_left_after,
    course_submission_counts,
    own_submission,
)
from server.web.access import end_transaction, login_required
from server.web.app import limiter, rate
from server.web.bank import get_bank_for_students
from server.web.forms import AnswerForm

bp = Blueprint("student", __name__)


def instance_secret() -> bytes:
    """The key of the per-student seeds (see services.instances.derive_seed)."""
    return current_app.config["SECRET_KEY"].encode()


@bp.route("/")
@login_required
def dashboard() -> str:
    session = get_session()
    courses = courses_for_user(session, current_user)
    statuses = student_assignments(session, current_user, utcnow())
    by_course: dict[int, list] = {}
    for status in statuses:
        by_course.setdefault(status.assignment.course_id, []).append(status)
    # Staff see their course's assignments with its submissions, not attempts of their own.
    staff_counts = {course.id: course_submission_counts(session, course)
                    for course, role in courses if role in STAFF_ROLES}
    invitations = staff_invitations.pending_for_user(session, current_user)
    end_transaction()
    return render_template(
        "student/dashboard.html",
        courses=courses,
        by_course=by_course,
        staff_counts=staff_counts,
        staff_roles=STAFF_ROLES,
        invitations=invitations,
    )


@bp.route("/invitations/<int:invitation_id>/<any(accept, decline):answer>", methods=["POST"])
@login_required
def answer_invitation(invitation_id: int, answer: str) -> Response:
    """Accept or decline a staff invitation (services.staff_invitations) from the
    dashboard; the CSRF token is checked before the view."""
    act = staff_invitations.accept if answer == "accept" else staff_invitations.decline
    try:
        invitation = act(get_session(), current_user._get_current_object(), invitation_id)
    except ServiceError as exc:
        flash(str(exc), "error")
    else:
        code = invitation.course.code
        flash(f"You are {invitation.role} in {code} now." if answer == "accept"
              else f"You declined to be {invitation.role} in {code}.")
    return redirect(url_for("student.dashboard"))


@bp.route("/assignments/<int:assignment_id>")
@login_required
def assignment(assignment_id: int) -> str:
    """One assignment: its problems in the instructor's order, with my attempts and scores."""
    statuses = student_assignments(get_session(), current_user, utcnow(),
                                   assignment_id=assignment_id)
    if not statuses:
        abort(404, f"assignment: no assignment {assignment_id} in your courses")
    status = statuses[0]
    if status.window.phase == "upcoming" and not current_user.is_admin:
        abort(404, f"assignment: {status.assignment.title!r} is not open yet "
                   f"({status.window.message})")
    end_transaction()
    return render_template("student/assignment.html", status=status)


def _open(assignment_id: int, problem_id: str) -> workspace.ProblemWorkspace:
    try:
        return workspace.open_problem(
            get_session(), current_user, assignment_id, problem_id,
            bank=get_bank_for_students(), secret=instance_secret(), now=utcnow())
    except NotFound as exc:
        abort(404, str(exc))


def _render_problem(ws: workspace.ProblemWorkspace, form: AnswerForm | None = None,
                    error: str | None = None, status: int = 200,
                    check: dict[str, Any] | None = None) -> tuple[str, int]:
    if form is None:
        form = AnswerForm(formdata=None, answer=ws.last_answer)
    # A fresh key for every rendering: one key, one submission.
    form.submission_key.data = secrets.token_urlsafe(16)
    ws.assignment.course  # noqa: B018  (loaded for the template, before the commit)
    siblings = [ap for ap in ws.assignment.problems]
    position = next((k for k, ap in enumerate(siblings)
                     if ap.problem_id == ws.assignment_problem.problem_id), 0)
    next_problem = siblings[position + 1].problem if position + 1 < len(siblings) else None
    end_transaction()
    order = [v.name for v in ws.variables]
    return render_template(
        "student/problem.html",
        ws=ws, form=form, error=error, check=check,
        values=workspace.formatted_values(ws.spec, ws.document, order),
        history=[(s, s.result) for s in ws.submissions],
        worked=workspace.worked_line(ws.spec, ws.document),
        constants=workspace.constant_uses(ws.spec, ws.document),
        position=position, count=len(siblings), next_problem=next_problem,
    ), status


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>")
@login_required
def problem(assignment_id: int, problem_id: str) -> tuple[str, int]:
    return _render_problem(_open(assignment_id, problem_id))


def _over_rate(exc: RateLimited, assignment_id: int, problem_id: str,
               form: AnswerForm) -> tuple[str, int, dict[str, str]]:
    """A 429 with Retry-After: nothing was done, and the page keeps the text in the box."""
    page, code = _render_problem(_open(assignment_id, problem_id), form, str(exc), 429)
    return page, code, {"Retry-After": str(exc.retry_after)}


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>", methods=["POST"])
@login_required
@reads_first  # the write lock for storing the answer and for its verdict only (server.db)
def submit(assignment_id: int, problem_id: str) -> Any:
    # CSRFProtect has checked the form's token before this runs.
    form = AnswerForm()
    end_transaction()  # SQLite: the counter takes the write lock in its own transaction
    try:
        take_submission_slot(limiter(), current_user.id, rate("NABLA_SUBMIT_RATE"))
    except SubmissionRateLimited as exc:
        return _over_rate(exc, assignment_id, problem_id, form)
    session = get_session()
    try:
        result = grading.submit_answer(
            session, user=current_user, assignment_id=assignment_id, problem_id=problem_id,
            answer=form.answer.data or "", client_key=form.submission_key.data,
            now=utcnow(), bank=get_bank_for_students(), secret=instance_secret(),
            commit=session.commit, client_ip=request.remote_addr)
    except NotFound as exc:
        abort(404, str(exc))
    except (ValidationError, Conflict) as exc:
        # Nothing was stored; the page comes back with the text in the box.
        code = (413 if isinstance(exc, grading.AnswerTooLarge)
                else 409 if isinstance(exc, Conflict) else 400)
        return _render_problem(_open(assignment_id, problem_id), form, str(exc), code)
    session.commit()  # the verdict is recorded whatever happens while responding
    submission = result.submission
    if not result.created:
        flash("This answer was already sent (a second click); it was stored once.")
    elif submission.status == "refused":
        flash(f"Not accepted: {submission.result['refused']}. Your text is kept below.", "error")
        return redirect(url_for("student.problem", assignment_id=assignment_id,
                                problem_id=problem_id))
    return redirect(url_for("student.submission", submission_id=submission.id))


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>/check")
@login_required
def check_page(assignment_id: int, problem_id: str) -> Any:
    """A reload or bookmark of a Check's page: the problem itself."""
    return redirect(url_for("student.problem", assignment_id=assignment_id,
                            problem_id=problem_id))


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>/check", methods=["POST"])
@login_required
@reads_first  # the write lock only to draw the instance on a first visit (server.db)
def check(assignment_id: int, problem_id: str) -> Any:
    """The Check button: parse the answer and check its shapes on my instance; nothing
    is stored or graded and no attempt is used. The page comes back with the text."""
    form = AnswerForm()
    end_transaction()  # SQLite: the counter takes the write lock in its own transaction
    try:
        take_check_slot(limiter(), current_user.id, rate("NABLA_CHECK_RATE"))
    except CheckRateLimited as exc:
        return _over_rate(exc, assignment_id, problem_id, form)
    result, error, code = None, None, 200
    try:
        result = grading.check_answer(
            get_session(), user=current_user, assignment_id=assignment_id,
            problem_id=problem_id, answer=form.answer.data or "", now=utcnow(),
            bank=get_bank_for_students(), secret=instance_secret(), commit=end_transaction)
    except NotFound as exc:
        abort(404, str(exc))
    except (ValidationError, Unavailable) as exc:
        error = str(exc)
        code = (413 if isinstance(exc, grading.AnswerTooLarge)
                else 503 if isinstance(exc, Unavailable) else 400)
    return _render_problem(_open(assignment_id, problem_id), form, error, code, check=result)


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>/values.json")
@login_required
def values_json(assignment_id: int, problem_id: str) -> Response:
    ws = _open(assignment_id, problem_id)
    body = json.dumps(workspace.values_document(ws.instance), indent=1)
    return _download(body.encode(), "application/json", f"{problem_id}-values.json")


@bp.route("/assignments/<int:assignment_id>/problems/<problem_id>/values.npz")
@login_required
def values_npz(assignment_id: int, problem_id: str) -> Response:
    ws = _open(assignment_id, problem_id)
    if not kind_of(ws.spec).has_arrays:
        abort(404, f"An {ws.spec.answer_kind} problem has no array values to download.")
    return _download(workspace.values_npz(ws.instance), "application/octet-stream",
                     f"{problem_id}-values.npz")


def _download(body: bytes, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/submissions/<int:submission_id>")
@login_required
def submission(submission_id: int) -> tuple[str, int]:
    session = get_session()
    try:
        sub = own_submission(session, current_user, submission_id)
    except NotFound as exc:
        abort(404, str(exc))
    except Forbidden as exc:
        abort(403, str(exc))
    left = attempts_left_after(session, sub)  # as of this submission
    assignment = sub.assignment_problem.assignment
    assignment.course, sub.assignment_problem.problem  # noqa: B018  (for the template)
    end_transaction()
    return render_template(
        "student/submission.html",
        sub=sub, summary=submission_summary(sub, left),
        lines=annotated_lines(sub.answer, sub.result),
        general=general_errors(sub.result, sub.answer),
        assignment=assignment,
        problem=sub.assignment_problem.problem,
    ), 200
