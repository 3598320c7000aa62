"""Finishing submissions left ``pending``: their grading process died (a gunicorn
worker killed mid-grade, a machine restarted) after the answer was stored.

A pending submission older than a bound (``NABLA_RECOVER_AFTER_S``, far above the
longest grading: the judge's and the sandbox's deadlines are seconds) is
graded again from what is stored (its answer, instance and hidden seeds, so
the result is the one the first grading would have given) and its verdict
recorded: it ends ``graded``, or ``error`` (which gives its attempt back),
never lost and never counted twice (its attempt number stays the one it got
when stored).

It runs as a ``recover`` job (services.jobs): ``start_recovery`` looks for
such submissions (one query on a partial index) and, when there are any,
creates the job, of which at most one is queued or running site-wide (an
exclusive kind); every app process looks at start and every
``NABLA_RECOVER_EVERY_S`` (server.web.background), and ``nabla submissions
recover`` starts one and waits for it. The job runs where every job runs: in
a thread of the process that started it, or on ``nabla worker`` processes
with Redis.

Several graders may still meet on one submission (a recovery job whose worker
was taken for dead, the request that stored the answer outliving the bound):
a recovery claims a submission first with a conditional UPDATE that stamps
``graded_at`` on the pending row (a pending row's ``graded_at`` is otherwise
NULL), commits, grades with no lock held, and records the verdict only if the
row is still pending with its own stamp (``grading.record_outcome``, one
conditional UPDATE; the request records only if the row is unclaimed). A
recoverer that dies leaves a stamp older than the bound, and the next one
claims the row again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session

from server.db import make_sessionmaker, write_transaction
from server.models import Job, Submission, SubmissionStatus, utcnow
from server.services.assignments import student_window
from server.services.grading import (
    GradingJob,
    Outcome,
    grade_job,
    hidden_seeds_of,
    record_outcome,
    spec_for_version,
)
from server.services.jobs import add_progress, bank_of, job_kind, start_exclusive_job

log = logging.getLogger(__name__)

KIND = "recover"
DEFAULT_AFTER_S = 120.0
LIMIT = 500  # submissions per job; the next look takes the rest
SKIPPED = "skipped"  # another grader finished or holds it
UNREADABLE = Outcome(SubmissionStatus.ERROR.value,
                     {"error": "this answer could not be graded (its stored problem instance "
                               "cannot be read); it is kept, costs no attempt, and staff can "
                               "regrade it"}, None)


@dataclasses.dataclass(frozen=True)
class Recovered:
    submission_id: int
    status: str  # graded | invalid | error, or "skipped" (another grader finished it)


def stale_pending(session: Session, *, now: dt.datetime, older_than: dt.timedelta,
                  limit: int | None = None) -> list[int]:
    """Ids of pending submissions stored (or last claimed) before ``now - older_than``."""
    cutoff = now - older_than
    query = (select(Submission.id)
             .where(Submission.status == SubmissionStatus.PENDING.value,
                    Submission.created_at < cutoff,
                    or_(Submission.graded_at.is_(None), Submission.graded_at < cutoff))
             .order_by(Submission.id))
    return list(session.scalars(query if limit is None else query.limit(limit)))


def _claim(session: Session, submission_id: int, *, now: dt.datetime,
           older_than: dt.timedelta) -> bool:
    cutoff = now - older_than
    write_transaction(session)
    claimed = session.execute(
        update(Submission)
        .where(Submission.id == submission_id,
               Submission.status == SubmissionStatus.PENDING.value,
               or_(Submission.graded_at.is_(None), Submission.graded_at < cutoff))
        .values(graded_at=now)
        .execution_options(synchronize_session=False))
    return claimed.rowcount == 1  # type: ignore[attr-defined]


def recover_pending(
    session: Session, *, now: Callable[[], dt.datetime], commit: Callable[[], None],
    bank: Mapping[str, Any] | None = None,
    older_than: dt.timedelta = dt.timedelta(seconds=DEFAULT_AFTER_S),
    run_job: Callable[..., Any] | None = None, judge: Any = None, limit: int = LIMIT,
    on_each: Callable[[Session, Recovered], None] | None = None,
) -> list[Recovered]:
    """Grade and record every stale pending submission (at most ``limit``); the caller's
    ``commit`` ends each claim and each verdict (no lock is held while grading).
    ``bank``: specs by key, to skip parsing the stored text of an unchanged one.
    ``on_each(session, item)`` runs in the transaction that ends each submission (a job
    counts its progress there)."""
    done: list[Recovered] = []

    def finish(item: Recovered) -> None:
        if on_each is not None:
            write_transaction(session)
            on_each(session, item)
        commit()
        done.append(item)

    for submission_id in stale_pending(session, now=now(), older_than=older_than,
                                       limit=limit):
        if not _claim(session, submission_id, now=now(), older_than=older_than):
            finish(Recovered(submission_id, SKIPPED))
            continue
        submission = session.get(Submission, submission_id, populate_existing=True)
        assert submission is not None
        stamp = submission.graded_at
        window = student_window(session, submission.user_id,  # their extension counts,
                                submission.assignment_problem.assignment,
                                submission.created_at)  # late as of when it was sent
        job = _grading_job(submission, bank or {})
        commit()
        outcome = UNREADABLE if job is None else grade_job(job, run_job=run_job, judge=judge)
        if not record_outcome(session, submission, outcome, window=window, now=now(),
                              claimed_at=stamp):
            finish(Recovered(submission_id, SKIPPED))
            continue
        log.warning("submission %s was left pending; recovered as %s", submission_id,
                    outcome.status)
        finish(Recovered(submission_id, outcome.status))
    return done


def _grading_job(submission: Submission, bank: Mapping[str, Any]) -> GradingJob | None:
    """What to grade, from what is stored; None when the stored instance or spec cannot be
    read (the submission then ends ``error``, visibly, instead of blocking every run)."""
    try:
        instance = submission.instance
        spec = spec_for_version(bank, instance.problem_version)
        document = json.loads(instance.reference_json)
        return GradingJob(submission.id, spec, instance.reference_json,
                          submission.answer, tuple(hidden_seeds_of(submission, document)))
    except Exception:
        log.exception("submission %s: its stored instance cannot be read", submission.id)
        return None


# --- as a job -------------------------------------------------------------------------


def start_recovery(session: Session, settings: Mapping[str, Any], *, older_than_s: float,
                   always: bool = False, now: dt.datetime | None = None) -> Job | None:
    """A queued recovery job (flush only; ``jobs.dispatch`` it after the commit) when
    submissions have been pending longer than ``older_than_s`` (``always``: even when
    none has, for a command that reports what it did), or None: nothing to do, or a
    recovery job is already queued or running (``jobs.active_job`` finds it)."""
    now = now or utcnow()
    older_than = dt.timedelta(seconds=older_than_s)
    found = len(stale_pending(session, now=now, older_than=older_than, limit=LIMIT))
    if not found and not always:
        return None
    return start_exclusive_job(
        session, KIND, {"older_than_s": older_than_s, "limit": LIMIT}, total=found,
        settings=settings, now=now, still_wanted=None if always else lambda: bool(
            stale_pending(session, now=now, older_than=older_than, limit=1)))


@job_kind(KIND)
def recover_chunk(engine: Engine, job_id: int, chunk: int, attempt: int,
                  settings: Mapping[str, Any]) -> None:
    """The job: recover what is stale now; progress and each submission's end in the row
    (``done`` looked at, ``changed`` recovered, ``errors`` ended ``error``)."""
    factory = make_sessionmaker(engine)
    with factory() as session:
        args = session.get(Job, job_id).args  # type: ignore[union-attr]
        older_than = dt.timedelta(seconds=float(args["older_than_s"]))
        ids = stale_pending(session, now=utcnow(), older_than=older_than,
                            limit=int(args.get("limit") or LIMIT))
        write_transaction(session)
        session.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt)
                        .values(total=len(ids), result_json=json.dumps({"submissions": []})))
        session.commit()
        ended: list[list[Any]] = []

        def count(session: Session, item: Recovered) -> None:
            ended.append([item.submission_id, item.status])
            add_progress(session, job_id, attempt, done=1, changed=int(item.status != SKIPPED),
                         errors=int(item.status == SubmissionStatus.ERROR))
            session.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt)
                            .values(result_json=json.dumps({"submissions": ended})))

        recover_pending(session, now=utcnow, commit=session.commit, bank=bank_of(settings),
                        older_than=older_than, limit=len(ids), on_each=count)


def recovered_of(job: Job) -> list[Recovered]:
    """What a recovery job did, submission by submission."""
    return [Recovered(int(sid), str(status))
            for sid, status in (job.result or {}).get("submissions", [])]
