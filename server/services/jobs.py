"""Background jobs: a database row (kind, arguments, progress, state) plus one function.

A job is split into chunks (``Job.chunks``) that may run on different
workers. Where they run is the runner's business:

* with ``NABLA_REDIS_URL``: on RQ (``rq``, Redis Queue), one RQ job per chunk on
  the queue ``<NABLA_REDIS_PREFIX>jobs``, picked up by ``nabla worker``
  processes on any machine that reaches the same database and Redis;
* without it (the embedded default): in a background thread of the process
  that started the job, running the same chunk function.

Progress lives in the row, so any app server shows it. A chunk bumps the
job's ``heartbeat_at`` every few seconds while it runs; a running job whose
heartbeat is older than ``NABLA_JOB_STALE_S`` is marked failed (its worker
died) and can be restarted. A job's function must be safe to run again: a
restarted regrade finds what was already applied unchanged and leaves it.

The function of a kind is ``JOB_KINDS[kind](engine, job_id, chunk, attempt,
settings)``; it commits its own transactions (a chunk is long work, not a
request) and reports progress with ``add_progress``. A kind may also give how
its finished job counts ``changed`` (regrade: from its audit rows, so that a
restarted job reports every change it made).

Exclusive kinds (``models.job.EXCLUSIVE_KINDS``: the recovery of pending
submissions) have at most one job queued or running at a time, site-wide: a
partial UNIQUE index on ``jobs``, so that any number of app servers may try to
start one at once and exactly one row is created (``start_exclusive_job``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from server.db import make_sessionmaker, patient_engine, write_transaction
from server.models import Course, Job, JobState, User, utcnow
from server.models.base import dumps
from server.models.job import EXCLUSIVE_KINDS
from server.services.errors import Conflict, NotFound

log = logging.getLogger(__name__)
HEARTBEAT_S = 2.0
RQ_JOB_TIMEOUT_S = 3600
ChunkFunction = Callable[[Engine, int, int, int, Mapping[str, Any]], None]
ChangedCount = Callable[[Session, int], int]
JOB_KINDS: dict[str, ChunkFunction] = {}
CHANGED_COUNTS: dict[str, ChangedCount] = {}
ACTIVE_STATES = (JobState.QUEUED.value, JobState.RUNNING.value)
# Where each kind's function is registered (a worker imports it on first use).
KIND_MODULES = {"regrade": "server.services.regrade", "recover": "server.services.recovery"}


def job_kind(kind: str, *, changed: ChangedCount | None = None
             ) -> Callable[[ChunkFunction], ChunkFunction]:
    """Register a kind's chunk function; ``changed(session, job_id)``, when given, is the
    finished job's ``changed`` count (else the count its chunks added up)."""
    def register(function: ChunkFunction) -> ChunkFunction:
        JOB_KINDS[kind] = function
        if changed is not None:
            CHANGED_COUNTS[kind] = changed
        return function

    return register


def job_function(kind: str) -> ChunkFunction:
    if kind not in JOB_KINDS and kind in KIND_MODULES:
        importlib.import_module(KIND_MODULES[kind])
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    return JOB_KINDS[kind]


def create_job(session: Session, kind: str, args: Any, *, course: Course | None,
               actor: User | None, total: int, chunks: int) -> Job:
    """A queued job row (flush only); ``dispatch`` it after the commit."""
    job_function(kind)
    job = Job(kind=kind, args_json=dumps(args), course_id=course.id if course else None,
              actor_id=actor.id if actor else None, total=total, chunks=max(1, chunks),
              state=JobState.QUEUED.value)
    session.add(job)
    session.flush()
    return job


def start_exclusive_job(session: Session, kind: str, args: Any, *, total: int,
                        settings: Mapping[str, Any], actor: User | None = None,
                        now: dt.datetime | None = None,
                        still_wanted: Callable[[], bool] | None = None) -> Job | None:
    """A queued site-wide job of an exclusive kind (flush only; ``dispatch`` it after the
    commit), or None when one is already queued or running. One whose worker died (its
    heartbeat stopped) or that was lost before it started is failed first.
    ``still_wanted()`` is asked once no other job is active (one may just have done the
    work the caller saw to do)."""
    job_function(kind)
    write_transaction(session)
    active = active_job(session, kind)
    if active is not None:
        check_stale(session, active, settings["stale_s"], now)
        check_lost(session, active, settings, now)
        if active.state in ACTIVE_STATES:
            return None
    if still_wanted is not None and not still_wanted():
        return None
    job = Job(kind=kind, args_json=dumps(args), course_id=None,
              actor_id=actor.id if actor else None, total=total, chunks=1,
              state=JobState.QUEUED.value)
    try:
        with session.begin_nested():  # another server's may have won meanwhile
            session.add(job)
    except IntegrityError:
        return None
    return job


def active_job(session: Session, kind: str) -> Job | None:
    return session.scalar(select(Job).where(Job.kind == kind, Job.state.in_(ACTIVE_STATES)))


def get_job(session: Session, job_id: int, course: Course | None = None) -> Job:
    """A job; with ``course``, one of that course's or a site-wide one (a recovery)."""
    job = session.get(Job, job_id)
    if job is None or (course is not None and job.course_id not in (course.id, None)):
        raise NotFound(f"job: there is no job {job_id}" + (f" in {course.code}" if course else ""))
    return job


def course_jobs(session: Session, course: Course, limit: int = 30) -> list[Job]:
    """The latest jobs a course's staff see: the course's own and the site-wide ones."""
    return list(session.scalars(
        select(Job).where((Job.course_id == course.id) | Job.course_id.is_(None))
        .order_by(Job.id.desc()).limit(limit)))


def check_stale(session: Session, job: Job, stale_s: float, now: dt.datetime | None = None
                ) -> Job:
    """Mark a running job failed when its heartbeat stopped (its worker died)."""
    now = now or utcnow()
    beat = job.heartbeat_at or job.started_at
    if job.state == JobState.RUNNING and beat is not None \
            and (now - beat).total_seconds() > stale_s:
        write_transaction(session)
        changed = session.execute(
            update(Job).where(Job.id == job.id, Job.state == JobState.RUNNING.value,
                              Job.heartbeat_at == job.heartbeat_at)
            .values(state=JobState.FAILED.value, finished_at=now,
                    error=f"the worker stopped: no progress since {beat:%Y-%m-%d %H:%M:%S} UTC; "
                          "restart the job (what it applied is kept and audited)"))
        if changed.rowcount:  # type: ignore[attr-defined]
            session.refresh(job)
    return job


def check_lost(session: Session, job: Job, settings: Mapping[str, Any],
               now: dt.datetime | None = None) -> Job:
    """Mark failed a job queued for longer than ``stale_s`` that nothing will run: in-process,
    the process that started it died before it began; on RQ, its queue entries are gone.
    A queued job's ``heartbeat_at`` is when it was queued again (``restart_job``)."""
    now = now or utcnow()
    queued_at = job.heartbeat_at or job.created_at
    if job.state != JobState.QUEUED or (now - queued_at).total_seconds() <= \
            settings["stale_s"] or _still_on_queue(job, settings):
        return job
    write_transaction(session)
    changed = session.execute(
        update(Job).where(Job.id == job.id, Job.state == JobState.QUEUED.value,
                          Job.attempt == job.attempt)
        .values(state=JobState.FAILED.value, finished_at=now,
                error="the job never started: the process that queued it stopped, or its "
                      "queue entry was lost; restart the job"))
    if changed.rowcount:  # type: ignore[attr-defined]
        session.refresh(job)
    return job


def job_progress(job: Job) -> dict[str, Any]:
    """The job as the progress bar and the API show it."""
    return {"job": job.id, "kind": job.kind, "state": job.state, "total": job.total,
            "done": job.done, "changed": job.changed, "errors": job.errors,
            "error": job.error, "percent": round(100 * job.done / job.total) if job.total else
            (100 if job.state == JobState.DONE else 0)}


def restart_job(session: Session, job: Job) -> Job:
    """Queue a failed job again (flush only; ``dispatch`` it after the commit)."""
    if job.state != JobState.FAILED:
        raise Conflict(f"job: job {job.id} is {job.state}; only a failed job can be restarted")
    write_transaction(session)
    if job.kind in EXCLUSIVE_KINDS and active_job(session, job.kind) is not None:
        raise Conflict(f"job: another {job.kind} job is queued or running")
    try:
        with session.begin_nested():  # an exclusive kind's: another may have started
            job.state, job.error = JobState.QUEUED.value, None
            job.attempt += 1
            job.done = job.errors = job.chunks_done = 0
            job.started_at = job.finished_at = None
            job.heartbeat_at = utcnow()  # queued again now (check_lost)
    except IntegrityError:
        session.refresh(job)
        raise Conflict(f"job: another {job.kind} job is queued or running") from None
    return job


def bank_of(settings: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A bank handed to the runner (tests, tools; or a callable giving it), or None: the
    database's, read by the job itself."""
    bank = settings.get("bank")
    return bank() if callable(bank) else bank


# --- running chunks -------------------------------------------------------------------


def add_progress(session: Session, job_id: int, attempt: int, *, done: int = 0,
                 changed: int = 0, errors: int = 0) -> None:
    """Count work done, in the caller's transaction (with the changes it counts)."""
    session.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt).values(
        done=Job.done + done, changed=Job.changed + changed, errors=Job.errors + errors,
        heartbeat_at=utcnow()))


def run_chunk(engine: Engine, job_id: int, chunk: int, attempt: int,
              settings: Mapping[str, Any]) -> None:
    """Run one chunk of a job, with a heartbeat; the last chunk to finish closes the job.
    An exception fails the job with its message (the traceback goes to the log).
    Nobody waits on a job: on SQLite its transactions wait longer for the write lock
    than a request's (server.db.patient_engine), instead of failing under load."""
    engine = patient_engine(engine)
    factory = make_sessionmaker(engine)
    with factory() as session, session.begin():
        write_transaction(session)
        now = utcnow()
        started = session.execute(
            update(Job).where(Job.id == job_id, Job.attempt == attempt,
                              Job.state.in_(ACTIVE_STATES))
            .values(state=JobState.RUNNING.value, heartbeat_at=now,
                    started_at=func.coalesce(Job.started_at, now)))
        if not started.rowcount:  # type: ignore[attr-defined]
            return  # restarted, or failed meanwhile: this chunk is an old one
        kind = session.scalar(select(Job.kind).where(Job.id == job_id))
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(factory, job_id, attempt, stop),
                            name=f"nabla-job-{job_id}-heartbeat", daemon=True)
    beat.start()
    try:
        job_function(kind)(engine, job_id, chunk, attempt, settings)
    except Exception as exc:
        log.exception("job %s chunk %s failed", job_id, chunk)
        error = f"{exc.__class__.__name__}: {exc}"[:2000]

        def fail(session: Session) -> None:
            session.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt).values(
                state=JobState.FAILED.value, finished_at=utcnow(), error=error))

        _closing_transaction(factory, fail)
        return
    finally:
        stop.set()
        beat.join()

    def close(session: Session) -> None:
        session.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt)
                        .values(chunks_done=Job.chunks_done + 1))
        job = session.get(Job, job_id, populate_existing=True)
        if job is not None and job.attempt == attempt and job.chunks_done >= job.chunks \
                and job.state == JobState.RUNNING:
            job.state, job.finished_at = JobState.DONE.value, utcnow()
            if kind in CHANGED_COUNTS:
                job.changed = CHANGED_COUNTS[kind](session, job_id)

    _closing_transaction(factory, close)


CLOSING_TRIES = 8


def _closing_transaction(factory: Any, write: Callable[[Session], None]) -> None:
    """The transaction that ends a chunk, in a write transaction, tried again while the
    database is busy (a SQLite writer past its busy timeout, a PostgreSQL connection
    lost): the work is done, and a job whose end is never written stays 'running'
    until a look finds it stale."""
    for attempt in range(1, CLOSING_TRIES + 1):
        try:
            with factory() as session, session.begin():
                write_transaction(session)
                write(session)
            return
        except OperationalError:
            if attempt == CLOSING_TRIES:
                raise
            log.warning("a job's closing write failed (try %s); again", attempt, exc_info=True)
            time.sleep(0.1 * 2 ** attempt)


def _heartbeat(factory: Any, job_id: int, attempt: int, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            with factory() as session, session.begin():
                session.execute(update(Job).where(
                    Job.id == job_id, Job.attempt == attempt,
                    Job.state == JobState.RUNNING.value).values(heartbeat_at=utcnow()))
        except Exception:  # a busy database: the next beat tries again
            log.warning("job %s: heartbeat failed", job_id, exc_info=True)


# --- runners --------------------------------------------------------------------------


def dispatch(engine: Engine, job: Job, settings: Mapping[str, Any]) -> list[threading.Thread]:
    """Send a committed job's chunks to RQ, or run them in a background thread here.
    Returns the thread (in-process) so a command can wait for it."""
    job_id, chunks, attempt = job.id, job.chunks, job.attempt
    if settings.get("redis_url"):
        queue = _rq_queue(settings)
        for chunk in range(chunks):
            queue.enqueue(rq_run_chunk, job_id, chunk, attempt, job_timeout=RQ_JOB_TIMEOUT_S,
                          result_ttl=600, failure_ttl=86400,
                          job_id=rq_job_id(settings, job_id, attempt, chunk))
        return []

    def run_all() -> None:
        for chunk in range(chunks):
            run_chunk(engine, job_id, chunk, attempt, settings)

    thread = threading.Thread(target=run_all, name=f"nabla-job-{job_id}", daemon=True)
    thread.start()
    return [thread]


def rq_job_id(settings: Mapping[str, Any], job_id: int, attempt: int, chunk: int) -> str:
    """The RQ job of a chunk: one stable id per (queue, job, attempt, chunk), so that its
    entry can be found (``check_lost``) and the same chunk is never queued twice."""
    queue = "".join(c if c.isalnum() or c in "-_" else "-" for c in settings["queue"])
    return f"{queue}-{job_id}-{attempt}-{chunk}"


def _still_on_queue(job: Job, settings: Mapping[str, Any]) -> bool:
    """Whether RQ still holds a chunk of the job to run (False in-process: a queued job's
    thread starts at once, so one still queued after ``stale_s`` was lost)."""
    if not settings.get("redis_url"):
        return False
    import redis
    from rq.exceptions import NoSuchJobError
    from rq.job import Job as RQJob

    connection = redis.Redis.from_url(settings["redis_url"])
    for chunk in range(job.chunks):
        try:
            status = RQJob.fetch(rq_job_id(settings, job.id, job.attempt, chunk),
                                 connection=connection).get_status()
        except NoSuchJobError:
            continue
        if status in ("queued", "started", "deferred", "scheduled"):
            return True
    return False


def _rq_queue(settings: Mapping[str, Any]) -> Any:
    import redis
    from rq import Queue

    return Queue(settings["queue"], connection=redis.Redis.from_url(settings["redis_url"]))


_worker_engine: Engine | None = None


def rq_run_chunk(job_id: int, chunk: int, attempt: int) -> None:
    """What an RQ worker runs: the chunk, on this process's own database engine."""
    global _worker_engine
    from server.config import database_url, job_settings
    from server.db import make_engine

    if _worker_engine is None:
        _worker_engine = make_engine(database_url())
    run_chunk(_worker_engine, job_id, chunk, attempt, job_settings())


def run_worker(settings: Mapping[str, Any], *, burst: bool = False) -> None:
    """``nabla worker``: take chunks from the queue until stopped. A SimpleWorker runs
    them in this process, so the judge and sandbox pools stay warm between chunks."""
    import redis
    from rq import SimpleWorker

    connection = redis.Redis.from_url(settings["redis_url"])
    worker = SimpleWorker([_rq_queue(settings)], connection=connection)
    worker.work(burst=burst, with_scheduler=False)
