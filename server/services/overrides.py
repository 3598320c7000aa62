"""Per-student exceptions set by staff: score overrides (audited) and extensions.

An override replaces the computed score of one student on one assignment
problem; every set, change and removal writes an ``OverrideEvent`` (who, when,
old, new, why). Removing it restores the computed score. An extension gives
one student their own due and late-until dates on one assignment; the
student's pages, the API and the submission window honour it
(services.assignments.student_window).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from server.db import write_transaction
from server.models import (
    Assignment,
    AssignmentProblem,
    Course,
    Enrollment,
    Extension,
    OverrideEvent,
    ScoreOverride,
    User,
)
from server.services.errors import NotFound, ValidationError

MAX_REASON = 2000


def _student(session: Session, course: Course, user_id: int) -> User:
    user = session.scalar(
        select(User).join(Enrollment, Enrollment.user_id == User.id)
        .where(Enrollment.course_id == course.id, User.id == user_id))
    if user is None:
        raise NotFound(f"user: user {user_id} is not enrolled in {course.code}")
    return user


def _course_problem(session: Session, course: Course, assignment_problem_id: int
                    ) -> AssignmentProblem:
    ap = session.get(AssignmentProblem, assignment_problem_id)
    if ap is None or ap.assignment.course_id != course.id:
        raise NotFound(f"problem: no assignment problem {assignment_problem_id} in {course.code}")
    return ap


def clean_score(raw: Any) -> float:
    """A score in [0, 1]; also accepted as a percentage ending in '%'."""
    text = str(raw if raw is not None else "").strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValidationError("score", f"{text!r} is not a number (0 to 1, or a percentage "
                                       "such as 75%)") from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValidationError("score", f"{text!r} is outside 0 to 1 (0% to 100%)")
    return round(value, 6)


def clean_reason(raw: Any) -> str:
    reason = " ".join(str(raw or "").split())
    if not reason:
        raise ValidationError("reason", "is required: say why the score is set by hand")
    if len(reason) > MAX_REASON:
        raise ValidationError("reason", f"is longer than {MAX_REASON} characters")
    return reason


def set_override(session: Session, course: Course, *, user_id: int,
                 assignment_problem_id: int, score: Any, reason: Any, actor: User | None,
                 now: dt.datetime) -> ScoreOverride:
    """Set (or change) a student's score on a problem, with the audit row (flush only)."""
    value, why = clean_score(score), clean_reason(reason)
    _student(session, course, user_id)
    _course_problem(session, course, assignment_problem_id)
    write_transaction(session)
    override = session.scalar(select(ScoreOverride).where(
        ScoreOverride.user_id == user_id,
        ScoreOverride.assignment_problem_id == assignment_problem_id))
    old = None if override is None else override.score
    if override is None:
        override = ScoreOverride(user_id=user_id, assignment_problem_id=assignment_problem_id,
                                 score=value, reason=why, created_at=now)
        session.add(override)
    override.score, override.reason, override.created_at = value, why, now
    override.actor_id = actor.id if actor else None
    session.add(OverrideEvent(user_id=user_id, assignment_problem_id=assignment_problem_id,
                              actor_id=override.actor_id, old_score=old, new_score=value,
                              reason=why, created_at=now))
    session.flush()
    return override


def remove_override(session: Session, course: Course, *, user_id: int,
                    assignment_problem_id: int, reason: Any, actor: User | None,
                    now: dt.datetime) -> None:
    """Remove an override (the computed score counts again), with the audit row."""
    why = clean_reason(reason)
    _course_problem(session, course, assignment_problem_id)
    write_transaction(session)
    override = session.scalar(select(ScoreOverride).where(
        ScoreOverride.user_id == user_id,
        ScoreOverride.assignment_problem_id == assignment_problem_id))
    if override is None:
        raise NotFound("override: this student's score on this problem is not overridden")
    session.add(OverrideEvent(user_id=user_id, assignment_problem_id=assignment_problem_id,
                              actor_id=actor.id if actor else None, old_score=override.score,
                              new_score=None, reason=why, created_at=now))
    session.delete(override)
    session.flush()


class OverrideNote(NamedTuple):
    """Who set a student's score on a problem, to what and why (the gradebook's marks)."""

    score: float
    reason: str
    actor_name: str | None  # None: set from the command line, or the account is gone
    actor_email: str | None
    set_at: dt.datetime


def course_overrides(session: Session, course: Course, user_ids: list[int] | None = None
                     ) -> dict[tuple[int, int], OverrideNote]:
    """(user id, assignment problem id) -> the override standing now, in one query."""
    query = (
        select(ScoreOverride.user_id, ScoreOverride.assignment_problem_id, ScoreOverride.score,
               ScoreOverride.reason, User.name, User.email, ScoreOverride.created_at)
        .join(AssignmentProblem, AssignmentProblem.id == ScoreOverride.assignment_problem_id)
        .join(Assignment, Assignment.id == AssignmentProblem.assignment_id)
        .outerjoin(User, User.id == ScoreOverride.actor_id)
        .where(Assignment.course_id == course.id))
    if user_ids is not None:
        query = query.where(ScoreOverride.user_id.in_(user_ids))
    return {(user_id, ap_id): OverrideNote(*note)
            for user_id, ap_id, *note in session.execute(query)}


def override_history(session: Session, user_id: int, assignment_problem_id: int
                     ) -> list[OverrideEvent]:
    return list(session.scalars(select(OverrideEvent).options(
        selectinload(OverrideEvent.actor)).where(
        OverrideEvent.user_id == user_id,
        OverrideEvent.assignment_problem_id == assignment_problem_id)
        .order_by(OverrideEvent.created_at.desc(), OverrideEvent.id.desc())))


# --- extensions ------------------------------------------------------------------------


def set_extension(session: Session, course: Course, assignment: Assignment, *, user_id: int,
                  due_at: dt.datetime | None, late_until: dt.datetime | None,
                  actor: User | None) -> Extension:
    """Give one student their own due (and late-until) dates on an assignment."""
    if assignment.course_id != course.id:
        raise NotFound(f"assignment: no assignment {assignment.id} in {course.code}")
    if not isinstance(due_at, dt.datetime) or due_at.tzinfo is None:
        raise ValidationError("due_at", "is required (a date and time)")
    if late_until is not None and late_until < due_at:
        raise ValidationError("late_until", "is before the extended due date")
    if due_at < assignment.open_at:
        raise ValidationError("due_at", "is before the assignment opens")
    _student(session, course, user_id)
    write_transaction(session)
    extension = session.scalar(select(Extension).where(
        Extension.user_id == user_id, Extension.assignment_id == assignment.id))
    if extension is None:
        extension = Extension(user_id=user_id, assignment_id=assignment.id, due_at=due_at)
        session.add(extension)
    extension.due_at, extension.late_until = due_at, late_until
    extension.actor_id = actor.id if actor else None
    session.flush()
    return extension


def remove_extension(session: Session, course: Course, assignment: Assignment, *,
                     user_id: int) -> None:
    if assignment.course_id != course.id:
        raise NotFound(f"assignment: no assignment {assignment.id} in {course.code}")
    write_transaction(session)
    extension = session.scalar(select(Extension).where(
        Extension.user_id == user_id, Extension.assignment_id == assignment.id))
    if extension is None:
        raise NotFound("extension: this student has no extension on this assignment")
    session.delete(extension)
    session.flush()


def course_extensions(session: Session, course: Course) -> dict[tuple[int, int], Extension]:
    """(user id, assignment id) -> extension, for the gradebook."""
    rows = session.scalars(select(Extension).join(
        Assignment, Assignment.id == Extension.assignment_id).where(
        Assignment.course_id == course.id))
    return {(e.user_id, e.assignment_id): e for e in rows}
