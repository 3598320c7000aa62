"""Finishing submissions left ``pending``: their grading process died (a gunicorn
worker killed mid-grade, a machine restarted) after the answer was stored.

A pending submission older than a bound (``NABLA_RECOVER_AFTER_S``, far above the
longest grading: the judge's and the sandbox's deadlines are seconds) is
graded again from what is stored (its answer, instance and hidden seeds, so
the result is the one the first grading would have given) and its verdict
recorded: it ends ``graded``, or ``error`` (which gives its attempt back),
never lost and never counted twice (its attempt number stays the one it got
when stored).

Several recoverers may run at once (every app process, ``nabla submissions
recover``): each claims a submission first with a conditional UPDATE that
stamps ``graded_at`` on the pending row (a pending row's ``graded_at`` is
otherwise NULL), commits, grades with no lock held, and records the verdict
only if the row is still pending with its own stamp. A recoverer that dies
leaves a stamp older than the bound, and the next one claims the row again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from server.db import write_transaction
from server.models import Submission, SubmissionStatus
from server.services.assignments import student_window
from server.services.grading import (
    GradingJob,
    grade_job,
    hidden_seeds_of,
    record_outcome,
    spec_for_version,
)

log = logging.getLogger(__name__)

DEFAULT_AFTER_S = 120.0


@dataclasses.dataclass(frozen=True)
class Recovered:
    submission_id: int
    status: str  # graded | invalid | error, or "skipped" (another recoverer finished it)


def stale_pending(session: Session, *, now: dt.datetime, older_than: dt.timedelta) -> list[int]:
    """Ids of pending submissions stored (or last claimed) before ``now - older_than``."""
    cutoff = now - older_than
    rows = session.scalars(
        select(Submission.id)
        .where(Submission.status == SubmissionStatus.PENDING.value,
               Submission.created_at < cutoff,
               or_(Submission.graded_at.is_(None), Submission.graded_at < cutoff))
        .order_by(Submission.id))
    return list(rows)


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
    return claimed.rowcount == 1


def recover_pending(
    session: Session, *, now: Callable[[], dt.datetime], commit: Callable[[], None],
    bank: Mapping[str, Any] | None = None,
    older_than: dt.timedelta = dt.timedelta(seconds=DEFAULT_AFTER_S),
    run_job: Callable[..., Any] | None = None, judge: Any = None, limit: int = 100,
) -> list[Recovered]:
    """Grade and record every stale pending submission (at most ``limit``); the caller's
    ``commit`` ends each claim and each verdict (no lock is held while grading).
    ``bank``: specs by key, to skip parsing the stored text of an unchanged one."""
    done: list[Recovered] = []
    for submission_id in stale_pending(session, now=now(), older_than=older_than)[:limit]:
        if not _claim(session, submission_id, now=now(), older_than=older_than):
            commit()
            continue
        submission = session.get(Submission, submission_id, populate_existing=True)
        assert submission is not None
        stamp = submission.graded_at
        instance = submission.instance
        spec = spec_for_version(bank or {}, instance.problem_version)
        document = json.loads(instance.reference_json)
        job = GradingJob(submission.id, spec, instance.reference_json,
                         submission.answer, tuple(hidden_seeds_of(submission, document)))
        window = student_window(session, submission.user_id,  # their extension counts,
                                submission.assignment_problem.assignment,
                                submission.created_at)  # late as of when it was sent
        commit()
        outcome = grade_job(job, run_job=run_job, judge=judge)
        write_transaction(session)
        session.refresh(submission)
        if submission.status != SubmissionStatus.PENDING.value or submission.graded_at != stamp:
            commit()
            done.append(Recovered(submission_id, "skipped"))
            continue
        record_outcome(session, submission, outcome, window=window, now=now())
        commit()
        log.warning("submission %s was left pending; recovered as %s", submission_id,
                    outcome.status)
        done.append(Recovered(submission_id, outcome.status))
    return done
