"""Assignments: creation from the problem bank, deadlines, and per-student status."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, contains_eager, joinedload, selectinload

from server.models import (
    Assignment,
    AssignmentProblem,
    Course,
    Enrollment,
    Extension,
    Instance,
    ScoreOverride,
    ScorePolicy,
    Submission,
    SubmissionStatus,
    User,
)
from server.services.errors import NotFound, ValidationError
from server.services.problems import record_problem_version

MAX_TITLE_LENGTH = 200
MAX_ATTEMPTS_LIMIT = 1000
MAX_WEIGHT = 1000.0


@dataclasses.dataclass(frozen=True)
class ProblemChoice:
    problem_id: str
    weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class AssignmentDraft:
    """What an instructor fills in; validated by ``create_assignment``."""

    title: str
    open_at: dt.datetime
    due_at: dt.datetime
    problems: Sequence[ProblemChoice]
    late_until: dt.datetime | None = None
    late_credit: int = 0  # percent of the score earned between due_at and late_until
    max_attempts: int | None = None  # None: unlimited
    score_policy: str = ScorePolicy.BEST.value
    points: float = 100.0  # what the assignment is worth in the gradebook and exports
    canvas_id: str | None = None  # the matching Canvas assignment's id, if any


# Canvas's gradebook import reads columns with these titles as its own totals.
CANVAS_RESERVED_PARTS = ("Current Score", "Final Score", "Unposted")
CANVAS_RESERVED_TITLES = ("Grade",)
MAX_POINTS = 100_000.0
_CANVAS_ID = re.compile(r"^[0-9]{1,20}$")


def canvas_title_problem(title: str) -> str | None:
    """Why Canvas would misread an assignment column with this title, or None."""
    for part in CANVAS_RESERVED_PARTS:
        if part.lower() in title.lower():
            return (f"contains {part!r}, which Canvas's gradebook import reads as one of its "
                    "own total columns; choose another title")
    if title.strip().lower() in {t.lower() for t in CANVAS_RESERVED_TITLES}:
        return ("is 'Grade', a title Canvas's gradebook import reads as its own column; "
                "choose another title")
    return None


def _require_aware(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise ValidationError(field, "is required (a date and time)")
    if value.tzinfo is None:
        raise ValidationError(field, "has no time zone")
    return value.astimezone(dt.UTC)


def validate_draft(draft: AssignmentDraft, bank: Mapping[str, Any]) -> AssignmentDraft:
    """The draft with cleaned values; raises ValidationError naming the field."""
    title = " ".join((draft.title or "").split())
    if not title:
        raise ValidationError("title", "is required")
    if len(title) > MAX_TITLE_LENGTH:
        raise ValidationError("title", f"is longer than {MAX_TITLE_LENGTH} characters")
    reserved = canvas_title_problem(title)
    if reserved:
        raise ValidationError("title", reserved)
    points = draft.points
    if (isinstance(points, bool) or not isinstance(points, int | float)
            or not math.isfinite(points) or not 0 <= points <= MAX_POINTS):
        raise ValidationError("points", f"must be a number between 0 and {MAX_POINTS:g}")
    canvas_id = (draft.canvas_id or "").strip() or None
    if canvas_id is not None and not _CANVAS_ID.match(canvas_id):
        raise ValidationError("canvas_id", f"{canvas_id!r} is not a Canvas assignment id "
                                           "(digits, as in .../assignments/12345)")
    open_at = _require_aware(draft.open_at, "open_at")
    due_at = _require_aware(draft.due_at, "due_at")
    if due_at < open_at:
        raise ValidationError("due_at", "is before the opening date")
    late_until = None
    if draft.late_until is not None:
        late_until = _require_aware(draft.late_until, "late_until")
        if late_until < due_at:
            raise ValidationError("late_until", "is before the due date")
    late_credit = draft.late_credit
    if isinstance(late_credit, bool) or not isinstance(late_credit, int):
        raise ValidationError("late_credit", "must be a whole number of percent")
    if not 0 <= late_credit <= 100:
        raise ValidationError(
            "late_credit", f"must be between 0 and 100 percent, got {late_credit}"
        )
    if late_until is None and late_credit:
        raise ValidationError("late_credit", "needs a late-until date (no late period is set)")
    max_attempts = draft.max_attempts
    if max_attempts is not None and not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise ValidationError(
            "max_attempts", f"must be between 1 and {MAX_ATTEMPTS_LIMIT}, or empty for unlimited"
        )
    policy = (draft.score_policy or "").strip().lower()
    if policy not in {p.value for p in ScorePolicy}:
        raise ValidationError("score_policy", f"{draft.score_policy!r} is not 'best' or 'last'")
    if not draft.problems:
        raise ValidationError("problems", "choose at least one problem")
    seen: set[str] = set()
    for choice in draft.problems:
        if choice.problem_id not in bank:
            raise ValidationError("problems", f"{choice.problem_id!r} is not in the problem bank")
        if choice.problem_id in seen:
            raise ValidationError("problems", f"{choice.problem_id!r} is chosen twice")
        seen.add(choice.problem_id)
        weight = choice.weight
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
            raise ValidationError(
                "problems", f"the weight of {choice.problem_id!r} must be a positive number"
            )
        if weight > MAX_WEIGHT:
            raise ValidationError(
                "problems", f"the weight of {choice.problem_id!r} is above {MAX_WEIGHT:g}"
            )
    return dataclasses.replace(
        draft,
        title=title,
        open_at=open_at,
        due_at=due_at,
        late_until=late_until,
        late_credit=late_credit,
        max_attempts=max_attempts,
        score_policy=policy,
        problems=[ProblemChoice(c.problem_id, float(c.weight)) for c in draft.problems],
        points=float(points),
        canvas_id=canvas_id,
    )


def create_assignment(
    session: Session, course: Course, draft: AssignmentDraft, bank: Mapping[str, Any]
) -> Assignment:
    """A new assignment of ``course`` with the chosen bank problems, in order."""
    draft = validate_draft(draft, bank)
    assignment = Assignment(
        course=course,
        title=draft.title,
        open_at=draft.open_at,
        due_at=draft.due_at,
        late_until=draft.late_until,
        late_credit=draft.late_credit,
        max_attempts=draft.max_attempts,
        score_policy=draft.score_policy,
        points=draft.points,
        canvas_id=draft.canvas_id,
    )
    session.add(assignment)
    for position, choice in enumerate(draft.problems):
        record_problem_version(session, bank[choice.problem_id], problem_key=choice.problem_id)
        assignment.problems.append(
            AssignmentProblem(problem_id=choice.problem_id, weight=choice.weight, position=position)
        )
    session.flush()
    return assignment


def update_assignment(
    session: Session, assignment: Assignment, draft: AssignmentDraft, bank: Mapping[str, Any]
) -> Assignment:
    """Change an assignment: dates, late policy, attempts, policy, problems and weights.

    A problem that students have already started (an instance exists) cannot
    be removed: its submissions would lose their place. Problems already on
    the assignment stay valid even if the bank no longer has them.
    """
    from server.models import Instance

    current = {ap.problem_id: ap for ap in assignment.problems}
    known: dict[str, Any] = {**dict.fromkeys(current), **bank}
    draft = validate_draft(draft, known)
    chosen = [choice.problem_id for choice in draft.problems]
    removed = [ap for pid, ap in current.items() if pid not in chosen]
    if removed:
        started = set(
            session.scalars(
                select(AssignmentProblem.problem_id)
                .join(Instance, Instance.assignment_problem_id == AssignmentProblem.id)
                .where(AssignmentProblem.id.in_([ap.id for ap in removed]))
            )
        )
        if started:
            raise ValidationError(
                "problems",
                f"{', '.join(sorted(started))} cannot be removed: students have started "
                "them (their submissions are kept)",
            )
    assignment.title = draft.title
    assignment.open_at = draft.open_at
    assignment.due_at = draft.due_at
    assignment.late_until = draft.late_until
    assignment.late_credit = draft.late_credit
    assignment.max_attempts = draft.max_attempts
    assignment.score_policy = draft.score_policy
    assignment.points = draft.points
    assignment.canvas_id = draft.canvas_id
    for ap in removed:
        assignment.problems.remove(ap)
    session.flush()  # delete removed rows before re-adding the same problem is possible
    for position, choice in enumerate(draft.problems):
        ap = current.get(choice.problem_id)
        if ap is None:
            record_problem_version(session, bank[choice.problem_id], problem_key=choice.problem_id)
            ap = AssignmentProblem(problem_id=choice.problem_id)
            assignment.problems.append(ap)
        ap.weight = choice.weight
        ap.position = position
    session.flush()
    return assignment


def get_course_assignment(session: Session, course: Course, assignment_id: int) -> Assignment:
    assignment = session.get(Assignment, assignment_id)
    if assignment is None or assignment.course_id != course.id:
        raise NotFound(f"assignment: no assignment {assignment_id} in {course.code}")
    return assignment


def course_assignments(session: Session, course: Course) -> list[Assignment]:
    return list(
        session.scalars(
            select(Assignment)
            .options(selectinload(Assignment.problems).selectinload(AssignmentProblem.problem))
            .where(Assignment.course_id == course.id)
            .order_by(Assignment.due_at, Assignment.id)
        )
    )


def _problem_statement(admin: bool, *also: Any) -> Any:
    """Problem ``:problem_id`` of assignment ``:assignment_id`` with its assignment (and the
    entities ``also``, joined by the caller), if user ``:user_id`` is in its course (site
    admins: any course). Built once per shape: it runs on every submission."""
    query = (
        select(AssignmentProblem, *also)
        .join(Assignment, Assignment.id == AssignmentProblem.assignment_id)
        .options(contains_eager(AssignmentProblem.assignment))
        .where(AssignmentProblem.assignment_id == bindparam("assignment_id"),
               AssignmentProblem.problem_id == bindparam("problem_id"))
    )
    if not admin:
        query = query.where(
            select(Enrollment.id)
            .where(Enrollment.user_id == bindparam("user_id"),
                   Enrollment.course_id == Assignment.course_id)
            .exists()
        )
    return query


_PROBLEM_FOR = {admin: _problem_statement(admin) for admin in (False, True)}


def _no_problem(assignment_id: int, problem_id: str) -> NotFound:
    return NotFound(f"problem: no problem {problem_id!r} in assignment {assignment_id} "
                    "of your courses")


def assignment_problem_for(
    session: Session, user: User, assignment_id: int, problem_id: str
) -> AssignmentProblem:
    """Problem ``problem_id`` of assignment ``assignment_id``, if ``user`` is in its course.

    Raises NotFound alike for an unknown assignment, an unknown problem and a
    course the user is not enrolled in, so nothing leaks about other courses.
    (Site admins see every course.)
    """
    # One query: the problem with its assignment, and the enrollment check as EXISTS.
    assignment_problem = session.scalar(
        _PROBLEM_FOR[bool(user.is_admin)],
        {"assignment_id": assignment_id, "problem_id": problem_id, "user_id": user.id})
    if assignment_problem is None:
        raise _no_problem(assignment_id, problem_id)
    return assignment_problem


def _with_instance_and_extension(admin: bool) -> Any:
    attempts = (Submission.user_id == bindparam("user_id"),
                Submission.assignment_problem_id == AssignmentProblem.id,
                Submission.attempt.is_not(None))
    query = _problem_statement(
        admin, Instance, Extension,
        select(func.count(Submission.attempt)).where(*attempts).scalar_subquery(),
        select(func.max(Submission.attempt)).where(*attempts).scalar_subquery())
    return (
        query
        .outerjoin(Instance, (Instance.assignment_problem_id == AssignmentProblem.id)
                   & (Instance.user_id == bindparam("user_id")))
        .outerjoin(Extension, (Extension.assignment_id == Assignment.id)
                   & (Extension.user_id == bindparam("user_id")))
        .options(joinedload(Instance.problem_version))  # graders need it
    )


_PROBLEM_INSTANCE_EXTENSION = {admin: _with_instance_and_extension(admin)
                               for admin in (False, True)}


@dataclasses.dataclass(frozen=True)
class SubmissionContext:
    """What storing a submission reads, in one round trip instead of four."""

    assignment_problem: AssignmentProblem  # with its assignment
    instance: Instance | None  # the user's (with its problem version); None before a draw
    extension: Extension | None  # the user's extension of the assignment, if any
    attempts: tuple[int, int]  # the user's attempts at the problem: (count, highest number)


def problem_for_submission(
    session: Session, user: User, assignment_id: int, problem_id: str
) -> SubmissionContext:
    """``assignment_problem_for`` with, in the same query, what storing a submission
    needs besides: the user's instance, their extension, their attempts."""
    row = session.execute(
        _PROBLEM_INSTANCE_EXTENSION[bool(user.is_admin)],
        {"assignment_id": assignment_id, "problem_id": problem_id, "user_id": user.id}
    ).first()
    if row is None:
        raise _no_problem(assignment_id, problem_id)
    assignment_problem, instance, extension, count, highest = row
    return SubmissionContext(assignment_problem, instance, extension,
                             (int(count or 0), int(highest or 0)))


# --- deadlines ---------------------------------------------------------------------


class Phase(enum.StrEnum):
    UPCOMING = "upcoming"  # before open_at
    OPEN = "open"  # open_at .. due_at
    LATE = "late"  # due_at .. late_until, late credit applies
    CLOSED = "closed"  # after due_at (or late_until): submissions are refused


@dataclasses.dataclass(frozen=True)
class Window:
    phase: Phase
    accepting: bool
    late: bool
    credit: float  # the factor applied to a score submitted now (1.0, late credit, or 0)
    message: str


def submission_window(assignment: Assignment, now: dt.datetime,
                      extension: Extension | None = None) -> Window:
    """Whether a submission made at ``now`` is accepted, and for what credit;
    with a student's ``extension``, its due and late-until dates count instead."""
    due_at, late_until = assignment.due_at, assignment.late_until
    if extension is not None:
        due_at, late_until = extension.due_at, extension.late_until
    if now < assignment.open_at:
        return Window(Phase.UPCOMING, False, False, 0.0,
                      f"this assignment opens at {assignment.open_at:%Y-%m-%d %H:%M} UTC")
    if now <= due_at:
        return Window(Phase.OPEN, True, False, 1.0, "open")
    if late_until is not None and now <= late_until:
        return Window(Phase.LATE, True, True, assignment.late_credit / 100,
                      f"late: submissions until {late_until:%Y-%m-%d %H:%M} UTC "
                      f"earn {assignment.late_credit}% of their score")
    last = late_until or due_at
    return Window(Phase.CLOSED, False, False, 0.0,
                  f"closed: the last submission time was {last:%Y-%m-%d %H:%M} UTC")


def student_extension(session: Session, user_id: int, assignment: Assignment
                      ) -> Extension | None:
    return session.scalar(select(Extension).where(Extension.user_id == user_id,
                                                  Extension.assignment_id == assignment.id))


def student_window(session: Session, user_id: int, assignment: Assignment,
                   now: dt.datetime) -> Window:
    """``submission_window`` for one student: their extension counts, if they have one."""
    return submission_window(assignment, now, student_extension(session, user_id, assignment))


# --- a student's view ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProblemStatus:
    assignment_problem: AssignmentProblem
    attempts_used: int
    # Per the assignment's policy, or the staff's override; None before any graded attempt.
    score: float | None
    overridden: bool = False  # the score was set by the course staff


@dataclasses.dataclass(frozen=True)
class AssignmentStatus:
    assignment: Assignment
    window: Window
    problems: list[ProblemStatus]
    extension: Extension | None = None  # this student's own dates, if staff gave them

    @property
    def score(self) -> float | None:
        """Weighted score in [0, 1] over every problem (unattempted count 0)."""
        if all(p.score is None for p in self.problems):
            return None
        total = sum(p.assignment_problem.weight for p in self.problems)
        earned = sum(p.assignment_problem.weight * (p.score or 0.0) for p in self.problems)
        return earned / total if total else None


def problem_score(submissions: Sequence[Submission], policy: str) -> float | None:
    """The score that counts, from one student's graded submissions of one problem.

    ``Submission.score`` is the credited score in [0, 1] (late credit applied).
    """
    graded = [s for s in submissions if s.status == SubmissionStatus.GRADED and s.score is not None]
    if not graded:
        return None
    if policy == ScorePolicy.LAST:
        return max(graded, key=lambda s: (s.created_at, s.id)).score
    return max(s.score for s in graded if s.score is not None)


def student_assignments(
    session: Session, user: User, now: dt.datetime, course: Course | None = None,
    assignment_id: int | None = None,
) -> list[AssignmentStatus]:
    """Assignments of every course ``user`` is enrolled in (or of ``course``, or the one
    ``assignment_id``), with the user's attempts and scores."""
    query = (
        select(Assignment)
        .join(Enrollment, Enrollment.course_id == Assignment.course_id)
        .options(
            selectinload(Assignment.problems).selectinload(AssignmentProblem.problem),
            selectinload(Assignment.course),
        )
        .where(Enrollment.user_id == user.id)
        .order_by(Assignment.due_at, Assignment.id)
    )
    if course is not None:
        query = query.where(Assignment.course_id == course.id)
    if assignment_id is not None:
        query = query.where(Assignment.id == assignment_id)
    assignments = list(session.scalars(query))
    problem_ids = [ap.id for a in assignments for ap in a.problems]
    by_problem: dict[int, list[Submission]] = {}
    overrides: dict[int, float] = {}
    extensions: dict[int, Extension] = {}
    if problem_ids:
        overrides = dict(session.execute(
            select(ScoreOverride.assignment_problem_id, ScoreOverride.score).where(
                ScoreOverride.user_id == user.id,
                ScoreOverride.assignment_problem_id.in_(problem_ids))).all())
        extensions = {e.assignment_id: e for e in session.scalars(select(Extension).where(
            Extension.user_id == user.id,
            Extension.assignment_id.in_([a.id for a in assignments])))}
        for submission in session.scalars(
            select(Submission).where(
                Submission.user_id == user.id,
                Submission.assignment_problem_id.in_(problem_ids),
            )
        ):
            by_problem.setdefault(submission.assignment_problem_id, []).append(submission)
    statuses = []
    for assignment in assignments:
        problems = []
        for ap in assignment.problems:
            subs = by_problem.get(ap.id, [])
            used = sum(1 for s in subs if s.attempt is not None)
            if ap.id in overrides:
                problems.append(ProblemStatus(ap, used, overrides[ap.id], overridden=True))
            else:
                problems.append(
                    ProblemStatus(ap, used, problem_score(subs, assignment.score_policy)))
        extension = extensions.get(assignment.id)
        window = submission_window(assignment, now, extension)
        statuses.append(AssignmentStatus(assignment, window, problems, extension))
    return statuses
