"""Submitting an answer: store it, grade it with no database lock held, record the verdict.

The three steps are separate functions, and ``submit_answer`` runs them in order:

1. ``store_answer`` (flush only): checks the text, finds the student's
   problem, draws their instance on first use, and stores the answer with
   ``services.submissions`` (refused outside the window or without attempts
   left, pending with an attempt number otherwise). It returns a
   ``GradingJob``: plain data, so grading touches no ORM object.
2. ``grade_job`` (no database): the engine for equations and expressions, in
   a judge process (``server.judge``: killed at a deadline), the sandbox for
   numpy code. Never raises: a failure of ours, or a grading that takes too
   long, becomes an ``error`` outcome.
3. ``record_outcome`` (flush only): the status, the result JSON and the score
   with the late credit applied, written only while the row is still pending
   and unclaimed by a recovery (services.recovery), so a submission is graded
   once. An invalid answer and an internal error give the attempt back.

The caller owns the transactions, as everywhere in ``services``; but
``submit_answer`` needs the stored answer to be durable *before* grading (a
numpy job may take two seconds, and on SQLite an open transaction holds the
write lock), so it takes the caller's ``commit`` and calls it exactly once,
between steps 1 and 2. If grading or recording fails after that, the answer is
still stored (``pending``); staff see it and can regrade it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from server.db import write_transaction
from server.engine.kinds import kind_of
from server.models import (
    AssignmentProblem,
    Instance,
    ProblemVersion,
    Submission,
    SubmissionStatus,
    User,
)
from server.services.assignments import (
    Window,
    assignment_problem_for,
    problem_for_submission,
    submission_window,
)
from server.services.errors import NotFound, Unavailable, ValidationError
from server.services.instances import Draw, derive_seed, get_instance, get_or_create_instance
from server.services.problems import record_problem_version
from server.services.submissions import attempts_left_after, store_submission_once
from server.services.verdicts import record_verdicts

log = logging.getLogger(__name__)

HIDDEN_INSTANCES = 2  # checks besides the student's own instance (numpy and equations)
# A whole backward pass is a few hundred lines at most; a numpy module a few kB.
MAX_ANSWER_CHARS = 20_000
MAX_CLIENT_KEY_CHARS = 64


class AnswerTooLarge(ValidationError):
    """The answer text is longer than MAX_ANSWER_CHARS (HTTP 413)."""


# --- the answer text ---------------------------------------------------------------


def clean_answer(answer: Any) -> str:
    """The answer as stored: a non-empty string, line ends normalized to ``\\n``.

    Raises ValidationError naming the field ``answer`` and the reason; such a
    text is not stored (there is nothing gradable to keep).
    """
    if not isinstance(answer, str):
        raise ValidationError("answer", f"must be a string, got {type(answer).__name__}")
    text = answer.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ValidationError("answer", "is empty")
    if len(text) > MAX_ANSWER_CHARS:
        raise AnswerTooLarge(
            "answer", f"is {len(text)} characters long; the limit is {MAX_ANSWER_CHARS}")
    if "\x00" in text:
        raise ValidationError("answer", "contains a NUL character (\\x00)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            "answer", f"contains a character that is not valid Unicode at position {exc.start}"
        ) from None
    return text


def clean_client_key(key: Any) -> str | None:
    """The form's or the API client's idempotency key: printable ASCII, 8..64 characters."""
    if key is None or key == "":
        return None
    if (not isinstance(key, str) or not 8 <= len(key) <= MAX_CLIENT_KEY_CHARS
            or not key.isascii() or not key.isprintable()):
        raise ValidationError(
            "submission_key", f"must be 8 to {MAX_CLIENT_KEY_CHARS} printable ASCII characters")
    return key


# --- specs and instances -------------------------------------------------------------

_SPEC_CACHE: OrderedDict[str, Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 64
# Per process: the instances of a class working on a problem at the same time
# (an expression draw costs ~20 ms of sympy; a cached one nothing).
STUDENTS_CACHED = 256


def cached(cache: OrderedDict, key: Any, make: Callable[[], Any], size: int = _CACHE_SIZE) -> Any:
    """``cache[key]``, made on a miss; the least recently used entries beyond ``size`` go."""
    with _CACHE_LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = make()
    with _CACHE_LOCK:
        cache[key] = value
        while len(cache) > size:
            cache.popitem(last=False)
    return value


def spec_for_version(bank: Mapping[str, Any], version: ProblemVersion) -> Any:
    """The spec an instance was drawn from: the bank's if unchanged, else the stored text.

    A version's text never changes (its hash names it), so the spec found for a
    hash is kept per process: a submission then asks the bank (a database
    query for the bank of record) only on the first use of a version."""
    with _CACHE_LOCK:
        known = _SPEC_CACHE.get(version.spec_hash)
    if known is not None:
        return known
    current = bank.get(version.problem_id)
    if current is not None and current.version == version.spec_hash:
        return cached(_SPEC_CACHE, version.spec_hash, lambda: current)

    def parse() -> Any:
        from server.engine.spec import parse_spec

        try:
            return parse_spec(version.spec_text,
                              f"<{version.problem_id} version {version.version}>")
        except Exception as exc:  # the engine no longer accepts an old spec text
            log.exception("stored spec %s version %s does not parse", version.problem_id,
                          version.version)
            raise Unavailable(
                f"problem: version {version.version} of {version.problem_id!r}, which your "
                f"instance was drawn from, cannot be read ({exc.__class__.__name__}); "
                "the course staff can see the error in the server log") from None

    return cached(_SPEC_CACHE, version.spec_hash, parse)


DRAW_FAILED = ("problem: {problem!r} cannot be drawn right now ({why}); nothing was lost, "
               "try again in a moment; the course staff can see the error in the server log")


def draw_for_seed(spec: Any, seed: int, *, judge: Any = None) -> Draw:
    """The engine's draw of ``spec`` for ``seed`` (a student's first visit; a regrade's
    redraw keeps the seed), in a judge process of the grading pool (``judge``,
    default this process's) under ``NABLA_DRAW_TIMEOUT_S`` and ``NABLA_DRAW_MEMORY_MB``:
    never in this thread. Raises Unavailable (with the reason in the log)."""
    from server.config import draw_settings
    from server.judge import JudgeError, get_judge, specs

    settings = draw_settings()
    try:
        answer = specs.draw(judge or get_judge(), spec, seed, timeout_s=settings["timeout_s"],
                            memory_mb=settings["memory_mb"])
    except JudgeError as exc:
        doing = f" ({exc.stage})" if exc.stage else ""
        log.error("drawing %s for seed %s failed in the judge (%s: %s)%s", spec.id, seed,
                  exc.kind, exc, doing)
        why = {"timeout": "it took too long", "memory": "it needed too much memory"}.get(
            exc.kind, "our side failed")
        raise Unavailable(DRAW_FAILED.format(problem=spec.id, why=why)) from None
    if answer.get("refused"):  # InstanceError, BrokenProblemError: the spec's fault
        log.error("drawing %s for seed %s failed: %s", spec.id, seed,
                  answer["refused"][0]["message"])
        raise Unavailable(DRAW_FAILED.format(problem=spec.id, why="the problem is broken"))
    # The whole engine document (with the reference and the per-step
    # accumulation) goes in reference_json; it never leaves the server.
    document = answer["document"]
    return Draw(dims=document["dims"], choices=document["choices"],
                values=document["values"], reference=document)


def ensure_instance(
    session: Session, user: User, assignment_problem: AssignmentProblem,
    bank: Mapping[str, Any], secret: bytes, *, judge: Any = None,
) -> Instance:
    """The student's instance row, drawn from the bank's current spec on first use (in
    the judge, before any write lock is taken: a draw may take seconds)."""
    existing = get_instance(session, user, assignment_problem)
    if existing is not None:
        return existing
    spec = bank.get(assignment_problem.problem_id)
    if spec is None:
        raise NotFound(f"problem: {assignment_problem.problem_id!r} is not available in the "
                       "problem bank right now; ask the course staff")
    seed = derive_seed(secret, assignment_problem.assignment.course_id, user.id,
                       assignment_problem.problem_id, 0)
    drawn = draw_for_seed(spec, seed, judge=judge)

    def draw(derived: int) -> Draw:
        return drawn if derived == seed else draw_for_seed(spec, derived, judge=judge)

    # A first visit writes (the version, the instance); get_or_create_instance
    # looks for the instance again inside the write transaction.
    write_transaction(session)
    try:
        with session.begin_nested():
            version = record_problem_version(session, spec,
                                             problem_key=assignment_problem.problem_id)
    except IntegrityError:  # a concurrent first visit recorded the same new version
        version = session.scalar(select(ProblemVersion).where(
            ProblemVersion.problem_id == assignment_problem.problem_id,
            ProblemVersion.spec_hash == spec.version))
        if version is None:
            raise
    return get_or_create_instance(session, user, assignment_problem, version, secret, draw)


# Instance rows never change: their engine objects are kept per process.
_INSTANCE_CACHE: OrderedDict[tuple[str, str], Any] = OrderedDict()


def engine_instance(spec: Any, document: Mapping[str, Any]) -> Any:
    """The engine's instance from the stored document (reference included)."""
    return kind_of(spec).from_json(spec, document)


# --- step 1: store -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GradingJob:
    """Everything grading needs, as plain data (no ORM objects, no session)."""

    submission_id: int
    spec: Any
    document_json: str  # the instance's engine JSON, reference included
    answer: str
    hidden_seeds: tuple[int, ...] = ()  # the hidden instances this answer is checked on


@dataclasses.dataclass
class Stored:
    submission: Submission
    created: bool  # False: a double click found the submission the first click stored
    window: Window
    job: GradingJob | None  # None: nothing to grade (refused, or already stored)
    attempts_used: int | None = None  # counting this one, if known without a query


def store_answer(
    session: Session, *, user: User, assignment_id: int, problem_id: str, answer: Any,
    now: dt.datetime, bank: Mapping[str, Any], secret: bytes, client_ip: str | None = None,
    client_key: Any = None,
) -> Stored:
    """Check and store an answer (flush only). Raises ValidationError, NotFound."""
    text = clean_answer(answer)
    key = clean_client_key(client_key)
    # One write transaction from the first read to the caller's commit (it always
    # writes: the submission), and one query for the problem, the instance and the
    # student's extension, which decides the window inside it.
    write_transaction(session)
    context = problem_for_submission(session, user, assignment_id, problem_id)
    assignment_problem, instance = context.assignment_problem, context.instance
    assignment = assignment_problem.assignment
    if instance is None:  # the first use: drawn now
        instance = ensure_instance(session, user, assignment_problem, bank, secret)
    spec = spec_for_version(bank, instance.problem_version)
    window = submission_window(assignment, now, context.extension)
    # Drawn before the row is stored, so that they go in with it (one INSERT): a
    # pending row always carries the seeds a regrade or a recovery checks it with.
    seeds = draw_hidden_seeds(secret, instance.seed)
    submission, created, attempts_used, _ = store_submission_once(
        session, user=user, assignment_problem=assignment_problem, instance=instance,
        answer=text, kind=spec.answer_kind, now=now, client_ip=client_ip, client_key=key,
        window=window, hidden_seeds=seeds, attempts=context.attempts)
    job = None
    if created and submission.status == SubmissionStatus.PENDING:
        job = GradingJob(submission.id, spec, instance.reference_json, text, tuple(seeds))
    return Stored(submission, created, window, job, attempts_used)


def draw_hidden_seeds(secret: bytes, instance_seed: int) -> list[int]:
    """Seeds of a new submission's hidden instances, from the server secret and a random
    nonce of the submission (drawn before its row exists, so that they are stored with
    it): different for every submission, unguessable without the secret."""
    nonce = secrets.token_hex(16)
    return [derive_seed(secret, "hidden", nonce, instance_seed, k)
            for k in range(HIDDEN_INSTANCES)]


def hidden_seeds_of(submission: Submission, document: Mapping[str, Any]) -> list[int]:
    """The hidden seeds a stored submission was (or is to be) checked with."""
    seeds = submission.hidden_seeds
    if seeds is not None:
        return seeds
    from server.engine.instance import legacy_hidden_seeds

    return legacy_hidden_seeds(document)


# --- step 2: grade -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # graded | invalid | error
    result: dict[str, Any]  # GradeResult.to_json(), or {"error": message}
    score: float | None  # the raw score, before late credit


INTERNAL_ERROR = ("the grader failed on our side; this submission costs no attempt. "
                  "Send it again in a moment (the course staff can see it)")
TOO_LONG = ("this answer took too long to grade (more than {limit:g} s) and was stopped; it "
            "costs no attempt. An answer this hard to evaluate is unlikely to be the one "
            "asked for: simplify it and send it again")
TOO_LARGE = ("this answer needed more memory to grade than allowed and was stopped; it costs "
             "no attempt. Simplify it and send it again")


def grade_job(job: GradingJob, *, run_job: Callable[..., Any] | None = None,
              judge: Any = None) -> Outcome:
    """Grade a stored answer; never raises. Answers that are code run in the
    sandbox (``run_job``, default: ``server.sandbox.run_job``); the others are
    graded by the engine in a judge process (``judge``, default: this process's)."""
    if not kind_of(job.spec).runs_student_code:
        return _grade_in_judge(job, judge)
    try:
        # Keyed by the document itself, not the row id: SQLite may reuse the id
        # of a deleted row.
        inst = cached(_INSTANCE_CACHE, (job.spec.version, job.document_json),
                      lambda: engine_instance(job.spec, json.loads(job.document_json)),
                      size=STUDENTS_CACHED)
        return _grade_in_sandbox(job, inst, run_job, judge)
    except Exception:
        log.exception("grading submission %s failed", job.submission_id)
        return Outcome(SubmissionStatus.ERROR.value, {"error": INTERNAL_ERROR}, None)


def _grade_in_judge(job: GradingJob, judge: Any) -> Outcome:
    from server.judge import JudgeError, get_judge, grade

    try:
        judge = judge or get_judge()
        result = grade(judge, job.spec, job.document_json, job.answer, job.hidden_seeds)
        valid, score = bool(result["valid"]), float(result["score"])
    except JudgeError as exc:
        if exc.kind == "timeout":
            log.warning("grading submission %s took longer than %g s: stopped", job.submission_id,
                        judge.timeout_s)
            message = TOO_LONG.format(limit=judge.timeout_s)
        elif exc.kind == "memory":
            log.warning("grading submission %s exceeded %s MB: stopped", job.submission_id,
                        judge.memory_mb)
            message = TOO_LARGE
        else:
            log.error("grading submission %s failed in the judge (%s): %s", job.submission_id,
                      exc.kind, exc)
            message = INTERNAL_ERROR
        return Outcome(SubmissionStatus.ERROR.value, {"error": message, "reason": exc.kind}, None)
    except Exception:
        log.exception("grading submission %s failed", job.submission_id)
        return Outcome(SubmissionStatus.ERROR.value, {"error": INTERNAL_ERROR}, None)
    status = SubmissionStatus.GRADED if valid else SubmissionStatus.INVALID
    return Outcome(status.value, result, score if valid else None)


def _hidden_from_judge(job: GradingJob, judge: Any) -> Callable[[Any], list]:
    """``draw_hidden`` for a numpy answer: its hidden instances drawn in the judge (the
    grading pool, under the draw limits), in one exchange."""
    def draw_hidden(seeds: Any) -> list:
        from server.config import draw_settings
        from server.judge import JudgeError, get_judge, specs

        settings = draw_settings()
        try:
            answer = specs.hidden(judge or get_judge(), job.spec, job.document_json, seeds,
                                  timeout_s=settings["timeout_s"], memory_mb=settings["memory_mb"])
        except JudgeError as exc:
            doing = f" ({exc.stage})" if exc.stage else ""
            raise HiddenDrawFailed(f"{exc.kind}: {exc}{doing}") from None
        if answer.get("refused"):
            raise HiddenDrawFailed(answer["refused"][0]["message"])
        return [engine_instance(job.spec, document) for document in answer["documents"]]

    return draw_hidden


class HiddenDrawFailed(Exception):
    """The judge could not draw a numpy answer's hidden instances: our failure."""


def _grade_in_sandbox(job: GradingJob, inst: Any, run_job: Callable[..., Any] | None,
                      judge: Any = None) -> Outcome:
    from server.sandbox import check_source

    if run_job is None:
        from server.sandbox import run_job as sandbox_run_job

        run_job = sandbox_run_job
    jobs: list[Any] = []

    def observed_run_job(*args: Any, **kwargs: Any) -> Any:
        job_result = run_job(*args, **kwargs)
        jobs.append(job_result)  # one job per instance, from several threads
        return job_result

    result = kind_of(job.spec).grade(job.spec, inst, job.answer, hidden_seeds=job.hidden_seeds,
                                     run_job=observed_run_job, check_source=check_source,
                                     draw_hidden=_hidden_from_judge(job, judge))
    failed = [j for j in jobs if j.status == "error"]
    if failed:
        # The sandbox failed (not the student's code, which cannot cause an
        # ``error``: server/sandbox/client.py): not an invalid answer.
        log.error("sandbox error grading submission %s: %s", job.submission_id,
                  failed[0].message)
        return Outcome(SubmissionStatus.ERROR.value, {"error": INTERNAL_ERROR}, None)
    status = SubmissionStatus.GRADED if result.valid else SubmissionStatus.INVALID
    return Outcome(status.value, result.to_json(), result.score if result.valid else None)


# --- step 3: record ------------------------------------------------------------------


def _record_statement(claimed: bool) -> Any:
    """The conditional UPDATE of ``record_outcome`` (built once: it runs on every
    submission), on the table: the caller sets the object's values itself."""
    table = Submission.__table__
    claim = table.c.graded_at == bindparam("claimed_at") if claimed else table.c.graded_at.is_(None)
    return (update(table)
            .where(table.c.id == bindparam("submission_id"),
                   table.c.status == SubmissionStatus.PENDING.value, claim)
            .values({name: bindparam("new_" + name)
                     for name in ("status", "graded_at", "score", "attempt", "result_json")}))


_RECORD = {claimed: _record_statement(claimed) for claimed in (False, True)}


def record_outcome(
    session: Session, submission: Submission, outcome: Outcome, *, window: Window,
    now: dt.datetime, claimed_at: dt.datetime | None = None,
) -> bool:
    """Write the verdict (flush only) if it is still this grader's to write: the row is
    pending and unclaimed (``claimed_at`` None: the request that stored it) or still
    carries this recovery's claim stamp (services.recovery). One conditional UPDATE, so
    of two graders racing (a recovery and a request that outlived the bound, or two
    recoveries) exactly one records; False for the other, whose ``submission`` is then
    reloaded as the winner left it. Invalid answers and our errors give the attempt back."""
    write_transaction(session)
    result = dict(outcome.result)
    score = attempt = None
    if outcome.status == SubmissionStatus.GRADED and outcome.score is not None:
        result["credit"] = window.credit
        score, attempt = round(outcome.score * window.credit, 6), submission.attempt
    # Not key-sorted: the gradients stay in the order the problem asks for them.
    values = {"status": outcome.status, "graded_at": now, "score": score, "attempt": attempt,
              "result_json": json.dumps(result, separators=(",", ":"))}
    written = session.execute(_RECORD[claimed_at is not None], {
        "submission_id": submission.id, "claimed_at": claimed_at,
        **{"new_" + name: value for name, value in values.items()}})
    if written.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(submission)
        return False
    for name, value in values.items():
        set_committed_value(submission, name, value)
    # The queryable copy for analytics; the UPDATE above took the row out of pending.
    record_verdicts(session, submission, first=True)
    return True


# --- all three -----------------------------------------------------------------------


@dataclasses.dataclass
class SubmitResult:
    submission: Submission
    created: bool
    window: Window
    attempts_left: int | None  # after this submission; None: unlimited


def submit_answer(
    session: Session, *, user: User, assignment_id: int, problem_id: str, answer: Any,
    now: dt.datetime, bank: Mapping[str, Any], secret: bytes, commit: Callable[[], None],
    client_ip: str | None = None, client_key: Any = None,
    run_job: Callable[..., Any] | None = None, clock: Callable[[], dt.datetime] | None = None,
    judge: Any = None,
) -> SubmitResult:
    """Store, commit (the caller's ``commit``), grade, record; see the module docstring.

    Raises ValidationError (bad text, not stored) and NotFound (not the
    user's problem) before anything is stored. Refused submissions are stored
    and returned with status ``refused``.
    """
    stored = store_answer(
        session, user=user, assignment_id=assignment_id, problem_id=problem_id, answer=answer,
        now=now, bank=bank, secret=secret, client_ip=client_ip, client_key=client_key)
    commit()  # the answer is safe now, and no lock is held while grading
    used = stored.attempts_used
    if stored.job is not None:
        outcome = grade_job(stored.job, run_job=run_job, judge=judge)
        if not record_outcome(session, stored.submission, outcome, window=stored.window,
                              now=(clock or _utcnow)()):
            used = None  # a recovery took it over (this grading outlived the bound): recount
        elif used is not None and stored.submission.attempt is None:
            used -= 1  # invalid, or our error: the attempt was given back
    submission = stored.submission
    limit = submission.assignment_problem.assignment.max_attempts
    if limit is None:
        left = None
    elif used is None:  # a second click's earlier submission, refused or invalid ones
        left = attempts_left_after(session, submission)
    else:
        left = max(0, limit - used)
    return SubmitResult(submission, stored.created, stored.window, left)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- checking without grading ------------------------------------------------------


def check_answer(
    session: Session, *, user: User, assignment_id: int, problem_id: str, answer: Any,
    now: dt.datetime, bank: Mapping[str, Any], secret: bytes, judge: Any = None,
    commit: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Validation only, as STACK separates validation from assessment: parse the answer
    and (equations) check every line's shape on the student's instance. Nothing is
    stored, nothing is graded, no attempt is used; works in any phase once the
    assignment is open. Returns ``{"valid", "errors": [{"line", "message"}], "stored":
    False}``; raises ValidationError (bad text), NotFound, Unavailable (the check took
    too long, or failed on our side). ``commit`` (the caller's) is called once the
    instance is read or drawn, so that no lock is held while the judge checks."""
    text = clean_answer(answer)
    assignment_problem = assignment_problem_for(session, user, assignment_id, problem_id)
    if now < assignment_problem.assignment.open_at and not user.is_admin:
        raise NotFound(f"problem: no problem {problem_id!r} in assignment {assignment_id} "
                       "of your courses is open yet")
    instance = ensure_instance(session, user, assignment_problem, bank, secret)
    spec = spec_for_version(bank, instance.problem_version)
    document_json = instance.reference_json
    if commit is not None:
        commit()
    kind = kind_of(spec)
    if kind.runs_student_code:  # checked here, without running it (``AnswerKind.check``)
        from server.sandbox import check_source

        result = kind.check(spec, None, text, check_source=check_source).to_json()
    else:
        from server.judge import JudgeError, get_judge, grade

        try:
            result = grade(judge or get_judge(), spec, document_json, text, task="check")
        except JudgeError as exc:
            log.warning("checking an answer to %s failed in the judge (%s)", spec.id, exc.kind)
            why = {"timeout": "it took too long to evaluate",
                   "memory": "it needed too much memory"}.get(exc.kind, "our checker failed")
            raise Unavailable(f"answer: could not be checked: {why}. Nothing was stored; "
                              "simplify it, or try again in a moment") from None
    errors = list(result.get("errors", []))
    return {"valid": not errors, "errors": errors, "stored": False,
            "answer_type": spec.answer_kind}
