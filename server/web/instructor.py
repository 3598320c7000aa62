"""Instructor pages, per course: create an assignment, import the roster."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    url_for,
)
from flask_login import current_user
from werkzeug.wrappers import Response

from server.db import get_session
from server.models import Assignment, Course, StaffInvitation, utcnow
from server.services import staff_invitations
from server.services.assignments import (
    AssignmentDraft,
    ProblemChoice,
    create_assignment,
    get_course_assignment,
    update_assignment,
)
from server.services.courses import RosterError, change_role, import_roster, unenroll
from server.services.errors import NotFound, ServiceError, ValidationError
from server.services.invites import new_account_links
from server.web.access import role_required
from server.web.bank import get_bank
from server.web.forms import AssignmentForm, RoleForm, RosterImportForm, to_local, to_utc
from server.web.links import SiteAddressUnknown, site_url

bp = Blueprint("instructor", __name__, url_prefix="/instructor")


def _assignment_form(course: Course, assignment: Assignment | None = None) -> AssignmentForm:
    """The form, with one row per bank problem (the assignment's own first, in order)."""
    bank = get_bank(course)
    if assignment is None:
        form = AssignmentForm()
        rows = [(pid, False, 1.0) for pid in sorted(bank)]
    else:
        form = AssignmentForm(
            title=assignment.title,
            open_at=to_local(assignment.open_at),
            due_at=to_local(assignment.due_at),
            late_until=to_local(assignment.late_until),
            late_credit=assignment.late_credit,
            max_attempts=assignment.max_attempts,
            score_policy=assignment.score_policy,
            points=assignment.points,
            canvas_id=assignment.canvas_id or "",
        )
        chosen = {ap.problem_id for ap in assignment.problems}
        rows = [(ap.problem_id, True, ap.weight) for ap in assignment.problems]
        rows += [(pid, False, 1.0) for pid in sorted(bank) if pid not in chosen]
    if not form.is_submitted():
        for position, (problem_id, include, weight) in enumerate(rows, 1):
            form.problems.append_entry(
                {"problem_id": problem_id, "include": include, "weight": weight,
                 "position": position}
            )
    return form


def _draft_from(form: AssignmentForm) -> AssignmentDraft:
    return AssignmentDraft(
        title=form.title.data,
        open_at=to_utc(form.open_at.data),
        due_at=to_utc(form.due_at.data),
        late_until=to_utc(form.late_until.data),
        late_credit=form.late_credit.data,
        max_attempts=form.max_attempts.data,
        score_policy=form.score_policy.data,
        points=form.points.data if form.points.data is not None else 100.0,
        canvas_id=form.canvas_id.data or None,
        problems=[
            ProblemChoice(row.problem_id.data, row.weight.data or 1.0)
            for _, _, row in sorted(
                (row.position.data if row.position.data is not None else 10**6, k, row)
                for k, row in enumerate(form.problems) if row.include.data)
        ],
    )


def _show_error(form: AssignmentForm, exc: ValidationError) -> None:
    field = getattr(form, exc.field, None)
    if field is not None and exc.field != "problems":
        field.errors = [*field.errors, exc.reason]
    else:
        form.form_errors.append(str(exc))


def _render_assignment_form(
    course: Course, form: AssignmentForm, assignment: Assignment | None = None
) -> tuple[str, int]:
    return (
        render_template(
            "instructor/assignment_form.html",
            course=course, form=form, bank=dict(get_bank(course).items()), assignment=assignment,
        ),
        400 if form.is_submitted() else 200,
    )


@bp.route("/<course_code>/assignments/new", methods=["GET", "POST"])
@role_required("instructor")
def new_assignment(course: Course) -> Response | tuple[str, int]:
    form = _assignment_form(course)
    if form.validate_on_submit():
        try:
            assignment = create_assignment(get_session(), course, _draft_from(form),
                                           get_bank(course))
        except ValidationError as exc:
            _show_error(form, exc)
        else:
            flash(f"Assignment {assignment.title!r} created.")
            return redirect(url_for("staff.course", course_code=course.code))
    return _render_assignment_form(course, form)


@bp.route("/<course_code>/assignments/<int:assignment_id>/edit", methods=["GET", "POST"])
@role_required("instructor")
def edit_assignment(course: Course, assignment_id: int) -> Response | tuple[str, int]:
    session = get_session()
    try:
        assignment = get_course_assignment(session, course, assignment_id)
    except NotFound as exc:
        abort(404, str(exc))
    form = _assignment_form(course, assignment)
    if form.validate_on_submit():
        try:
            update_assignment(session, assignment, _draft_from(form), get_bank(course))
        except ValidationError as exc:  # raised before anything is changed
            _show_error(form, exc)
        else:
            flash(f"Assignment {assignment.title!r} saved.")
            return redirect(url_for("staff.course", course_code=course.code))
    return _render_assignment_form(course, form, assignment)


@bp.route("/<course_code>/roster/import", methods=["GET", "POST"])
@role_required("instructor")
def import_roster_view(course: Course) -> Response | tuple[str, int]:
    form = RosterImportForm()
    errors: list[str] = []
    refusal = None
    if form.validate_on_submit():
        text = form.csv_text.data or ""
        upload = form.csv_file.data
        if upload is not None and getattr(upload, "filename", ""):
            try:
                text = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                errors.append("csv_file: the file is not UTF-8 text")
        if not errors and "\x00" in text:
            errors.append("csv_file: contains a NUL character (\\x00); is it a text file?")
        if not errors and not text.strip():
            errors.append("csv_file: upload a CSV file or paste its text")
        if not errors:
            session = get_session()
            try:
                result = import_roster(session, course, text,
                                       email_domain=form.email_domain.data or None,
                                       actor=current_user._get_current_object())
                # The links start with NABLA_BASE_URL, never the request's Host header.
                links = (new_account_links(session, result.created, site_url(), utcnow())
                         if result.created else None)
            except RosterError as exc:
                errors.extend(exc.errors)
            except SiteAddressUnknown as exc:
                session.rollback()  # all or nothing: no accounts without their links
                refusal = str(exc)
            else:
                flash(f"Roster imported: {result.summary()}.")
                if links is not None:
                    # Shown this once: the links are stored hashed.
                    return render_template("instructor/roster_links.html", course=course,
                                           links=links), 201
                return redirect(url_for("staff.course", course_code=course.code))
    status = 503 if refusal else 400 if form.is_submitted() else 200
    return (
        render_template("instructor/roster_import.html", course=course, form=form, errors=errors,
                        refusal=refusal),
        status,
    )


@bp.route("/<course_code>/roster/<int:user_id>/role", methods=["POST"])
@role_required("instructor")
def change_role_view(course: Course, user_id: int) -> Response:
    form = RoleForm()
    if not form.validate_on_submit():
        flash(f"role: {'; '.join(form.role.errors) or 'missing'}", "error")
    else:
        try:
            changed = change_role(get_session(), course, user_id, form.role.data,
                                  actor=current_user._get_current_object())
        except ServiceError as exc:
            flash(str(exc), "error")
        else:
            if isinstance(changed, StaffInvitation):
                flash(f"{changed.user.email} is invited to be {changed.role} in {course.code}: "
                      "the role is theirs once they accept the invitation on their dashboard.")
            else:
                flash(f"{changed.user.email} is now {changed.role} in {course.code}.")
    return redirect(url_for("staff.course", course_code=course.code))


@bp.route("/<course_code>/invitations/<int:invitation_id>/withdraw", methods=["POST"])
@role_required("instructor")
def withdraw_invitation_view(course: Course, invitation_id: int) -> Response:
    """Take back a pending staff invitation (the CSRF token is checked before the view)."""
    try:
        invitation = staff_invitations.withdraw(get_session(), course, invitation_id)
    except ServiceError as exc:
        flash(str(exc), "error")
    else:
        flash(f"The invitation of {invitation.user.email} to be {invitation.role} in "
              f"{course.code} is withdrawn.")
    return redirect(url_for("staff.course", course_code=course.code))


@bp.route("/<course_code>/roster/<int:user_id>/remove", methods=["POST"])
@role_required("instructor")
def unenroll_view(course: Course, user_id: int) -> Response:
    # The form is a button with a CSRF token; CSRFProtect checks it before the view runs.
    try:
        user = unenroll(get_session(), course, user_id)
    except ServiceError as exc:
        flash(str(exc), "error")
    else:
        flash(f"{user.email} was removed from {course.code}; their submissions are kept.")
    return redirect(url_for("staff.course", course_code=course.code))
