"""The staff gradebook under /staff/<course>/grades: the table, a student's problems,
overrides, extensions, exports, regrades and their progress."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from server.db import get_engine, get_session, reads_first
from server.models import Course, Job, SubmissionStatus, User, utcnow
from server.services import exports, gradebook, jobs, overrides, regrade
from server.services.assignments import get_course_assignment
from server.services.errors import NotFound, ServiceError, ValidationError
from server.services.feedback import annotated_lines
from server.services.submissions import problem_submissions
from server.web.access import end_transaction, role_required
from server.web.app import is_digits, query_id
from server.web.background import app_job_settings
from server.web.forms import (
    ExtensionForm,
    OverrideForm,
    RegradeForm,
    RemoveOverrideForm,
    to_local,
    to_utc,
)

bp = Blueprint("gradebook", __name__, url_prefix="/staff")
SORTS = ("name", "email", "section", "total")
DAY_TIME = "%a %Y-%m-%d %H:%M"  # with the weekday: a due date off by one day shows


def csv_response(session: Any, course: Course, fmt_raw: str | None,
                 assignment_id: int | None) -> Response:
    """The export as a streamed download (the page's and the API's: the same bytes)."""
    try:
        fmt = exports.clean_format(fmt_raw)
        book = gradebook.course_gradebook(session, course, assignment_id=assignment_id)
    except ValidationError as exc:
        abort(400, str(exc))
    except NotFound as exc:
        abort(404, str(exc))
    end_transaction()  # the rows are loaded: no transaction stays open while streaming
    name = exports.filename(book, fmt, assignment_id)
    return Response(exports.export_csv(book, fmt), content_type=exports.CONTENT_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def job_settings() -> dict[str, Any]:
    return app_job_settings(current_app)


@bp.route("/<course_code>/grades")
@role_required("ta", "instructor")
def grades(course: Course) -> str:
    session = get_session()
    section = request.args.get("section")
    book = gradebook.course_gradebook(session, course, section=section)
    sort = request.args.get("sort", "name")
    descending = request.args.get("desc") == "1"
    notes = overrides.course_overrides(
        session, course, [s.user_id for s in book.students] if section else None)
    rows = [_row(book, s, notes) for s in book.students]
    keys = {"name": lambda r: r["student"].name.casefold(),
            "email": lambda r: r["student"].email,
            "section": lambda r: r["student"].section,
            "total": lambda r: r["earned"]}
    if sort.startswith("a") and is_digits(sort[1:]):
        index = next((i for i, a in enumerate(book.assignments) if a.id == int(sort[1:])), None)
        if index is not None:
            keys[sort] = lambda r: -1.0 if r["cells"][index] is None else r["cells"][index]
    if sort not in keys:
        abort(400, f"sort: {sort!r} is not one of {', '.join(SORTS)} or a<assignment id>")
    rows.sort(key=keys[sort], reverse=descending)
    sections = gradebook.course_gradebook(session, course).sections if section else book.sections
    regrade_form = RegradeForm(formdata=None)
    end_transaction()
    return render_template("gradebook/grades.html", course=course, book=book, rows=rows,
                           any_override=any(m for r in rows for m in r["overrides"]),
                           sort=sort, descending=descending, section=section,
                           sections=sections, regrade_form=regrade_form)


def _row(book: gradebook.Gradebook, student: gradebook.Student,
         notes: dict[tuple[int, int], overrides.OverrideNote]) -> dict[str, Any]:
    uid = student.user_id
    cells = [book.points(uid, a) for a in book.assignments]
    earned, possible = book.total(uid)
    # Per assignment, its problems whose score staff set: the page marks those cells.
    marks = [[{"ap": ap, "note": notes[(uid, ap.id)], "computed": book.cell(uid, ap.id).computed}
              for ap in a.problems if (uid, ap.id) in notes] for a in book.assignments]
    return {"student": student, "cells": cells, "earned": earned, "possible": possible,
            "overrides": marks}


@bp.route("/<course_code>/grades.csv")
@role_required("ta", "instructor")
def grades_csv(course: Course) -> Response:
    return csv_response(get_session(), course, request.args.get("format"),
                        query_id("assignment"))


@bp.route("/<course_code>/grades/students/<int:user_id>")
@role_required("ta", "instructor")
def student(course: Course, user_id: int) -> str:
    return _render_student(course, user_id)


def _render_student(course: Course, user_id: int, *, forms: dict[str, Any] | None = None,
                    status: int = 200) -> Any:
    session = get_session()
    book = gradebook.course_gradebook(session, course, user_id=user_id)
    if not book.students:
        abort(404, f"user {user_id} is not a student of {course.code}")
    extensions = overrides.course_extensions(session, course)
    user = session.get(User, user_id)
    problems = []
    for assignment in book.assignments:
        for ap in assignment.problems:
            cell = book.cell(user_id, ap.id)
            subs = problem_submissions(session, user, ap) \
                if cell.attempts or cell.last_submission_at else []
            last = next((s for s in subs if s.status != SubmissionStatus.REFUSED), None)
            problems.append({
                "assignment": assignment, "ap": ap, "cell": cell, "last": last,
                "lines": annotated_lines(last.answer, last.result) if last else [],
                "history": overrides.override_history(session, user_id, ap.id)})
    ext_forms = {}
    for assignment in book.assignments:
        extension = extensions.get((user_id, assignment.id))
        form = (forms or {}).get(f"ext{assignment.id}") or ExtensionForm(
            formdata=None,
            due_at=to_local(extension.due_at if extension else assignment.due_at),
            late_until=to_local(extension.late_until if extension else assignment.late_until))
        ext_forms[assignment.id] = form.with_ids(f"a{assignment.id}")  # one form per assignment
    end_transaction()
    return render_template(
        "gradebook/student.html", course=course, book=book, student=book.students[0],
        problems=problems, extensions=extensions, ext_forms=ext_forms,
        override_form=(forms or {}).get("override") or OverrideForm(formdata=None),
        remove_form=RemoveOverrideForm(formdata=None), day_time=DAY_TIME), status


def _back(course: Course, user_id: int) -> Any:
    return redirect(url_for("gradebook.student", course_code=course.code, user_id=user_id))


@bp.route("/<course_code>/grades/students/<int:user_id>/problems/<int:ap_id>/override",
          methods=["POST"])
@role_required("ta", "instructor")
def set_override(course: Course, user_id: int, ap_id: int) -> Any:
    form = OverrideForm()
    if not form.validate_on_submit():
        return _render_student(course, user_id, forms={"override": form}, status=400)
    try:
        overrides.set_override(get_session(), course, user_id=user_id,
                               assignment_problem_id=ap_id, score=form.score.data,
                               reason=form.reason.data, actor=current_user, now=utcnow())
    except ValidationError as exc:
        getattr(form, exc.field).errors.append(exc.reason)
        return _render_student(course, user_id, forms={"override": form}, status=400)
    except NotFound as exc:
        abort(404, str(exc))
    flash("Score overridden (recorded with your reason).")
    return _back(course, user_id)


@bp.route("/<course_code>/grades/students/<int:user_id>/problems/<int:ap_id>/override/remove",
          methods=["POST"])
@role_required("ta", "instructor")
def remove_override(course: Course, user_id: int, ap_id: int) -> Any:
    form = RemoveOverrideForm()
    try:
        if not form.validate_on_submit():
            raise ValidationError("reason", "is required: say why the override is removed")
        overrides.remove_override(get_session(), course, user_id=user_id,
                                  assignment_problem_id=ap_id, reason=form.reason.data,
                                  actor=current_user, now=utcnow())
    except ServiceError as exc:
        flash(str(exc), "error")
    else:
        flash("Override removed: the computed score counts again.")
    return _back(course, user_id)


@bp.route("/<course_code>/grades/students/<int:user_id>/assignments/<int:assignment_id>/"
          "extension", methods=["POST"])
@role_required("ta", "instructor")
def set_extension(course: Course, user_id: int, assignment_id: int) -> Any:
    session = get_session()
    form = ExtensionForm()
    try:
        assignment = get_course_assignment(session, course, assignment_id)
        if not form.validate_on_submit():
            return _render_student(course, user_id, forms={f"ext{assignment_id}": form},
                                   status=400)
        extension = overrides.set_extension(
            session, course, assignment, user_id=user_id, due_at=to_utc(form.due_at.data),
            late_until=to_utc(form.late_until.data), actor=current_user)
    except ValidationError as exc:
        getattr(form, exc.field).errors.append(exc.reason)
        return _render_student(course, user_id, forms={f"ext{assignment_id}": form},
                               status=400)
    except NotFound as exc:
        abort(404, str(exc))
    when = current_app.jinja_env.filters["localtime"]  # the site's zone, as on every page
    late = (f", late until {when(extension.late_until, DAY_TIME)}" if extension.late_until
            else ", no late period")
    flash(f"Extension on {assignment.title!r} saved: due {when(extension.due_at, DAY_TIME)}"
          f"{late}.")
    return _back(course, user_id)


@bp.route("/<course_code>/grades/students/<int:user_id>/assignments/<int:assignment_id>/"
          "extension/remove", methods=["POST"])
@role_required("ta", "instructor")
def remove_extension(course: Course, user_id: int, assignment_id: int) -> Any:
    session = get_session()
    try:
        assignment = get_course_assignment(session, course, assignment_id)
        overrides.remove_extension(session, course, assignment, user_id=user_id)
    except ServiceError as exc:
        flash(str(exc), "error")
    else:
        flash("Extension removed: the assignment's dates apply again.")
    return _back(course, user_id)


# --- regrades and their jobs ---------------------------------------------------------------


@bp.route("/<course_code>/grades/regrade", methods=["POST"])
@role_required("instructor")
def start_regrade(course: Course) -> Any:
    form = RegradeForm()
    target = form.target.data or ""
    scope: dict[str, Any] = {}
    if target.startswith("a") and is_digits(target[1:]):
        scope["assignment_id"] = int(target[1:])
    elif target.startswith("p") and len(target) > 1:
        scope["problem_id"] = target[1:]
    if not form.validate_on_submit() or not scope:
        flash("regrade: choose an assignment or a problem", "error")
        return redirect(url_for("gradebook.grades", course_code=course.code))
    session = get_session()
    try:
        job = regrade.start_regrade(session, course, actor=current_user,
                                    reason=form.reason.data, redraw=form.redraw.data,
                                    chunk_size=job_settings()["chunk"], **scope)
    except ValidationError as exc:
        flash(str(exc), "error")
        return redirect(url_for("gradebook.grades", course_code=course.code))
    session.commit()  # the workers read the row
    jobs.dispatch(get_engine(), job, job_settings())
    return redirect(url_for("gradebook.job", course_code=course.code, job_id=job.id))


def _job(course: Course, job_id: int) -> Job:
    session = get_session()
    try:
        job = jobs.get_job(session, job_id, course)
    except NotFound as exc:
        abort(404, str(exc))
    return jobs.check_stale(session, job, current_app.config["NABLA_JOBS"]["stale_s"])


@bp.route("/<course_code>/jobs")
@role_required("ta", "instructor")
@reads_first
def jobs_list(course: Course) -> str:
    stale_s = current_app.config["NABLA_JOBS"]["stale_s"]
    session = get_session()
    found = [jobs.check_stale(session, job, stale_s) for job in jobs.course_jobs(session, course)]
    end_transaction()
    return render_template("gradebook/jobs.html", course=course, jobs=found)


@bp.route("/<course_code>/jobs/<int:job_id>")
@role_required("ta", "instructor")
@reads_first
def job(course: Course, job_id: int) -> str:
    found = _job(course, job_id)
    progress = jobs.job_progress(found)
    end_transaction()
    return render_template("gradebook/job.html", course=course, job=found, progress=progress)


@bp.route("/<course_code>/jobs/<int:job_id>.json")
@role_required("ta", "instructor")
def job_json(course: Course, job_id: int) -> Response:
    return jsonify(jobs.job_progress(_job(course, job_id)))


@bp.route("/<course_code>/jobs/<int:job_id>/restart", methods=["POST"])
@role_required("instructor")
def restart_job(course: Course, job_id: int) -> Any:
    found = _job(course, job_id)
    try:
        jobs.restart_job(get_session(), found)
    except ServiceError as exc:
        flash(str(exc), "error")
    else:
        get_session().commit()
        jobs.dispatch(get_engine(), found, job_settings())
        flash(f"Job {job_id} restarted.")
    return redirect(url_for("gradebook.job", course_code=course.code, job_id=job_id))

