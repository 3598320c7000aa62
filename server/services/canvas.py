"""Rosters from Canvas: its gradebook export CSV, recognised by its header.

Canvas's gradebook export starts ``Student,ID,SIS User ID,SIS Login ID``
(newer exports add ``Integration ID``), then ``Section`` and one column per
assignment; a ``Points Possible`` row (and, in some exports, rows such as
``Manual Posting``) follow the header. Each student row gives the sortable
name, the Canvas user id, the SIS user id, the SIS login id and the sections.

The import creates accounts (without passwords: see services.invites) and
student enrollments, and stores the Canvas id, the SIS ids and the section on
the enrollment, so a Canvas export (services.exports) goes back into the same
Canvas course. A student is matched by Canvas id in the course first, then by
email. The email is the SIS login id when it is one, else ``login@domain``
with ``email_domain``; a row without either is an error naming its line.
Existing names and roles are left alone. Importing the same file twice
changes nothing.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import Course, Enrollment, Role, User
from server.services.accounts import clean_name, create_user, normalize_email
from server.services.errors import ValidationError

if TYPE_CHECKING:
    from server.services.courses import RosterImportResult

HEADER = ["student", "id", "sis user id", "sis login id"]
FIELDS = ("section", "canvas_user_id", "sis_user_id", "sis_login_id")
MAX_CELL = 200


def is_canvas_export(text: str) -> bool:
    first = next(csv.reader(io.StringIO(text.lstrip("\ufeff"))), [])
    return [cell.strip().lower() for cell in first[:4]] == HEADER


def import_canvas_roster(session: Session, course: Course, text: str,
                         email_domain: str | None = None) -> RosterImportResult:
    """Create or update the students of a Canvas gradebook export (all or nothing)."""
    from server.services.courses import MAX_ROSTER_ROWS, RosterError, RosterImportResult

    records = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    header = [cell.strip().lower() for cell in records[0]]
    section_at = header.index("section") if "section" in header else None
    errors: list[str] = []
    rows: list[tuple[int, str, str, dict[str, str | None]]] = []
    seen: dict[str, int] = {}
    for number, record in enumerate(records[1:], start=2):
        cells = [cell.strip() for cell in record] + [""] * 5
        name, canvas_id = cells[0], cells[1]
        if not name or not canvas_id or name.lower() == "points possible":
            continue  # Points Possible, Manual Posting and other rows of Canvas's own
        login = cells[3]
        try:
            email = _email(login, email_domain)
            name = clean_name(name)
        except ValidationError as exc:
            errors.append(f"line {number}: {exc}")
            continue
        if not canvas_id.isdigit():
            errors.append(f"line {number}: ID {canvas_id!r} is not a Canvas user id (digits)")
            continue
        if email in seen:
            errors.append(f"line {number}: {email} already appears on line {seen[email]}")
            continue
        seen[email] = number
        section = cells[section_at] if section_at is not None else ""
        too_long = [v for v in (section, cells[2], login) if len(v) > MAX_CELL]
        if too_long:
            errors.append(f"line {number}: a cell is longer than {MAX_CELL} characters")
            continue
        rows.append((number, email, name, {"section": section or None,
                                           "canvas_user_id": canvas_id,
                                           "sis_user_id": cells[2] or None,
                                           "sis_login_id": login or None}))
    if len(rows) > MAX_ROSTER_ROWS:
        errors.append(f"the file has {len(rows)} students; at most {MAX_ROSTER_ROWS} are "
                      "accepted")
    if not rows and not errors:
        errors.append("the Canvas export has no student rows")
    if errors:
        raise RosterError(errors)
    enrollments = list(session.scalars(select(Enrollment).where(
        Enrollment.course_id == course.id)))
    by_canvas = {e.canvas_user_id: e for e in enrollments if e.canvas_user_id}
    by_user = {e.user_id: e for e in enrollments}
    users = {u.email: u for u in session.scalars(
        select(User).where(User.email.in_([email for _, email, _, _ in rows])))}
    result = RosterImportResult()
    for _, email, name, fields in rows:
        enrollment = by_canvas.get(fields["canvas_user_id"])
        user = enrollment.user if enrollment is not None else users.get(email)
        if user is None:
            user = create_user(session, email, name)
            result.created.append(email)
        enrollment = enrollment or by_user.get(user.id)
        if enrollment is None:
            enrollment = Enrollment(course=course, user=user, role=Role.STUDENT.value, **fields)
            session.add(enrollment)
            result.enrolled.append(email)
            continue
        if any(getattr(enrollment, key) != value for key, value in fields.items()):
            for key, value in fields.items():
                setattr(enrollment, key, value)
            result.updated.append(email)
        else:
            result.unchanged.append(email)
    session.flush()
    return result


def _email(login: str, domain: str | None) -> str:
    if "@" in login:
        return normalize_email(login, "SIS Login ID")
    if login and domain:
        return normalize_email(f"{login}@{domain.lstrip('@')}", "SIS Login ID")
    raise ValidationError("SIS Login ID", f"{login!r} is not an email address; import with an "
                                          "email domain (e.g. --email-domain example.edu) to "
                                          "make one from the login")
