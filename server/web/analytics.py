"""Mistake analytics for course staff under /staff/<course>/analytics: per problem and per
assignment, each chart (server-side SVG, web.charts) beside the table of its numbers,
every number a link to the submissions behind it, every table a CSV download."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, abort, g, render_template, url_for

from server.db import get_session
from server.models import Course
from server.services import analytics, csvfile
from server.services.assignments import course_assignments
from server.services.errors import NotFound
from server.web import charts
from server.web.access import end_transaction, role_required
from server.web.app import SECURITY_HEADERS, query_id

bp = Blueprint("analytics", __name__, url_prefix="/staff")


@dataclasses.dataclass
class Table:
    """A table of the page, and the same rows as a CSV download."""

    name: str  # the CSV's name
    caption: str
    headers: list[str]
    rows: list[list[Any]]
    links: list[str | None]  # per row: the submissions behind its count
    link_column: int = -1  # the cell that links

    def csv(self) -> str:
        return csvfile.text([self.headers, *self.rows])


@dataclasses.dataclass
class Figure:
    title: str
    svg: Any  # Markup, or None when there is nothing to draw
    table: Table


def _nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def _with_nonce(response: Response) -> Response:
    """The site's policy, plus the nonce of the charts' <style> elements."""
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    response.headers["Content-Security-Policy"] = (
        f"{policy}; style-src 'self' 'nonce-{_nonce()}'")
    return response


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"


BIN_LABELS = [f"{10 * k}–{10 * k + 10}%" for k in range(analytics.BINS)]


# --- pages -------------------------------------------------------------------------


@bp.route("/<course_code>/analytics")
@role_required("ta", "instructor")
def index(course: Course) -> str:
    assignments = course_assignments(get_session(), course)
    end_transaction()
    return render_template("analytics/index.html", course=course, assignments=assignments)


@bp.route("/<course_code>/analytics/problems/<problem_id>")
@role_required("ta", "instructor")
def problem(course: Course, problem_id: str) -> Response:
    assignment_id = query_id("assignment")
    data = _problem_data(course, problem_id, assignment_id)
    figures = problem_figures(course, data, _nonce())
    response = Response(render_template(
        "analytics/problem.html", course=course, data=data, figures=figures,
        assignment_id=assignment_id))
    return _with_nonce(response)


@bp.route("/<course_code>/analytics/problems/<problem_id>/<table>.csv")
@role_required("ta", "instructor")
def problem_csv(course: Course, problem_id: str, table: str) -> Response:
    assignment_id = query_id("assignment")
    data = _problem_data(course, problem_id, assignment_id)
    figures = problem_figures(course, data, None)
    part = f"-assignment-{assignment_id}" if assignment_id is not None else ""
    return _csv(figures, table, f"{course.code}-{problem_id}{part}")


@bp.route("/<course_code>/analytics/assignments/<int:assignment_id>")
@role_required("ta", "instructor")
def assignment(course: Course, assignment_id: int) -> Response:
    data = _assignment_data(course, assignment_id)
    figures = assignment_figures(course, data, _nonce())
    return _with_nonce(Response(render_template(
        "analytics/assignment.html", course=course, data=data, figures=figures)))


@bp.route("/<course_code>/analytics/assignments/<int:assignment_id>/<table>.csv")
@role_required("ta", "instructor")
def assignment_csv(course: Course, assignment_id: int, table: str) -> Response:
    data = _assignment_data(course, assignment_id)
    figures = assignment_figures(course, data, None)
    return _csv(figures, table, f"{course.code}-assignment-{assignment_id}")


def _problem_data(course: Course, problem_id: str, assignment_id: int | None) -> dict:
    try:
        data = analytics.problem_analytics(get_session(), course, problem_id, assignment_id)
    except NotFound as exc:
        abort(404, str(exc))
    end_transaction()
    return data


def _assignment_data(course: Course, assignment_id: int) -> dict:
    try:
        data = analytics.assignment_analytics(get_session(), course, assignment_id)
    except NotFound as exc:
        abort(404, str(exc))
    end_transaction()
    return data


def _csv(figures: list[Figure], name: str, prefix: str) -> Response:
    table = next((f.table for f in figures if f.table.name == name), None)
    if table is None:
        names = ", ".join(f.table.name for f in figures)
        abort(404, f"table: no table {name!r}; the tables are {names}")
    return Response(table.csv(), content_type=csvfile.CONTENT_TYPE, headers={
        "Content-Disposition": f'attachment; filename="{prefix}-{name}.csv"'})


# --- what the pages show -------------------------------------------------------------


def _submissions_link(course: Course, assignments: list[int], **filters: Any
                      ) -> Callable[..., str]:
    """url_for the submissions list (the assignment's when there is one) with filters."""
    def link(**more: Any) -> str:
        args = {k: v for k, v in {"students": 1, **filters, **more}.items() if v is not None}
        if len(assignments) == 1:
            return url_for("staff.submissions", course_code=course.code,
                           assignment_id=assignments[0], **args)
        return url_for("staff.course_submissions", course_code=course.code, **args)
    return link


def _draw(nonce: str | None, make: Callable[[str], Any], drawable: bool = True) -> Any:
    return make(nonce) if nonce is not None and drawable else None


def problem_figures(course: Course, data: dict, nonce: str | None) -> list[Figure]:
    """The problem page's charts and tables (``nonce`` None: the tables only, for CSV)."""
    link = _submissions_link(course, data["assignments"], problem=data["problem"])
    figures = []
    students, total, graded = data["students"], data["submissions"], data["graded"]
    figures.append(Figure("Students and submissions", None, Table(
        "summary", "Students and submissions", ["what", "count"],
        [["students started", students["started"]],
         ["students submitted", students["submitted"]],
         ["students at 100%", students["reached_100"]],
         ["submissions", total], ["graded submissions", graded]],
        [None, link(), link(full=1), link(), link(status="graded")])))

    figures.append(_score_figure(
        link, data["score_histogram"], nonce, "Final scores", "Final scores (students)",
        "Final scores: students per score band (the gradebook's score)"))

    attempts = data["attempts_to_full"]
    attempt_links = [link(attempt=a, full=1) for a in attempts]
    figures.append(Figure(
        "Attempts until 100%", _draw(nonce, lambda n: charts.bar(
            "Attempts until 100%", [str(a) for a in attempts], list(attempts.values()),
            attempt_links, n, y_title="students"), bool(attempts)),
        Table("attempts", "Attempts until 100% (students)", ["attempt", "students"],
              [[a, c] for a, c in attempts.items()], attempt_links)))

    verdicts = data["gradient_verdicts"]
    rows, links = [], []
    for gradient, counts in verdicts.items():
        whole = sum(counts.values())
        for verdict, count in counts.items():
            rows.append([gradient, verdict, count, _percent(count, whole)])
            links.append(link(gradient=gradient, verdict=verdict))
    names = sorted({v for counts in verdicts.values() for v in counts},
                   key=lambda v: (v != "correct", v))
    series = {v: [100 * counts.get(v, 0) / max(1, sum(counts.values()))
                  for counts in verdicts.values()] for v in names}
    series_links = {v: [link(gradient=gr, verdict=v) if counts.get(v) else None
                        for gr, counts in verdicts.items()] for v in names}
    figures.append(Figure(
        "Verdicts per gradient", _draw(nonce, lambda n: charts.stacked_shares(
            "Verdicts per gradient (% of graded submissions)", list(verdicts), series,
            series_links, n), bool(verdicts)),
        Table("verdicts", "Verdicts per gradient", ["gradient", "verdict", "submissions",
                                                    "share"], rows, links, link_column=2)))

    mistakes = data["first_mistake_lines"]
    step_labels = [f"step {e['step']} ({e['target']})" if e["step"] is not None
                   else f"{e['target']} (not in the model)" for e in mistakes.values()]
    step_links = [link(step=e["step"]) if e["step"] is not None else None
                  for e in mistakes.values()]
    rows, links = [], []
    for label, entry in zip(step_labels, mistakes.values()):
        for line in entry["lines"]:
            rows.append([label, entry["submissions"], entry["students"], line["text"],
                         line["students"], line["submissions"]])
            links.append(link(line=line["text"]))
    figures.append(Figure(
        "Where the first mistake is", _draw(nonce, lambda n: charts.bar(
            "First mistakes by step of the model solution",
            step_labels, [e["submissions"] for e in mistakes.values()], step_links, n,
            y_title="submissions"), bool(mistakes)),
        Table("first_mistakes", "First mistakes: the step, and the commonest wrong lines",
              ["step", "submissions", "students", "wrong line (normalised)",
               "students who wrote it", "submissions with it"], rows, links)))

    rows, links = [], []
    for name, options in data["by_choice"].items():
        for label, entry in options.items():
            top = ", ".join(f"{v} {c}" for v, c in list(entry["mistakes"].items())[:3])
            mean = entry["mean_score"]
            rows.append([name, label, entry["submissions"],
                         "" if mean is None else f"{100 * mean:.1f}%", entry["full"], top])
            links.append(link(choice=f"{name}:{label}", status="graded"))
    labels = [f"{r[0]}={r[1]}" for r in rows]
    means = [0.0 if not r[3] else float(r[3][:-1]) for r in rows]
    figures.append(Figure(
        "By structural choice", _draw(nonce, lambda n: charts.bar(
            "Mean score by structural choice (%)", labels, means, links, n,
            y_title="mean score %", value_labels=[f"{m:.1f}%" for m in means]), bool(rows)),
        Table("by_choice", "By structural choice: graded submissions, mean score, at 100%, "
              "commonest mistakes", ["choice", "option", "graded submissions", "mean score",
                                     "at 100%", "commonest mistakes"], rows, links,
              link_column=2)))
    return figures


def _score_figure(link: Any, histogram: list[int], nonce: str | None, heading: str,
                  chart_title: str, caption: str) -> Figure:
    """Students per score band, as a chart and a table, each band linking to the
    graded submissions in it."""
    bins_links = [link(bin=k) for k in range(analytics.BINS)]
    return Figure(
        heading, _draw(nonce, lambda n: charts.bar(
            chart_title, BIN_LABELS, histogram, bins_links, n, y_title="students")),
        Table("scores", caption, ["score band", "students", "graded submissions in the band"],
              [[label, count, "list"] for label, count in zip(BIN_LABELS, histogram)],
              bins_links))


def assignment_figures(course: Course, data: dict, nonce: str | None) -> list[Figure]:
    link = _submissions_link(course, [data["assignment"]])
    figures = []
    figures.append(_score_figure(
        link, data["score_histogram"], nonce, "Score distribution",
        "Assignment scores (students)", "Assignment scores: students per score band"))
    timeline = list(data["timeline"])
    due = data["due_date"]
    if due not in {day["date"] for day in timeline}:
        before = [day for day in timeline if day["date"] < due]
        last = before[-1] if before else {"submissions_total": 0, "students_full_total": 0}
        timeline.append({"date": due, "submissions": 0,
                         "submissions_total": last["submissions_total"],
                         "students_full_total": last["students_full_total"]})
        timeline.sort(key=lambda day: day["date"])
    days = [day["date"] + (" (due)" if day["date"] == due else "") for day in timeline]
    day_links = [link(day=day["date"]) for day in timeline]
    figures.append(Figure(
        "Completion over time", _draw(nonce, lambda n: charts.lines(
            "Submissions and students at 100% (cumulative), due date marked", days,
            {"submissions": [d["submissions_total"] for d in timeline],
             "students at 100%": [d["students_full_total"] for d in timeline]},
            day_links, n), bool(data["timeline"])),
        Table("timeline", "Completion over time (UTC days)",
              ["day", "submissions that day", "submissions so far",
               "students at 100% on every problem so far"],
              [[d, t["submissions"], t["submissions_total"], t["students_full_total"]]
               for d, t in zip(days, timeline)], day_links, link_column=1)))
    figures.append(Figure("Late submissions", None, Table(
        "late", "Late share of graded submissions", ["graded", "late", "late share"],
        [[data["graded"], data["late"], _percent(data["late"], data["graded"])]],
        [link(late=1)], link_column=1)))
    figures.append(Figure("Problems", None, Table(
        "problems", "Per problem", ["problem", "submissions", "graded",
                                    "students submitted", "students at 100%"],
        [[p["problem"], p["submissions"], p["graded"], p["students_submitted"],
          p["students_100"]] for p in data["problems"]],
        [link(problem=p["problem"]) for p in data["problems"]], link_column=1)))
    return figures
