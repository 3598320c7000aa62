"""Courses, enrollments and roster import.

``enroll`` gives a role at once (the command line and the demo use it). The views'
role changes and roster imports say who asks (``actor``; None: the command line): a
TA or instructor role given to an existing account by an instructor who is not a
site administrator becomes a staff invitation that the account holder accepts
(services.staff_invitations).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from server.models import (
    ROLE_VALUES,
    STAFF_ROLE_VALUES,
    Course,
    Enrollment,
    Role,
    StaffInvitation,
    User,
    utcnow,
)
from server.services import staff_invitations
from server.services.accounts import clean_name, create_user, normalize_email
from server.services.errors import Conflict, ServiceError, ValidationError

_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STAFF_ROLES = STAFF_ROLE_VALUES
MAX_ROSTER_ROWS = 5000


def clean_code(code: str, field: str = "code") -> str:
    value = (code or "").strip()
    if not value:
        raise ValidationError(field, "is required")
    if not _CODE_RE.match(value):
        raise ValidationError(
            field,
            f"{value!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (it appears in URLs)",
        )
    return value


def clean_role(role: str, field: str = "role") -> str:
    value = (role or "").strip().lower()
    if value not in ROLE_VALUES:
        raise ValidationError(field, f"{role!r} is not one of {', '.join(ROLE_VALUES)}")
    return value


def create_course(session: Session, code: str, title: str) -> Course:
    code = clean_code(code)
    title = clean_name(title, "title")
    if get_course(session, code) is not None:
        raise Conflict(f"code: a course with the code {code} already exists")
    course = Course(code=code, title=title)
    session.add(course)
    session.flush()
    return course


def get_course(session: Session, code: str) -> Course | None:
    return session.scalar(select(Course).where(Course.code == code))


def enroll(session: Session, course: Course, user: User, role: str) -> Enrollment:
    """Enroll ``user`` with ``role``, or change the role of an existing enrollment."""
    role = clean_role(role)
    enrollment = session.scalar(
        select(Enrollment).where(Enrollment.course_id == course.id, Enrollment.user_id == user.id)
    )
    if enrollment is None:
        enrollment = Enrollment(course=course, user=user, role=role)
        session.add(enrollment)
    else:
        enrollment.role = role
    session.flush()
    return enrollment


def _enrollment(session: Session, course: Course, user_id: int) -> Enrollment:
    from server.services.errors import NotFound

    enrollment = session.scalar(
        select(Enrollment).where(Enrollment.course_id == course.id, Enrollment.user_id == user_id)
    )
    if enrollment is None:
        raise NotFound(f"user: user {user_id} is not enrolled in {course.code}")
    return enrollment


def _check_keeps_an_instructor(session: Session, course: Course, enrollment: Enrollment) -> None:
    if enrollment.role != Role.INSTRUCTOR.value:
        return
    instructors = session.scalars(
        select(Enrollment.id).where(
            Enrollment.course_id == course.id, Enrollment.role == Role.INSTRUCTOR.value
        )
    ).all()
    if len(instructors) <= 1:
        raise Conflict(
            f"role: {enrollment.user.email} is the only instructor of {course.code}; "
            "make someone else instructor first"
        )


def change_role(session: Session, course: Course, user_id: int, role: str, *,
                actor: User | None) -> Enrollment | StaffInvitation:
    """Change an enrolled user's role; a course always keeps one instructor. A staff role
    that ``actor`` (None: the command line) may not give without the user's acceptance
    (``staff_invitations.needs_acceptance``) is an invitation instead, returned; the
    role stays as it is until the user accepts."""
    role = clean_role(role)
    enrollment = _enrollment(session, course, user_id)
    if role == enrollment.role:
        return enrollment
    if staff_invitations.needs_acceptance(actor, enrollment.role, role):
        invitation, _ = staff_invitations.invite(session, course, enrollment.user, role,
                                                 actor, utcnow())
        return invitation
    _check_keeps_an_instructor(session, course, enrollment)
    enrollment.role = role
    session.flush()
    return enrollment


def unenroll(session: Session, course: Course, user_id: int) -> User:
    """Remove a user from a course. Their instances and submissions are kept."""
    enrollment = _enrollment(session, course, user_id)
    _check_keeps_an_instructor(session, course, enrollment)
    user = enrollment.user
    session.delete(enrollment)
    session.flush()
    return user


def role_in_course(session: Session, user: User, course: Course) -> str | None:
    return session.scalar(
        select(Enrollment.role).where(
            Enrollment.course_id == course.id, Enrollment.user_id == user.id
        )
    )


def courses_for_user(session: Session, user: User) -> list[tuple[Course, str]]:
    """The user's courses with their role in each, by course code."""
    rows = session.execute(
        select(Course, Enrollment.role)
        .join(Enrollment, Enrollment.course_id == Course.id)
        .where(Enrollment.user_id == user.id)
        .order_by(Course.code)
    )
    return [(course, role) for course, role in rows]


def roster(session: Session, course: Course) -> list[Enrollment]:
    """Enrollments with their users: staff first, then students, by name."""
    order = {Role.INSTRUCTOR.value: 0, Role.TA.value: 1, Role.STUDENT.value: 2}
    enrollments = session.scalars(
        select(Enrollment)
        .options(joinedload(Enrollment.user))
        .where(Enrollment.course_id == course.id)
    ).all()
    return sorted(enrollments, key=lambda e: (order.get(e.role, 3), e.user.name.lower()))


# --- roster import -------------------------------------------------------------------


class RosterError(ServiceError):
    """The CSV has errors; nothing was imported. ``errors`` names line and reason."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


@dataclasses.dataclass
class RosterImportResult:
    created: list[str] = dataclasses.field(default_factory=list)  # new accounts
    enrolled: list[str] = dataclasses.field(default_factory=list)  # new enrollments
    role_changed: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)  # Canvas ids or section
    invited: list[str] = dataclasses.field(default_factory=list)  # staff roles to accept

    @property
    def changed_nothing(self) -> bool:
        return not (self.created or self.enrolled or self.role_changed or self.updated
                    or self.invited)

    def summary(self) -> str:
        if self.changed_nothing:
            return (f"nothing changed: all {len(self.unchanged)} rows are already in the "
                    "course as they are in the file")
        text = (f"{len(self.created)} new accounts, {len(self.enrolled)} enrolled, "
                f"{len(self.role_changed)} role changes, ")
        if self.updated:
            text += f"{len(self.updated)} updated (Canvas ids or section), "
        if self.invited:
            text += (f"{len(self.invited)} invited as staff (the role is theirs once they "
                     f"accept it on their dashboard: {', '.join(self.invited)}), ")
        return text + f"{len(self.unchanged)} unchanged"


@dataclasses.dataclass(frozen=True)
class _RosterRow:
    line: int
    email: str
    name: str
    role: str


def parse_roster_csv(text: str) -> list[_RosterRow]:
    """Rows of ``email,name,role`` (header optional, role defaults to student)."""
    errors: list[str] = []
    rows: list[_RosterRow] = []
    seen: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        records = list(reader)
    except csv.Error as exc:
        raise RosterError([f"line {reader.line_num}: not valid CSV ({exc})"]) from None
    for index, record in enumerate(records, start=1):
        cells = [cell.strip() for cell in record]
        if not any(cells):
            continue
        if index == 1 and cells[0].lower() == "email":
            continue  # header
        if len(cells) < 2 or len(cells) > 3:
            errors.append(
                f"line {index}: expected 2 or 3 columns (email,name[,role]), got {len(cells)}"
            )
            continue
        role_cell = cells[2] if len(cells) == 3 and cells[2] else Role.STUDENT.value
        try:
            email = normalize_email(cells[0])
            name = clean_name(cells[1])
            role = clean_role(role_cell)
        except ValidationError as exc:
            errors.append(f"line {index}: {exc}")
            continue
        if email in seen:
            errors.append(f"line {index}: email {email} already appears on line {seen[email]}")
            continue
        seen[email] = index
        rows.append(_RosterRow(index, email, name, role))
    if len(rows) > MAX_ROSTER_ROWS:
        errors.append(f"the file has {len(rows)} rows; at most {MAX_ROSTER_ROWS} are accepted")
    if not rows and not errors:
        errors.append("the file has no rows (expected email,name,role)")
    if errors:
        raise RosterError(errors)
    return rows


def import_roster(session: Session, course: Course, text: str,
                  email_domain: str | None = None, *, actor: User | None) -> RosterImportResult:
    """Create missing accounts (without passwords) and enroll everyone; all or nothing.

    Every row is checked before anything is written, so a file with an error
    changes nothing. A Canvas gradebook export (recognised by its header) is
    read by ``services.canvas`` (students only). A TA or instructor row for an
    existing account that ``actor`` (None: the command line) may not give at once
    (``staff_invitations.needs_acceptance``) makes a staff invitation instead
    (``invited``), and the account keeps its role (or stays out) until it accepts.
    """
    from server.services import canvas

    if canvas.is_canvas_export(text):
        return canvas.import_canvas_roster(session, course, text, email_domain)
    rows = parse_roster_csv(text)
    existing = {
        user.email: user
        for user in session.scalars(select(User).where(User.email.in_([r.email for r in rows])))
    }
    current_roles = {
        enrollment.user_id: enrollment
        for enrollment in session.scalars(
            select(Enrollment).where(Enrollment.course_id == course.id)
        )
    }
    result = RosterImportResult()
    now = utcnow()
    for row in rows:
        user = existing.get(row.email)
        if user is None:
            user = create_user(session, row.email, row.name)
            result.created.append(row.email)
        enrollment = current_roles.get(user.id)
        if user.email in existing and staff_invitations.needs_acceptance(
                actor, enrollment.role if enrollment else None, row.role):
            _, changed = staff_invitations.invite(session, course, user, row.role, actor, now)
            (result.invited if changed else result.unchanged).append(row.email)
        elif enrollment is None:
            session.add(Enrollment(course=course, user=user, role=row.role))
            result.enrolled.append(row.email)
        elif enrollment.role != row.role:
            enrollment.role = row.role
            result.role_changed.append(row.email)
        else:
            result.unchanged.append(row.email)
    session.flush()
    return result
