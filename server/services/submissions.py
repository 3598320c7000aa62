"""Submissions: storing one before it is graded (lateness, refusals, attempt
numbers), and reading them (a student's own, a course's for staff).

A seam for the grading service (server/services/grading.py): it calls
``store_submission`` first, so nothing a student sends is lost, then grades the
pending row. This module never grades.

Attempt numbers are allocated against the UNIQUE (user, assignment problem,
attempt) constraint, so the limit holds in the database under concurrency:
two requests that pick the same number collide, the loser looks again and
takes the next free number or, if none is left, is refused.

A ``client_key`` (the random key of the answer form, or an API client's
``Idempotency-Key``) is UNIQUE per user and problem: a double click or a
retried request finds the submission the first click stored instead of
storing (and grading) a second one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached, selectinload

from server.db import write_transaction
from server.models import (
    Assignment,
    AssignmentProblem,
    Course,
    Instance,
    Submission,
    SubmissionStatus,
    User,
)
from server.models.base import dumps
from server.services.assignments import Window, student_window
from server.services.errors import Conflict, Forbidden, NotFound

MAX_ALLOCATION_TRIES = 8


class StoreResult(NamedTuple):
    submission: Submission
    created: bool  # False: an earlier submission with the same client key
    attempts_used: int | None  # counting this one; None when not counted here
    window: Window | None = None  # the student's window the decision used (None: not read)


_USED_ATTEMPTS = select(Submission.attempt).where(  # built once: every submission runs it
    Submission.user_id == bindparam("user_id"),
    Submission.assignment_problem_id == bindparam("assignment_problem_id"),
    Submission.attempt.is_not(None),
)


def used_attempts(session: Session, user_id: int, assignment_problem_id: int) -> list[int]:
    return sorted(session.scalars(_USED_ATTEMPTS, {
        "user_id": user_id, "assignment_problem_id": assignment_problem_id}))


def _lowest_free(used: list[int]) -> int:
    # Released attempts (invalid answers) leave gaps; reuse them so attempt
    # numbers never exceed the limit.
    taken = set(used)
    number = 1
    while number in taken:
        number += 1
    return number


def find_by_client_key(
    session: Session, user_id: int, assignment_problem_id: int, client_key: str
) -> Submission | None:
    return session.scalar(
        select(Submission).where(
            Submission.user_id == user_id,
            Submission.assignment_problem_id == assignment_problem_id,
            Submission.client_key == client_key,
        )
    )


_INSERTED = tuple(column.key for column in Submission.__table__.columns if column.key != "id")
# Built once per database (it runs on every submission); every column is a parameter.
_INSERT_UNLESS_TAKEN = {
    name: make_insert(Submission.__table__)
    .values({key: bindparam(key) for key in _INSERTED})
    .on_conflict_do_nothing().returning(Submission.__table__.c.id)
    for name, make_insert in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))}


def _value_or_default(submission: Submission, name: str) -> Any:
    """The attribute, or the column's default where it is unset: every column is a
    parameter of the prebuilt INSERT, so no default would apply by itself."""
    value = getattr(submission, name)
    default = Submission.__table__.c[name].default
    if value is None and default is not None and default.is_scalar:
        value = default.arg
    elif value is None and default is not None and default.is_callable:
        value = default.arg(None)  # type: ignore[operator]  (wrapped: takes a context)
    if value is not None:
        setattr(submission, name, value)
    return value


def _insert_unless_taken(session: Session, submission: Submission) -> bool:
    """INSERT a new submission's row unless one of its UNIQUE keys (attempt number, client
    key) is taken: ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``, one statement and no
    savepoint (a failed statement would end a PostgreSQL transaction without one). True
    when stored: the object is then in the session as stored, every column loaded.
    Any other integrity error (a row it refers to deleted meanwhile) is a Conflict."""
    values = {name: _value_or_default(submission, name) for name in _INSERTED}
    try:
        new_id = session.execute(_INSERT_UNLESS_TAKEN[session.get_bind().dialect.name],
                                 values).scalar()
    except IntegrityError:
        raise Conflict("submission: the problem or the instance changed while it was "
                       "stored; send it again") from None
    if new_id is None:
        return False
    submission.id = new_id
    make_transient_to_detached(submission)  # as if loaded: no INSERT at the next flush
    session.add(submission)
    return True


def store_submission(session: Session, **fields: Any) -> Submission:
    """Store an answer; ``store_submission_once`` with the same keyword
    arguments, returning only the submission."""
    submission, *_ = store_submission_once(session, **fields)
    return submission


def store_submission_once(
    session: Session,
    *,
    user: User,
    assignment_problem: AssignmentProblem,
    instance: Instance,
    answer: str,
    kind: str,
    now: dt.datetime,
    client_ip: str | None = None,
    costs_attempt: bool = True,
    client_key: str | None = None,
    window: Window | None = None,
    hidden_seeds: list[int] | None = None,
    attempts: tuple[int, int] | None = None,
) -> StoreResult:
    """Store an answer, deciding its status before any grading.

    Returns ``(submission, created, attempts_used)``: ``created`` is False
    when a submission with the same ``client_key`` was already stored (a
    double click); that earlier submission is returned and nothing new is
    stored. ``attempts_used`` counts the user's attempts at the problem
    including this one, when known without another query.

    * outside the submission window (not open yet, or past the late-until
      date): status ``refused``, no attempt; ``result`` is ``{"refused": why}``;
    * ``costs_attempt=False`` (the answer is already known to be invalid):
      status ``invalid``, no attempt;
    * every attempt used: ``refused`` with ``{"refused": "no attempts left ..."}``;
    * otherwise ``pending`` with the lowest free attempt number, ``late`` set
      inside the late period.

    Refused and invalid submissions are stored too (staff see them).

    Everything the decision depends on is read inside the write transaction
    (``write_transaction``: on SQLite it holds the write lock from here to the
    caller's commit, so keep that short). ``window``: the student's window, if the
    caller read their extension inside this same write transaction already.
    ``hidden_seeds``: stored with a pending submission (the hidden instances it is
    checked on), in the same INSERT. ``attempts``: the user's (count, highest attempt
    number) at the problem, if the caller read them inside this write transaction.
    """
    write_transaction(session)
    if client_key is not None:
        earlier = find_by_client_key(session, user.id, assignment_problem.id, client_key)
        if earlier is not None:
            return StoreResult(earlier, False, None)
    assignment = assignment_problem.assignment
    if window is None:
        window = student_window(session, user.id, assignment, now)

    def new(status: SubmissionStatus, attempt: int | None,
            refused: str | None = None) -> Submission:
        return Submission(
            user_id=user.id,
            # The object, not only its id: the response reads the problem and its
            # assignment from it, with no query (and no transaction) to load them.
            assignment_problem=assignment_problem,
            assignment_problem_id=assignment_problem.id,
            instance_id=instance.id,
            answer=answer,
            kind=kind,
            status=status.value,
            attempt=attempt,
            late=window.late,
            created_at=now,
            client_ip=client_ip,
            client_key=client_key,
            result_json=None if refused is None else dumps({"refused": refused}),
            hidden_seeds_json=(dumps(hidden_seeds) if status == SubmissionStatus.PENDING
                               and hidden_seeds is not None else None),
            score=None,
            graded_at=None,
        )

    def insert(submission: Submission, used: int | None = None) -> StoreResult | None:
        """The row stored, an earlier one with the same client key, or None (a collision)."""
        if _insert_unless_taken(session, submission):
            return StoreResult(submission, True, used, window)
        if client_key is not None:
            earlier = find_by_client_key(session, user.id, assignment_problem.id, client_key)
            if earlier is not None:
                # the same click, stored by a concurrent request
                return StoreResult(earlier, False, None)
        if submission.attempt is None:  # only a client key can collide: it went meanwhile
            raise Conflict("submission: stored at the same moment by another request and "
                           "gone again; send it again")
        return None

    if not window.accepting:
        stored = insert(new(SubmissionStatus.REFUSED, None, window.message))
        assert stored is not None  # attempt None: a collision raises instead
        return stored
    if not costs_attempt:
        stored = insert(new(SubmissionStatus.INVALID, None))
        assert stored is not None
        return stored
    limit = assignment.max_attempts
    for _ in range(MAX_ALLOCATION_TRIES):
        if attempts is not None and attempts[0] == attempts[1]:
            # n attempts numbered up to n: 1..n are all taken, no gap to reuse
            count, number = attempts[0], attempts[0] + 1
        else:
            used = used_attempts(session, user.id, assignment_problem.id)
            count, number = len(used), _lowest_free(used)
        attempts = None  # after a collision, look again
        if limit is not None and count >= limit:
            reason = f"no attempts left: all {limit} attempts at this problem are used"
            stored = insert(new(SubmissionStatus.REFUSED, None, reason), count)
            assert stored is not None
            return stored
        stored = insert(new(SubmissionStatus.PENDING, number), count + 1)
        if stored is not None:
            return stored
        # another request took this number first; look again
    raise Conflict("attempt: too many submissions at the same moment; send it again")


# --- reading submissions ----------------------------------------------------------


def attempts_left(session: Session, submission_or_problem: Submission | AssignmentProblem,
                  user_id: int) -> int | None:
    """Attempts the user has left at this problem; None when unlimited."""
    if isinstance(submission_or_problem, Submission):
        assignment_problem = submission_or_problem.assignment_problem
    else:
        assignment_problem = submission_or_problem
    limit = assignment_problem.assignment.max_attempts
    if limit is None:
        return None
    return max(0, limit - len(used_attempts(session, user_id, assignment_problem.id)))


def attempts_left_after(session: Session, submission: Submission) -> int | None:
    """Attempts its author had left right after ``submission`` (None: unlimited):
    what a past submission's feedback says, whatever came later."""
    limit = submission.assignment_problem.assignment.max_attempts
    if limit is None:
        return None
    used = session.scalar(select(func.count(Submission.id)).where(
        Submission.user_id == submission.user_id,
        Submission.assignment_problem_id == submission.assignment_problem_id,
        Submission.attempt.is_not(None),
        Submission.id <= submission.id))
    return max(0, limit - int(used or 0))


def attempts_left_after_each(submissions: Sequence[Submission], max_attempts: int | None
                             ) -> dict[int, int | None]:
    """Submission id -> what ``attempts_left_after`` says of it, from the list of *all*
    of one user's submissions of one problem (no query; None: unlimited)."""
    if max_attempts is None:
        return {s.id: None for s in submissions}
    left, used = {}, 0
    for submission in sorted(submissions, key=lambda s: s.id):
        used += submission.attempt is not None
        left[submission.id] = max(0, max_attempts - used)
    return left


def own_submission(session: Session, user: User, submission_id: int) -> Submission:
    """One of ``user``'s submissions. NotFound if unknown, Forbidden if someone else's."""
    submission = session.get(Submission, submission_id)
    if submission is None:
        raise NotFound(f"submission: there is no submission {submission_id}")
    if submission.user_id != user.id:
        raise Forbidden(f"submission: submission {submission_id} is not yours")
    return submission


def problem_submissions(session: Session, user: User,
                        assignment_problem: AssignmentProblem) -> list[Submission]:
    """The user's submissions of one problem, newest first."""
    return list(session.scalars(
        select(Submission)
        .where(Submission.user_id == user.id,
               Submission.assignment_problem_id == assignment_problem.id)
        .order_by(Submission.created_at.desc(), Submission.id.desc())
    ))


def course_submissions(
    session: Session, course: Course, assignment_id: int | None = None, *,
    status: str | None = None, user_id: int | None = None, problem_id: str | None = None,
    limit: int = 500, where: Sequence[Any] = (),
) -> list[Submission]:
    """Every submission in a course (refused ones too), newest first, for staff;
    optionally of one assignment, status, student or problem, and ``where``: more
    conditions (services.analytics.submission_filters)."""
    query = (
        select(Submission)
        .join(AssignmentProblem, AssignmentProblem.id == Submission.assignment_problem_id)
        .join(Assignment, Assignment.id == AssignmentProblem.assignment_id)
        .options(selectinload(Submission.user),
                 selectinload(Submission.assignment_problem).selectinload(
                     AssignmentProblem.problem))
        .where(Assignment.course_id == course.id, *where)
        .order_by(Submission.created_at.desc(), Submission.id.desc())
        .limit(limit)
    )
    if assignment_id is not None:
        query = query.where(Assignment.id == assignment_id)
    if status is not None:
        query = query.where(Submission.status == status)
    if user_id is not None:
        query = query.where(Submission.user_id == user_id)
    if problem_id is not None:
        query = query.where(AssignmentProblem.problem_id == problem_id)
    return list(session.scalars(query))


def course_submission_counts(session: Session, course: Course) -> dict[int, dict[str, int]]:
    """assignment id -> {status: count} for the staff course page."""
    rows = session.execute(
        select(Assignment.id, Submission.status, func.count(Submission.id))
        .join(AssignmentProblem, AssignmentProblem.assignment_id == Assignment.id)
        .join(Submission, Submission.assignment_problem_id == AssignmentProblem.id)
        .where(Assignment.course_id == course.id)
        .group_by(Assignment.id, Submission.status)
    )
    counts: dict[int, dict[str, int]] = {}
    for assignment_id, status, count in rows:
        counts.setdefault(assignment_id, {})[status] = count
    return counts


def course_submission(session: Session, course: Course, submission_id: int) -> Submission:
    """A submission of the course (staff view); NotFound otherwise."""
    submission = session.get(Submission, submission_id)
    if (submission is None
            or submission.assignment_problem.assignment.course_id != course.id):
        raise NotFound(f"submission: no submission {submission_id} in {course.code}")
    return submission
