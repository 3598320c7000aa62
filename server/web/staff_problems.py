"""The problem editor for course staff (TAs and instructors), under
/staff/<course_code>/problems: the course's problems and the shared ones, the
editor (validate, diff, save), previews by seed with "try an answer", draw
statistics, versions, and "copy to this course". Plain HTML forms; the answer
box script (static/answer.js) adds line numbers and the Tab key.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from server.db import get_session, reads_first
from server.models import Course, Problem
from server.services import bank, workspace
from server.services.errors import Conflict, Forbidden, NotFound, Unavailable, ValidationError
from server.web.access import end_transaction, role_required

bp = Blueprint("staff_problems", __name__, url_prefix="/staff")

STAFF = ("ta", "instructor")


def _problem(course: Course, key: str, *, editable: bool = False) -> Problem:
    session = get_session()
    try:
        if editable:
            return bank.editable_problem(session, course, key)
        return bank.staff_problem(session, course, key)
    except NotFound as exc:
        abort(404, str(exc))
    except Forbidden as exc:
        abort(403, str(exc))


def _seed(value: Any) -> int:
    try:
        seed = int(value if value not in (None, "") else 0)
    except (TypeError, ValueError):
        abort(400, f"seed: {value!r} is not a whole number")
    if not 0 <= seed < 2**31:
        abort(400, f"seed: must be from 0 to {2**31 - 1}")
    return seed


@bp.route("/<course_code>/problems")
@role_required(*STAFF)
def index(course: Course) -> str:
    rows = bank.course_problems(get_session(), course)
    end_transaction()
    return render_template("staff_problems/index.html", course=course, rows=rows)


@bp.route("/<course_code>/problems/<key>")
@role_required(*STAFF)
def show(course: Course, key: str) -> str:
    problem = _problem(course, key)
    versions = bank.problem_versions(get_session(), problem)
    own = bank.course_problems(get_session(), course)
    used_by = next((row.used_by for row in own if row.key == key), [])
    end_transaction()
    return render_template("staff_problems/show.html", course=course, problem=problem,
                           versions=versions, used_by=used_by)


@bp.route("/<course_code>/problems/<key>/spec.toml")
@role_required(*STAFF)
def export(course: Course, key: str) -> Response:
    problem = _problem(course, key)
    number = request.args.get("version", type=int)
    try:
        text = bank.get_version(get_session(), problem, number).spec_text
    except NotFound as exc:
        abort(404, str(exc))
    return Response(text, mimetype="text/plain; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{problem.spec_id}.toml"'})


@bp.route("/<course_code>/problems/<key>/copy", methods=["POST"])
@role_required(*STAFF)
@reads_first
def copy(course: Course, key: str) -> Response:
    try:
        saved = bank.copy_to_course(get_session(), course, key, current_user)
    except NotFound as exc:
        abort(404, str(exc))
    except Conflict as exc:
        abort(409, str(exc))
    flash(f"Copied to {course.code}: version {saved.version.version} of "
          f"{saved.version.problem_id}.", "success")
    return redirect(url_for(".edit", course_code=course.code, key=saved.version.problem_id))


# --- the editor ------------------------------------------------------------------------


def _render_editor(course: Course, problem: Problem | None, text: str, *,
                   errors: list[dict[str, Any]] | None = None, diff: list[str] | None = None,
                   stats: Any = None, checked: bool = False, status: int = 200) -> Any:
    by_line: dict[int, list[str]] = {}
    general = []
    for error in errors or []:
        if error.get("line"):
            by_line.setdefault(int(error["line"]), []).append(error["message"])
        else:
            general.append(error["message"])
    lines = [{"number": n, "text": line, "messages": by_line.get(n, [])}
             for n, line in enumerate(text.split("\n"), 1)]
    general += [f"line {n}: {m}" for n, ms in by_line.items() if n > len(lines) for m in ms]
    end_transaction()
    return render_template(
        "staff_problems/edit.html", course=course, problem=problem, text=text,
        errors=errors or [], lines=lines, general=general, diff=diff, stats=stats,
        checked=checked), status


@bp.route("/<course_code>/problems/new", methods=["GET", "POST"])
@role_required(*STAFF)
@reads_first
def new(course: Course) -> Any:
    if request.method == "GET":
        return _render_editor(course, None, bank.EXAMPLE_SPEC)
    return _editor_action(course, None)


@bp.route("/<course_code>/problems/<key>/edit", methods=["GET", "POST"])
@role_required(*STAFF)
@reads_first
def edit(course: Course, key: str) -> Any:
    problem = _problem(course, key, editable=True)
    if request.method == "GET":
        text = bank.get_version(get_session(), problem, None).spec_text
        return _render_editor(course, problem, text)
    return _editor_action(course, problem)


def _editor_action(course: Course, problem: Problem | None) -> Any:
    """Validate (errors at their lines), review (the diff against the latest
    version), save (a new version if the text validates and differs; an unchanged
    text is not checked again), or draw statistics of the draft. Every check runs
    in the judge (services.bank)."""
    text = request.form.get("spec", "")
    action = request.form.get("action", "validate")
    session = get_session()
    previous = None if problem is None else bank.get_version(session, problem, None)
    try:
        known = (bank.known_version(session, text, course=course,
                                    key=None if problem is None else problem.id)
                 if action == "save" else None)
    except bank.SpecRefused as exc:  # not a text at all (empty, too long)
        return _render_editor(course, problem, text, errors=exc.errors, status=422)
    if known is not None:
        end_transaction()
        flash(f"Unchanged: this is version {known.version} of {known.problem_id}.", "success")
        return redirect(url_for(".show", course_code=course.code, key=known.problem_id))
    end_transaction()  # the checks below take a while; no transaction meanwhile
    try:
        spec = bank.validate_spec(text)
        if problem is not None and spec.id != problem.spec_id:
            raise bank.SpecRefused([{"line": _id_line(text), "message": (
                f"id: {spec.id!r} is not this problem's id {problem.spec_id!r}; to make "
                "another problem, use 'New problem'")}])
        stats = bank.draw_statistics(text) if action == "stats" else None
    except bank.SpecRefused as exc:
        return _render_editor(course, problem, text, errors=exc.errors, status=422)
    except Unavailable as exc:  # busy, or our failure: the text stays in the editor
        return _render_editor(course, problem, text, errors=[
            {"line": None, "message": str(exc)}], status=503)
    diff = bank.text_diff(previous.spec_text if previous else "", bank.clean_spec_text(text),
                          f"version {previous.version}" if previous else "(new)", "this draft")
    if action != "save":
        return _render_editor(course, problem, text, diff=diff, stats=stats, checked=True)
    try:
        saved = bank.save_version(session, text, course=course, author=current_user,
                                  origin="editor", spec=spec,
                                  expect_key=None if problem is None else problem.id)
    except bank.SpecRefused as exc:
        return _render_editor(course, problem, text, errors=exc.errors, status=422)
    except Conflict as exc:
        abort(409, str(exc))
    key = saved.version.problem_id
    flash(f"Saved version {saved.version.version} of {key}." if saved.created
          else f"Unchanged: this is version {saved.version.version} of {key}.", "success")
    return redirect(url_for(".show", course_code=course.code, key=key))


def _id_line(text: str) -> int | None:
    from server.engine.spec import key_line

    return key_line(text, "id")


# --- previews ---------------------------------------------------------------------------


@bp.route("/<course_code>/problems/draft/preview", methods=["POST"])
@role_required(*STAFF)
@reads_first
def preview_draft(course: Course) -> Any:
    """A draft of a new problem (``spec`` in the form), previewed without saving."""
    if not request.form.get("spec"):
        abort(400, "spec: is required (the draft to preview)")
    return _preview(course, None)


@bp.route("/<course_code>/problems/<key>/preview", methods=["GET", "POST"])
@role_required(*STAFF)
@reads_first
def preview(course: Course, key: str) -> Any:
    """Seed N of a saved version (``?version=``, default the latest) or of a draft
    (``spec`` in the form), as the student sees it, with the references, the
    model solution and, with ``answer``, its grade as a submission's."""
    return _preview(course, _problem(course, key))


def _preview(course: Course, problem: Problem | None) -> Any:
    source = request.form if request.method == "POST" else request.args
    seed = _seed(source.get("seed"))
    draft = request.form.get("spec") if request.method == "POST" else None
    version = spec_hash = None
    if not draft:
        assert problem is not None
        try:
            version = bank.get_version(get_session(), problem, source.get("version", type=int))
        except NotFound as exc:
            abort(404, str(exc))
        number, text, spec_hash = version.version, version.spec_text, version.spec_hash
    end_transaction()
    try:
        answer = request.form.get("answer") if request.method == "POST" else None
        result = bank.preview(draft or text, seed, answer, spec_hash=spec_hash)
    except ValidationError as exc:  # the answer text itself: too long, NUL, ...
        abort(400, str(exc))
    except bank.SpecRefused as exc:
        editable = problem if problem is not None and problem.course_id else None
        return _render_editor(course, editable, draft or "", errors=exc.errors, status=422)
    spec = result.spec
    feedback = None if result.outcome is None else bank.preview_feedback(
        result.outcome, answer or "")
    reference = result.document.get("reference") or {}
    references = workspace.formatted_references(spec, reference)
    # What the student's page gets for this seed (student.py's _render_problem).
    variables = workspace.variable_rows(spec, result.public)
    return render_template(
        "staff_problems/preview.html", course=course, problem=problem, p=result,
        version=None if draft else number, draft=draft or None, answer=answer or "",
        variables=variables, forward=workspace.forward_lines(spec, result.public),
        values=workspace.formatted_values(spec, result.public, [v.name for v in variables]),
        constants=workspace.constant_uses(spec, result.public),
        references=references,
        feedback=feedback, now=dt.datetime.now(dt.UTC))
