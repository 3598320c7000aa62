"""What a class gets wrong: per problem and per assignment, as grouped queries.

Every count is a GROUP BY in the database over ``submissions``, ``instances``
and ``submission_verdicts`` (services.verdicts); Python only folds the grouped
rows (a few per gradient, step or structural choice) into dicts. Only the
course's students count (enrolled with the role ``student``): staff trying a
problem do not move the numbers.

Definitions (docs/analytics.md says the same for instructors):

- *started*: students with an instance of the problem; *submitted*: students
  with at least one stored submission (any status); *reached 100%*: students
  with a graded submission scored 100% (late credit applied).
- ``submissions``: every stored submission; ``graded``: those graded.
- ``score_histogram``: the final scores (the gradebook's: score policy, late
  credit, overrides), one per student and assignment problem, in ten bins
  [0, 10%), ..., [90%, 100%] (100% goes in the last).
- ``attempts_to_full``: per student and assignment problem that reached 100%,
  the attempt number of the first submission that did.
- ``gradient_verdicts``: per asked gradient, graded submissions per verdict.
- ``first_mistake_lines``: graded submissions whose first wrong line writes the
  gradient of a given step of the model solution, and the most common such
  lines (normalised) with how many students wrote each.
- ``by_choice``: per structural choice (``[choose]``) and option, graded
  submissions, their mean score and their wrong verdicts.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.orm import Session, selectinload

from server.models import (
    Assignment,
    AssignmentProblem,
    Course,
    Enrollment,
    Instance,
    Role,
    Submission,
    SubmissionStatus,
)
from server.models.verdict import SubmissionVerdict
from server.services import gradebook
from server.services.errors import NotFound, ValidationError

FULL = 0.999999  # a score at least this is 100%
BINS = 10
TOP_LINES = 5  # the most common wrong lines shown per step
GRADED = SubmissionStatus.GRADED.value


def bin_of(score: float) -> int:
    """The histogram bin of a score in [0, 1]: 0 for [0, 10%), ..., 9 for [90%, 100%]."""
    return min(BINS - 1, max(0, int(round(score * 100, 6)) // 10))


def _students(course: Course) -> Any:
    return select(Enrollment.user_id).where(Enrollment.course_id == course.id,
                                            Enrollment.role == Role.STUDENT.value)


def problem_scope(session: Session, course: Course, problem_id: str,
                  assignment_id: int | None = None) -> list[AssignmentProblem]:
    """The problem's places in the course's assignments (one, with ``assignment_id``).
    Raises NotFound when there is none."""
    query = (select(AssignmentProblem)
             .join(Assignment, Assignment.id == AssignmentProblem.assignment_id)
             .options(selectinload(AssignmentProblem.assignment)
                      .selectinload(Assignment.problems))
             .where(Assignment.course_id == course.id,
                    AssignmentProblem.problem_id == problem_id)
             .order_by(Assignment.due_at, Assignment.id))
    if assignment_id is not None:
        query = query.where(Assignment.id == assignment_id)
    places = list(session.scalars(query))
    if not places:
        where = f" in assignment {assignment_id}" if assignment_id is not None else ""
        raise NotFound(f"problem: no problem {problem_id!r}{where} in {course.code}")
    return places


def problem_analytics(session: Session, course: Course, problem_id: str,
                      assignment_id: int | None = None) -> dict[str, Any]:
    """The numbers of the problem page and of the JSON API (see the module docstring)."""
    places = problem_scope(session, course, problem_id, assignment_id)
    ids = [ap.id for ap in places]
    students = _students(course)
    connection = session.connection()
    mine = and_(Submission.assignment_problem_id.in_(ids), Submission.user_id.in_(students))
    full = and_(Submission.status == GRADED, Submission.score >= FULL)

    started = connection.scalar(select(func.count(distinct(Instance.user_id))).where(
        Instance.assignment_problem_id.in_(ids), Instance.user_id.in_(students)))
    total, graded, submitted, reached = connection.execute(select(
        func.count(Submission.id),
        func.coalesce(func.sum(case((Submission.status == GRADED, 1), else_=0)), 0),
        func.count(distinct(Submission.user_id)),
        func.count(distinct(case((full, Submission.user_id)))),
    ).where(mine)).one()

    first_full = (select(func.min(Submission.attempt).label("attempt"))
                  .where(mine, full, Submission.attempt.is_not(None))
                  .group_by(Submission.user_id, Submission.assignment_problem_id).subquery())
    attempts = {int(a): int(n) for a, n in connection.execute(
        select(first_full.c.attempt, func.count()).group_by(first_full.c.attempt)
        .order_by(first_full.c.attempt))}

    return {
        "problem": problem_id,
        "assignment": assignment_id,
        "assignments": [ap.assignment_id for ap in places],
        "students": {"started": int(started or 0), "submitted": int(submitted),
                     "reached_100": int(reached)},
        "submissions": int(total),
        "graded": int(graded),
        "score_histogram": _final_score_histogram(session, course, places),
        "attempts_to_full": attempts,
        "gradient_verdicts": _gradient_verdicts(connection, ids, students),
        "first_mistake_lines": _first_mistakes(connection, ids, students),
        "by_choice": _by_choice(connection, ids, students),
    }


def _final_score_histogram(session: Session, course: Course,
                           places: list[AssignmentProblem]) -> list[int]:
    student_ids = [uid for uid, in session.execute(_students(course))]
    assignments = [ap.assignment for ap in places]
    cells = gradebook.final_cells(session, assignments, student_ids, {ap.id for ap in places})
    counts = [0] * BINS
    for cell in cells.values():
        if cell.score is not None:
            counts[bin_of(cell.score)] += 1
    return counts


def _gradient_verdicts(connection: Any, ids: list[int], students: Any
                       ) -> dict[str, dict[str, int]]:
    rows = connection.execute(
        select(SubmissionVerdict.gradient, SubmissionVerdict.verdict, func.count(),
               func.min(SubmissionVerdict.position))
        .where(SubmissionVerdict.assignment_problem_id.in_(ids),
               SubmissionVerdict.user_id.in_(students))
        .group_by(SubmissionVerdict.gradient, SubmissionVerdict.verdict)).all()
    order = {}
    for gradient, _, _, position in rows:
        order[gradient] = min(position, order.get(gradient, position))
    out: dict[str, dict[str, int]] = {g: {} for g in sorted(order, key=lambda g: (order[g], g))}
    for gradient, verdict, count, _ in sorted(rows, key=lambda r: (-r[2], r[1])):
        out[gradient][verdict] = int(count)
    return out


def _first_mistakes(connection: Any, ids: list[int], students: Any) -> dict[str, Any]:
    rows = connection.execute(
        select(SubmissionVerdict.first_step, SubmissionVerdict.first_target,
               SubmissionVerdict.first_text, func.count(),
               func.count(distinct(SubmissionVerdict.user_id)))
        .where(SubmissionVerdict.assignment_problem_id.in_(ids),
               SubmissionVerdict.user_id.in_(students),
               SubmissionVerdict.position == 0, SubmissionVerdict.first_line.is_not(None))
        .group_by(SubmissionVerdict.first_step, SubmissionVerdict.first_target,
                  SubmissionVerdict.first_text)).all()
    steps: dict[str, dict[str, Any]] = {}
    for step, target, text, count, students_count in rows:
        key = str(step) if step is not None else f"? {target}"
        entry = steps.setdefault(key, {"step": step, "target": target, "submissions": 0,
                                       "lines": []})
        entry["submissions"] += int(count)
        entry["lines"].append({"text": text or "", "students": int(students_count),
                               "submissions": int(count)})
    for entry in steps.values():
        entry["lines"].sort(key=lambda line: (-line["students"], -line["submissions"],
                                              line["text"]))
        entry["lines"] = entry["lines"][:TOP_LINES]
    # Students per step: one more grouped count (a student may write several lines).
    per_step = dict(connection.execute(
        select(SubmissionVerdict.first_step, func.count(distinct(SubmissionVerdict.user_id)))
        .where(SubmissionVerdict.assignment_problem_id.in_(ids),
               SubmissionVerdict.user_id.in_(students),
               SubmissionVerdict.position == 0, SubmissionVerdict.first_line.is_not(None),
               SubmissionVerdict.first_step.is_not(None))
        .group_by(SubmissionVerdict.first_step)).all())
    for entry in steps.values():
        entry["students"] = int(per_step.get(entry["step"], 0)) if entry["step"] is not None \
            else max(line["students"] for line in entry["lines"])
    return dict(sorted(steps.items(), key=lambda kv: (kv[1]["step"] is None,
                                                      kv[1]["step"] or 0, kv[0])))


def _by_choice(connection: Any, ids: list[int], students: Any) -> dict[str, Any]:
    graded = and_(Submission.assignment_problem_id.in_(ids), Submission.user_id.in_(students),
                  Submission.status == GRADED)
    scores = connection.execute(
        select(Instance.choices_json, func.count(Submission.id), func.sum(Submission.score),
               func.sum(case((Submission.score >= FULL, 1), else_=0)))
        .join(Instance, Instance.id == Submission.instance_id).where(graded)
        .group_by(Instance.choices_json)).all()
    # Wrong verdicts per student first (an index-only scan), then per choice: a
    # student's structure is their instance's.
    per_student = (
        select(SubmissionVerdict.user_id, SubmissionVerdict.assignment_problem_id,
               SubmissionVerdict.verdict, func.count().label("n"))
        .where(SubmissionVerdict.assignment_problem_id.in_(ids),
               SubmissionVerdict.user_id.in_(students), SubmissionVerdict.verdict != "correct")
        .group_by(SubmissionVerdict.assignment_problem_id, SubmissionVerdict.user_id,
                  SubmissionVerdict.verdict).subquery())
    mistakes = connection.execute(
        select(Instance.choices_json, per_student.c.verdict, func.sum(per_student.c.n))
        .join(Instance, and_(Instance.user_id == per_student.c.user_id,
                             Instance.assignment_problem_id
                             == per_student.c.assignment_problem_id))
        .group_by(Instance.choices_json, per_student.c.verdict)).all()
    out: dict[str, dict[str, dict[str, Any]]] = {}

    def option(choices_json: str) -> list[dict[str, Any]]:
        choices = json.loads(choices_json or "{}")
        return [out.setdefault(name, {}).setdefault(
            str(label), {"submissions": 0, "full": 0, "score_sum": 0.0, "mistakes": {}})
            for name, label in sorted(choices.items())]

    for choices_json, count, score_sum, full in scores:
        for entry in option(choices_json):
            entry["submissions"] += int(count)
            entry["full"] += int(full or 0)
            entry["score_sum"] += float(score_sum or 0.0)
    for choices_json, verdict, count in mistakes:
        for entry in option(choices_json):
            entry["mistakes"][verdict] = entry["mistakes"].get(verdict, 0) + int(count)
    for options in out.values():
        for entry in options.values():
            total = entry.pop("score_sum")
            entry["mean_score"] = round(total / entry["submissions"], 6) \
                if entry["submissions"] else None
            entry["mistakes"] = dict(sorted(entry["mistakes"].items(),
                                            key=lambda kv: (-kv[1], kv[0])))
    return {name: dict(sorted(options.items())) for name, options in sorted(out.items())}


# --- per assignment ----------------------------------------------------------------


def assignment_analytics(session: Session, course: Course, assignment_id: int) -> dict[str, Any]:
    """Score distribution, completion over time, late share and a row per problem."""
    book = gradebook.course_gradebook(session, course, assignment_id=assignment_id)
    assignment = book.assignments[0]
    histogram = [0] * BINS
    scored = 0
    for student in book.students:
        fraction = book.fraction(student.user_id, assignment)
        if fraction is not None:
            scored += 1
            histogram[bin_of(fraction)] += 1
    ids = [ap.id for ap in assignment.problems]
    students = _students(course)
    connection = session.connection()
    mine = and_(Submission.assignment_problem_id.in_(ids), Submission.user_id.in_(students))
    day = _utc_day(connection, Submission.created_at)
    per_day = {str(d): int(n) for d, n in connection.execute(
        select(day, func.count(Submission.id)).where(mine).group_by(day))}
    # Students at 100% on every problem: the day their last problem first reached 100%.
    first_full = (select(Submission.user_id, func.min(Submission.created_at).label("at"))
                  .where(mine, Submission.status == GRADED, Submission.score >= FULL)
                  .group_by(Submission.user_id, Submission.assignment_problem_id).subquery())
    done = (select(func.max(first_full.c.at).label("at")).group_by(first_full.c.user_id)
            .having(func.count() == len(ids)).subquery())
    done_day = _utc_day(connection, done.c.at)
    completed = {str(d): int(n) for d, n in connection.execute(
        select(done_day, func.count()).group_by(done_day))}
    timeline, submissions_so_far, students_so_far = [], 0, 0
    for date in sorted(set(per_day) | set(completed)):
        submissions_so_far += per_day.get(date, 0)
        students_so_far += completed.get(date, 0)
        timeline.append({"date": date, "submissions": per_day.get(date, 0),
                         "submissions_total": submissions_so_far,
                         "students_full_total": students_so_far})
    graded, late = connection.execute(select(
        func.count(Submission.id), func.coalesce(func.sum(case(
            (Submission.late.is_(True), 1), else_=0)), 0),
    ).where(mine, Submission.status == GRADED)).one()
    problems = []
    stats = {ap_id: (int(n), int(g), int(s), int(r)) for ap_id, n, g, s, r in connection.execute(
        select(Submission.assignment_problem_id, func.count(Submission.id),
               func.coalesce(func.sum(case((Submission.status == GRADED, 1), else_=0)), 0),
               func.count(distinct(Submission.user_id)),
               func.count(distinct(case((and_(Submission.status == GRADED,
                                              Submission.score >= FULL),
                                         Submission.user_id)))))
        .where(mine).group_by(Submission.assignment_problem_id))}
    for ap in assignment.problems:
        n, g, s, r = stats.get(ap.id, (0, 0, 0, 0))
        problems.append({"problem": ap.problem_id, "submissions": n, "graded": g,
                         "students_submitted": s, "students_100": r})
    return {
        "assignment": assignment.id,
        "title": assignment.title,
        "due_at": assignment.due_at.isoformat(),
        "due_date": _date(assignment.due_at),
        "students": len(book.students),
        "students_scored": scored,
        "score_histogram": histogram,
        "timeline": timeline,
        "graded": int(graded),
        "late": int(late),
        "late_share": round(int(late) / int(graded), 6) if graded else None,
        "problems": problems,
    }


def _utc_day(connection: Any, column: Any) -> Any:
    """The UTC date of a timestamp column (PostgreSQL's date() follows the session's
    time zone; SQLite stores UTC)."""
    if connection.dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def _date(moment: dt.datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.date().isoformat()


# --- the submissions behind a number ------------------------------------------------

FILTERS = ("gradient", "verdict", "step", "line", "bin", "attempt", "full", "choice", "day",
           "late", "students")


def submission_filters(course: Course, args: Any) -> tuple[list[Any], dict[str, str]]:
    """SQL conditions on submissions for the analytics' filters in ``args`` (a mapping
    of query parameters), and the filters as given. Raises ValidationError naming
    the parameter and the reason."""
    given = {name: str(args.get(name)) for name in FILTERS if args.get(name)}
    where: list[Any] = []
    if ("gradient" in given) != ("verdict" in given):
        raise ValidationError("verdict", "gradient and verdict go together")
    if "gradient" in given:
        where.append(Submission.id.in_(select(SubmissionVerdict.submission_id).where(
            SubmissionVerdict.gradient == given["gradient"],
            SubmissionVerdict.verdict == given["verdict"])))
    if "step" in given:
        where.append(Submission.id.in_(select(SubmissionVerdict.submission_id).where(
            SubmissionVerdict.position == 0,
            SubmissionVerdict.first_step == _number(given, "step", 1))))
    if "line" in given:
        where.append(Submission.id.in_(select(SubmissionVerdict.submission_id).where(
            SubmissionVerdict.position == 0, SubmissionVerdict.first_text == given["line"])))
    if "bin" in given:
        low = _number(given, "bin", 0, BINS - 1)
        where += [Submission.status == GRADED, Submission.score >= low / BINS - 1e-9]
        if low < BINS - 1:
            where.append(Submission.score < (low + 1) / BINS - 1e-9)
    if "attempt" in given:
        where.append(Submission.attempt == _number(given, "attempt", 1))
    if "full" in given:
        where += [Submission.status == GRADED, Submission.score >= FULL]
    if "students" in given:  # the analytics count students only
        where.append(Submission.user_id.in_(_students(course)))
    if "late" in given:
        where.append(Submission.late.is_(True))
    if "day" in given:
        try:
            day = dt.date.fromisoformat(given["day"])
        except ValueError:
            raise ValidationError("day", f"{given['day']!r} is not a date (YYYY-MM-DD)") from None
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        where += [Submission.created_at >= start,
                  Submission.created_at < start + dt.timedelta(days=1)]
    if "choice" in given:
        name, _, label = given["choice"].partition(":")
        if not name or not label:
            raise ValidationError("choice", f"{given['choice']!r} is not NAME:OPTION")
        pair = json.dumps({name: label}, separators=(",", ":"))[1:-1]
        pattern = "%" + pair.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(Submission.instance_id.in_(select(Instance.id).where(
            Instance.choices_json.like(pattern, escape="\\"))))
    return where, given


def _number(given: dict[str, str], name: str, low: int, high: int | None = None) -> int:
    raw = given[name]
    if not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
        bounds = f"{low}..{high}" if high is not None else f"at least {low}"
        raise ValidationError(name, f"{raw!r} is not a whole number {bounds}")
    return int(raw)
