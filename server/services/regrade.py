"""Regrade: run stored submissions again against the current engine, with an audit row
for every change.

``start_regrade`` picks the submissions (of a problem or an assignment of a
course, optionally one student's; refused ones are never graded and are left
out) and creates a ``regrade`` job (services.jobs) that runs in chunks. Each
chunk:

1. reads its submissions and, with ``redraw``, draws their instances again on
   the problem's latest version (the database's bank of record), keeping each
   instance's seed (the hidden-instance
   seeds stay as stored on each submission);
2. grades them with no transaction open (``_grade``: the one call into the
   grading pipeline), several at once;
3. applies the results one instance at a time, each in its own transaction:
   the instance's new draw, every submission whose status, score or result
   changed, a ``regrades`` row for each of those (actor, reason, old and new),
   and the job's progress. A worker that dies between two transactions leaves
   every applied change with its audit row and nothing half-done.

The same result as stored changes nothing and writes no row. A grading that
fails on our side (status ``error``) is counted as an error and not applied:
the stored result stays. The late credit a submission earned is kept.
``preview_regrade`` (``--dry-run``) does steps 1 and 2 and reports what would
change, writing nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, selectinload

from server.db import begin_as_reader, make_sessionmaker
from server.models import (
    Assignment,
    AssignmentProblem,
    Course,
    Instance,
    Job,
    Regrade,
    Submission,
    SubmissionStatus,
    User,
    utcnow,
)
from server.models.base import dumps
from server.services import grading
from server.services.errors import ValidationError
from server.services.jobs import add_progress, bank_of, create_job, job_kind
from server.services.problems import record_problem_version
from server.services.verdicts import record_verdicts

log = logging.getLogger(__name__)
CHUNK_SIZE = 200
MAX_REASON = 2000


@dataclasses.dataclass(frozen=True)
class Change:
    submission_id: int
    user_id: int
    problem_id: str
    old_status: str
    new_status: str
    old_score: float | None
    new_score: float | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Summary:
    submissions: int
    changed: int
    errors: int
    job: int | None
    changes: list[Change] = dataclasses.field(default_factory=list)


def select_submissions(session: Session, course: Course, *, assignment_id: int | None = None,
                       problem_id: str | None = None, user_id: int | None = None) -> list[int]:
    """Ids of the gradable submissions chosen, grouped by instance."""
    if assignment_id is None and problem_id is None:
        raise ValidationError("assignment", "choose an assignment or a problem to regrade")
    query = (select(Submission.id)
             .join(AssignmentProblem, AssignmentProblem.id == Submission.assignment_problem_id)
             .join(Assignment, Assignment.id == AssignmentProblem.assignment_id)
             .where(Assignment.course_id == course.id,
                    Submission.status != SubmissionStatus.REFUSED.value)
             .order_by(Submission.instance_id, Submission.id))
    if assignment_id is not None:
        if session.scalar(select(Assignment.id).where(
                Assignment.id == assignment_id, Assignment.course_id == course.id)) is None:
            raise ValidationError("assignment", f"there is no assignment {assignment_id} in "
                                                f"{course.code}")
        query = query.where(Assignment.id == assignment_id)
    if problem_id is not None:
        query = query.where(AssignmentProblem.problem_id == problem_id)
    if user_id is not None:
        query = query.where(Submission.user_id == user_id)
    return list(session.scalars(query))


def clean_reason(raw: Any) -> str:
    reason = " ".join(str(raw or "").split())
    if len(reason) > MAX_REASON:
        raise ValidationError("reason", f"is longer than {MAX_REASON} characters")
    return reason


def start_regrade(session: Session, course: Course, *, actor: User | None, reason: Any = "",
                  redraw: bool = False, assignment_id: int | None = None,
                  problem_id: str | None = None, user_id: int | None = None,
                  chunk_size: int = CHUNK_SIZE) -> Job:
    """A queued regrade job of the chosen submissions (flush only; dispatch it after the
    commit with ``services.jobs.dispatch``)."""
    why = clean_reason(reason)
    ids = select_submissions(session, course, assignment_id=assignment_id,
                             problem_id=problem_id, user_id=user_id)
    args = {"ids": ids, "redraw": bool(redraw), "reason": why,
            "actor_id": actor.id if actor else None, "chunk_size": chunk_size,
            "scope": {"assignment": assignment_id, "problem": problem_id, "user": user_id}}
    return create_job(session, "regrade", args, course=course, actor=actor, total=len(ids),
                      chunks=max(1, math.ceil(len(ids) / chunk_size)))


def chunk_ids(ids: Sequence[int], chunk: int, size: int = CHUNK_SIZE) -> Sequence[int]:
    return ids[chunk * size:(chunk + 1) * size]


# --- the work -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Task:
    """One submission to grade, as plain data."""

    submission_id: int
    instance_id: int
    job: grading.GradingJob | None  # None: it could not be prepared (counted as an error)


@dataclasses.dataclass(frozen=True)
class _Redraw:
    problem_key: str  # the problem (AssignmentProblem.problem_id)
    version_spec: Any  # the spec drawn from (its version is recorded when applied)
    draw: Any  # services.instances.Draw


def _grade(task: _Task) -> grading.Outcome:
    """The one call into the grading pipeline (the engine or the sandbox; never raises)."""
    if task.job is None:
        return grading.Outcome(SubmissionStatus.ERROR.value, {"error": "not prepared"}, None)
    return grading.grade_job(task.job)


def _load(factory: Any, ids: Sequence[int]) -> list[Submission]:
    """The submissions with their instances, read in a reader's transaction (the draws
    and the grading happen after it ended: no lock is held meanwhile)."""
    with factory() as session:
        begin_as_reader(session)
        with session.begin():
            return list(session.scalars(
                select(Submission).where(Submission.id.in_(ids))
                .options(selectinload(Submission.instance)
                         .selectinload(Instance.problem_version))
                .order_by(Submission.instance_id, Submission.id)))


def _prepare(submissions: Sequence[Submission], bank: Mapping[str, Any], redraw: bool
             ) -> tuple[list[_Task], dict[int, _Redraw]]:
    tasks: list[_Task] = []
    redraws: dict[int, _Redraw] = {}
    documents: dict[int, tuple[Any, str]] = {}
    for submission in submissions:
        try:
            tasks.append(_task(submission, bank, redraw, documents, redraws))
        except Exception:  # a spec or instance the engine cannot read: not applied
            log.exception("regrade: submission %s cannot be prepared", submission.id)
            tasks.append(_Task(submission.id, submission.instance_id, None))
    return tasks, redraws


def _task(submission: Submission, bank: Mapping[str, Any], redraw: bool,
          documents: dict[int, tuple[Any, str]], redraws: dict[int, _Redraw]) -> _Task:
    instance = submission.instance
    if instance.id not in documents:
        spec = grading.spec_for_version(bank, instance.problem_version)
        document_json = instance.reference_json
        current = bank.get(instance.problem_version.problem_id) if redraw else None
        if current is not None:
            draw = grading.draw_for_seed(current, instance.seed)
            if current.version != spec.version or dumps(draw.reference) != document_json:
                redraws[instance.id] = _Redraw(instance.problem_version.problem_id, current,
                                               draw)
            spec, document_json = current, dumps(draw.reference)
        documents[instance.id] = (spec, document_json)
    spec, document_json = documents[instance.id]
    seeds = grading.hidden_seeds_of(submission, json.loads(document_json))
    return _Task(submission.id, instance.id, grading.GradingJob(
        submission.id, spec, document_json, submission.answer, tuple(seeds)))


def _graded(tasks: Sequence[_Task], threads: int) -> list[grading.Outcome]:
    if threads <= 1 or len(tasks) <= 1:
        return [_grade(task) for task in tasks]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nabla-regrade") as pool:
        return list(pool.map(_grade, tasks))


def _new_values(submission: Submission, outcome: grading.Outcome
                ) -> tuple[str, float | None, str]:
    """Status, score and result JSON as the submission would store them now; the late
    credit it earned when it was sent is kept."""
    result = dict(outcome.result)
    score = None
    if outcome.status == SubmissionStatus.GRADED and outcome.score is not None:
        credit = (submission.result or {}).get("credit")
        if credit is None:
            assignment = submission.assignment_problem.assignment
            credit = assignment.late_credit / 100 if submission.late else 1.0
        result["credit"] = credit
        score = round(outcome.score * credit, 6)
    return outcome.status, score, json.dumps(result, separators=(",", ":"))


def _differs(submission: Submission, status: str, score: float | None, result_json: str
             ) -> bool:
    return (status != submission.status or score != submission.score
            or json.loads(result_json) != submission.result)


def _groups(tasks: Sequence[_Task], outcomes: Sequence[grading.Outcome]
            ) -> Iterator[tuple[int, list[tuple[_Task, grading.Outcome]]]]:
    group: list[tuple[_Task, grading.Outcome]] = []
    for task, outcome in zip(tasks, outcomes):
        if group and group[0][0].instance_id != task.instance_id:
            yield group[0][0].instance_id, group
            group = []
        group.append((task, outcome))
    if group:
        yield group[0][0].instance_id, group


def _apply_group(session: Session, instance_id: int, group: list[tuple[_Task, Any]],
                 redraw: _Redraw | None, *, job_id: int | None, actor_id: int | None,
                 reason: str, write: bool) -> tuple[list[Change], int]:
    """Compare (and with ``write``, apply and audit) one instance's results."""
    changes: list[Change] = []
    errors = 0
    by_id = {s.id: s for s in session.scalars(
        select(Submission).where(Submission.id.in_([t.submission_id for t, _ in group]))
        .options(selectinload(Submission.assignment_problem)
                 .selectinload(AssignmentProblem.assignment)))}
    if write and redraw is not None:
        instance = session.get(Instance, instance_id)
        version = record_problem_version(session, redraw.version_spec,
                                         problem_key=redraw.problem_key)
        instance.problem_version_id = version.id
        instance.dims_json = dumps(redraw.draw.dims)
        instance.choices_json = dumps(redraw.draw.choices)
        instance.values_json = dumps(redraw.draw.values)
        instance.reference_json = dumps(redraw.draw.reference)
    now = utcnow()
    for task, outcome in group:
        submission = by_id.get(task.submission_id)
        if submission is None:  # deleted meanwhile (a user or course removed)
            continue
        if outcome.status == SubmissionStatus.ERROR:
            errors += 1
            continue
        status, score, result_json = _new_values(submission, outcome)
        if not _differs(submission, status, score, result_json):
            continue
        changes.append(Change(submission.id, submission.user_id,
                              submission.assignment_problem.problem_id, submission.status,
                              status, submission.score, score))
        if not write:
            continue
        session.add(Regrade(
            submission_id=submission.id, actor_id=actor_id, job_id=job_id,
            reason=reason + (" (instance redrawn)" if redraw is not None else ""),
            old_status=submission.status, new_status=status, old_score=submission.score,
            new_score=score, old_result_json=submission.result_json,
            new_result_json=result_json, created_at=now))
        submission.status, submission.score, submission.result_json = status, score, result_json
        submission.graded_at = now
        record_verdicts(session, submission)
    return changes, errors


def regrade_ids(factory: Any, ids: Sequence[int], *, bank: Mapping[str, Any] | None,
                redraw: bool, threads: int, write: bool, job_id: int | None = None,
                attempt: int = 1, actor_id: int | None = None, reason: str = ""
                ) -> tuple[list[Change], int]:
    """Regrade ``ids`` (one chunk); with ``write``, apply instance by instance.
    ``bank``: problem key -> current spec; None: the database's (services.bank)."""
    with factory() as bank_session:
        begin_as_reader(bank_session)
        submissions = _load(factory, ids)
        tasks, redraws = _prepare(submissions, bank if bank is not None
                                  else _database_bank(bank_session), redraw)
        bank_session.rollback()
    outcomes = _graded(tasks, threads)
    changes: list[Change] = []
    errors = 0
    for instance_id, group in _groups(tasks, outcomes):
        with factory() as session:
            if not write:
                begin_as_reader(session)
            session.begin()
            found, failed = _apply_group(
                session, instance_id, group, redraws.get(instance_id), job_id=job_id,
                actor_id=actor_id, reason=reason, write=write)
            if write and job_id is not None:
                add_progress(session, job_id, attempt, done=len(group), changed=len(found),
                             errors=failed)
            session.commit()
        changes += found
        errors += failed
    return changes, errors


def audited_changes(session: Session, job_id: int) -> int:
    """A finished regrade's ``changed``: counted from its audit rows, so that a restarted
    job reports every change it made, before and after the restart."""
    return session.scalar(select(func.count(Regrade.id)).where(Regrade.job_id == job_id)) or 0


@job_kind("regrade", changed=audited_changes)
def regrade_chunk(engine: Engine, job_id: int, chunk: int, attempt: int,
                  settings: Mapping[str, Any]) -> None:
    factory = make_sessionmaker(engine)
    with factory() as session:
        args = session.get(Job, job_id).args  # type: ignore[union-attr]
    size = int(args.get("chunk_size") or CHUNK_SIZE)
    regrade_ids(factory, chunk_ids(args["ids"], chunk, size), bank=bank_of(settings),
                redraw=args["redraw"], threads=int(settings.get("threads", 4)), write=True,
                job_id=job_id, attempt=attempt, actor_id=args.get("actor_id"),
                reason=args.get("reason", ""))


def preview_regrade(engine: Engine, ids: Sequence[int], *, bank: Mapping[str, Any] | None,
                    redraw: bool, threads: int = 4) -> Summary:
    """What a regrade of ``ids`` would change (``--dry-run``): writes nothing."""
    factory = make_sessionmaker(engine)
    changes: list[Change] = []
    errors = 0
    for start in range(0, len(ids), CHUNK_SIZE):
        found, failed = regrade_ids(factory, ids[start:start + CHUNK_SIZE], bank=bank,
                                    redraw=redraw, threads=threads, write=False)
        changes += found
        errors += failed
    return Summary(len(ids), len(changes), errors, None, changes)


def _database_bank(session: Session) -> Mapping[str, Any]:
    from server.services.bank import DatabaseBank

    return DatabaseBank(session, None, scope_all=True)
