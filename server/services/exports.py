"""Grade exports as CSV, streamed: the long format and Canvas's gradebook import.

Both read ``services.gradebook.course_gradebook`` (the numbers of the
gradebook page) and yield the file in pieces of a few hundred rows; the
gradebook page, ``nabla grades export`` and the API write exactly these
bytes.

* long: one row per student x assignment problem, header ``LONG_HEADER``;
  ``score`` in [0, 1] after policy, late credit and override (empty before
  any score), ``points`` the problem's share of the assignment's points,
  ``late``/``overridden`` as ``true``/``false``, times ISO 8601 UTC.
* canvas: ``Student,ID,SIS User ID,SIS Login ID,Section``, then one column per
  assignment titled ``Title (canvas_id)`` (or ``Title`` without an id); a
  ``Points Possible`` row; then the students by name, with the points each
  earned (empty before any score).

The rows are written by ``services.csvfile``, the one CSV writer: a text cell
that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, a tab, a
line break first) is written with a leading ``'`` (CSV injection).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from server.services import csvfile
from server.services.errors import ValidationError
from server.services.gradebook import Gradebook, problem_points

FORMATS = ("long", "canvas")
LONG_HEADER = ("email,name,sis_user_id,section,assignment_id,assignment,problem,weight,score,"
               "points,attempts,late,overridden,last_submission_at").split(",")
CANVAS_HEADER = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
CONTENT_TYPE = csvfile.CONTENT_TYPE


def clean_format(raw: str | None) -> str:
    value = (raw or "long").strip().lower()
    if value not in FORMATS:
        raise ValidationError("format", f"{raw!r} is not one of {', '.join(FORMATS)}")
    return value


def number(value: float | None, places: int) -> str:
    """Fixed decimals without trailing zeros ('' for None): 0.5, 83.33, 100."""
    if value is None:
        return ""
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def iso_utc(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    if value.utcoffset() != dt.timedelta(0):
        value = value.astimezone(dt.UTC)
    return value.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def filename(gradebook: Gradebook, fmt: str, assignment_id: int | None = None) -> str:
    part = f"-assignment-{assignment_id}" if assignment_id is not None else ""
    return f"{gradebook.course.code}{part}-grades-{fmt}.csv"


def export_csv(gradebook: Gradebook, fmt: str) -> Iterator[str]:
    """The CSV of ``fmt`` ('long' or 'canvas'), in pieces."""
    rows = long_rows(gradebook) if fmt == "long" else canvas_rows(gradebook)
    return csvfile.pieces(rows)


def long_rows(gradebook: Gradebook) -> Iterator[Sequence[str]]:
    yield LONG_HEADER
    problems = [(a, ap, number(ap.weight, 6), number(problem_points(a, ap), 6),
                 str(a.id), a.title, ap.problem_id)
                for a in gradebook.assignments for ap in a.problems]
    for student in gradebook.students:
        person = (student.email, student.name, student.sis_user_id, student.section)
        for _, ap, weight, points, assignment_id, title, problem in problems:
            cell = gradebook.cell(student.user_id, ap.id)
            yield (*person, assignment_id, title, problem, weight, number(cell.score, 6),
                   points, str(cell.attempts), "true" if cell.late else "false",
                   "true" if cell.overridden else "false", iso_utc(cell.last_submission_at))


def canvas_column(title: str, canvas_id: str | None) -> str:
    return f"{title} ({canvas_id})" if canvas_id else title


def canvas_rows(gradebook: Gradebook) -> Iterator[Sequence[str]]:
    assignments = gradebook.assignments
    yield [*CANVAS_HEADER, *(canvas_column(a.title, a.canvas_id) for a in assignments)]
    yield ["Points Possible", "", "", "", "", *(number(a.points, 2) for a in assignments)]
    for s in gradebook.students:
        yield [s.name, s.canvas_user_id, s.sis_user_id, s.sis_login_id, s.section,
               *(number(gradebook.points(s.user_id, a), 2) for a in assignments)]
