"""The gradebook: every student's score on every assignment problem, in one place.

Grades are computed, never typed in, except as an audited override
(services.overrides). A problem's score is the assignment's score policy over
the student's graded submissions (``best``: the highest; ``last``: the latest
graded one), each submission's score already carrying its late credit; an
override replaces it. An assignment's score is the weighted mean of its
problems' scores (a problem with none counts 0) times its points; it is None
while the student has no score on any of its problems.

The gradebook page, both CSV exports (services.exports) and the API read
``course_gradebook``: four queries (students, assignments, one aggregate over
submissions with window functions, overrides), whatever the class size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import NamedTuple

from sqlalchemy import String, and_, case, func, select, type_coerce
from sqlalchemy.orm import Session, selectinload

from server.models import (
    Assignment,
    AssignmentProblem,
    Course,
    Enrollment,
    Role,
    ScoreOverride,
    ScorePolicy,
    Submission,
    SubmissionStatus,
    User,
)
from server.services.errors import NotFound


@dataclasses.dataclass(frozen=True, slots=True)
class Student:
    user_id: int
    email: str
    name: str
    section: str
    sis_user_id: str
    sis_login_id: str
    canvas_user_id: str


class Cell(NamedTuple):
    """One student on one assignment problem (a tuple: a class has 60,000 of them)."""

    score: float | None  # in [0, 1], after policy, late credit and override
    computed: float | None  # the policy's score, before any override
    attempts: int
    late: bool  # the submission that counts was late
    overridden: bool
    last_submission_at: dt.datetime | None


EMPTY = Cell(None, None, 0, False, False, None)
NO_SCORE = (None, False)


@dataclasses.dataclass(frozen=True)
class Gradebook:
    course: Course
    students: list[Student]  # by name, then email
    assignments: list[Assignment]  # by due date; their problems loaded, in order
    cells: dict[tuple[int, int], Cell]  # (user id, assignment problem id)

    def cell(self, user_id: int, assignment_problem_id: int) -> Cell:
        return self.cells.get((user_id, assignment_problem_id), EMPTY)

    def fraction(self, user_id: int, assignment: Assignment) -> float | None:
        """The assignment's score in [0, 1], or None before any score."""
        cells = [(ap.weight, self.cell(user_id, ap.id)) for ap in assignment.problems]
        if all(c.score is None for _, c in cells):
            return None
        total = sum(weight for weight, _ in cells)
        return sum(weight * (c.score or 0.0) for weight, c in cells) / total if total else None

    def points(self, user_id: int, assignment: Assignment) -> float | None:
        fraction = self.fraction(user_id, assignment)
        return None if fraction is None else fraction * assignment.points

    def total(self, user_id: int) -> tuple[float, float]:
        """(points earned, points possible) over every assignment."""
        earned = sum(self.points(user_id, a) or 0.0 for a in self.assignments)
        return earned, sum(a.points for a in self.assignments)

    @property
    def sections(self) -> list[str]:
        return sorted({s.section for s in self.students if s.section})


def problem_points(assignment: Assignment, assignment_problem: AssignmentProblem) -> float:
    """The problem's share of the assignment's points."""
    total = sum(ap.weight for ap in assignment.problems)
    return assignment.points * assignment_problem.weight / total if total else 0.0


def course_gradebook(session: Session, course: Course, *, assignment_id: int | None = None,
                     section: str | None = None, user_id: int | None = None) -> Gradebook:
    """The course's gradebook (students only), optionally for one assignment, one
    section or one student. Raises NotFound for an assignment of another course."""
    assignments_query = (
        select(Assignment).options(
            selectinload(Assignment.problems).selectinload(AssignmentProblem.problem))
        .where(Assignment.course_id == course.id).order_by(Assignment.due_at, Assignment.id))
    if assignment_id is not None:
        assignments_query = assignments_query.where(Assignment.id == assignment_id)
    assignments = list(session.scalars(assignments_query))
    if assignment_id is not None and not assignments:
        raise NotFound(f"assignment: no assignment {assignment_id} in {course.code}")
    students = course_students(session, course, section=section, user_id=user_id)
    cells = _cells(session, assignments, [s.user_id for s in students]
                   if (section is not None or user_id is not None) else None)
    return Gradebook(course, students, assignments, cells)


def course_students(session: Session, course: Course, *, section: str | None = None,
                    user_id: int | None = None) -> list[Student]:
    query = (
        select(User.id, User.email, User.name, Enrollment.section, Enrollment.sis_user_id,
               Enrollment.sis_login_id, Enrollment.canvas_user_id)
        .join(Enrollment, Enrollment.user_id == User.id)
        .where(Enrollment.course_id == course.id, Enrollment.role == Role.STUDENT.value))
    if section is not None:
        query = query.where(func.coalesce(Enrollment.section, "") == section)
    if user_id is not None:
        query = query.where(User.id == user_id)
    students = [Student(uid, email, name, sec or "", sis or "", login or "", canvas or "")
                for uid, email, name, sec, sis, login, canvas in session.execute(query)]
    students.sort(key=lambda s: (s.name.casefold(), s.email))
    return students


def _cells(session: Session, assignments: list[Assignment], user_ids: list[int] | None
           ) -> dict[tuple[int, int], Cell]:
    problem_ids = [ap.id for a in assignments for ap in a.problems]
    if not problem_ids:
        return {}
    last_policy = [ap.id for a in assignments if a.score_policy == ScorePolicy.LAST
                   for ap in a.problems]

    def scoped(query, ids=problem_ids):  # type: ignore[no-untyped-def]
        query = query.where(Submission.assignment_problem_id.in_(ids))
        if user_ids is not None:
            query = query.where(Submission.user_id.in_(user_ids))
        return query

    # Core statements on the session's connection: tens of thousands of plain rows,
    # without the ORM's per-row work.
    connection = session.connection()
    key = (Submission.user_id, Submission.assignment_problem_id)
    graded = and_(Submission.status == SubmissionStatus.GRADED.value,
                  Submission.score.is_not(None))
    # One pass for the attempts, the last submission and the best score; the best
    # counts as late when no submission on time reached it.
    latest = func.max(Submission.created_at)
    if connection.dialect.name == "sqlite":  # its text, parsed below: 10x faster than the type
        latest = type_coerce(latest, String)
    stats = connection.execute(scoped(
        select(*key, func.count(Submission.attempt), latest,
               func.max(case((graded, Submission.score))),
               func.max(case((and_(graded, Submission.late.is_(False)), Submission.score))))
        .group_by(*key)))
    # The last graded submission, for the problems of assignments whose policy is "last".
    last: dict[tuple[int, int], tuple[float, bool]] = {}
    if last_policy:
        ranked = scoped(select(*key, Submission.score, Submission.late, func.row_number().over(
            partition_by=key, order_by=(Submission.created_at.desc(), Submission.id.desc()))
            .label("rank")).where(graded), last_policy).subquery()
        last = {(u, p): (score, bool(late)) for u, p, score, late in connection.execute(
            select(ranked.c.user_id, ranked.c.assignment_problem_id, ranked.c.score,
                   ranked.c.late).where(ranked.c.rank == 1))}
    overrides_query = select(ScoreOverride.user_id, ScoreOverride.assignment_problem_id,
                             ScoreOverride.score).where(
        ScoreOverride.assignment_problem_id.in_(problem_ids))
    if user_ids is not None:
        overrides_query = overrides_query.where(ScoreOverride.user_id.in_(user_ids))
    overrides = {(u, p): s for u, p, s in connection.execute(overrides_query)}
    last_problems = set(last_policy)
    cells: dict[tuple[int, int], Cell] = {}
    for user_id, problem_id, attempts, last_at, best, best_on_time in stats:
        if problem_id in last_problems:
            computed, late = last.get((user_id, problem_id), NO_SCORE)
        else:
            computed = best
            late = best is not None and (best_on_time is None or best_on_time < best)
        if isinstance(last_at, str):
            last_at = dt.datetime.fromisoformat(last_at).replace(tzinfo=dt.UTC)
        cells[(user_id, problem_id)] = Cell(computed, computed, attempts, late, False, last_at)
    for pair, score in overrides.items():
        cell = cells.get(pair, EMPTY)
        cells[pair] = cell._replace(score=score, overridden=True)
    return cells


def final_cells(session: Session, assignments: list[Assignment], user_ids: list[int],
                problem_ids: set[int]) -> dict[tuple[int, int], Cell]:
    """The cells of some assignment problems (analytics' final scores): the gradebook's."""
    return {key: cell for key, cell in _cells(session, assignments, user_ids).items()
            if key[1] in problem_ids}
