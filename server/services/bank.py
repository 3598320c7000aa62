"""The problem bank in the database: the bank of record.

Problems and their versions live in the ``problems`` / ``problem_versions``
tables. A problem is shared (imported from the bank folder by ``nabla problems
sync``; nobody edits it in the browser) or belongs to one course (created,
edited and copied in by that course's staff). Every app server reads specs
from the database: ``DatabaseBank`` asks for the latest version's hash (one
indexed query) and parses a text only for a hash it has not seen, so a version
saved through one process is seen by every other at its next request.

A spec text becomes a version only if it validates (the engine's spec checker
and budget, each error at its line) and its model solution grades 100 % on
``CHECK_SEEDS`` seeds. All of that, the previews' draws and the draw statistics
run in the judge's spec pool (``server.judge.specs``), under its time and memory
limits: never in this process, which parses a text only once the judge did, to
show it. Equal text, equal version: saving or syncing the same text again
creates nothing and checks nothing (``known_version``: the hash names it).

Previews grade through ``grade_preview`` only, the one call into the grading
service (a submission's own path, without storing anything).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db import write_transaction
from server.engine.authoring import CHECK_SEEDS, STATISTICS_SEEDS, DrawStatistics
from server.engine.budget import MAX_SPEC_CHARS
from server.engine.kinds import kind_of
from server.models import Assignment, AssignmentProblem, Course, Problem, ProblemVersion, User
from server.services.errors import Conflict, Forbidden, NotFound, ServiceError, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# Parsing a saved version is the one spec work a web worker does (to show it): the
# judge refuses a text whose parse takes longer than this.
PARSE_LIMIT_S = 1.0
ORIGINS = ("sync", "editor", "api", "copy")
EXAMPLE_SPEC = '''id = "my-problem"
title = "A title"
answer = "equations"
statement = """What the student is given and must compute."""
given = "z2"
ask = ["W", "x"]
forward = """
z1 = W @ x
z2 = relu(z1)
"""

[dims]
N = [2, 5]
M = [2, 5]

[vars]
W = { shape = ["M", "N"], role = "param" }
x = { shape = ["N", 1], role = "input" }
'''  # the editor's starting text for a new problem


class SpecRefused(ServiceError):
    """A spec text that cannot become a version; ``errors`` as ``[{"line", "message"}]``
    (line None: about the whole spec)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(
            (f"line {e['line']}: " if e["line"] else "") + e["message"] for e in errors))


class CheckerBusy(Unavailable):
    """The spec pool of this app process is busy (HTTP 503 with Retry-After)."""


def _refuse(message: str, line: int | None = None) -> SpecRefused:
    return SpecRefused([{"line": line, "message": message}])


# --- checking a spec text (in the judge) ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpecMeta:
    """What the server needs of a checked text to store it (a ProblemSpec has the
    same attributes): the spec is parsed in the judge, not here."""

    id: str
    title: str
    answer_kind: str
    version: str

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> SpecMeta:
        return cls(data["id"], data["title"], data["answer"], data["version"])


def clean_spec_text(text: Any) -> str:
    if not isinstance(text, str):
        raise _refuse(f"spec: must be a string, got {type(text).__name__}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise _refuse("spec: is empty")
    if len(text) > MAX_SPEC_CHARS:
        raise _refuse(f"spec: is {len(text)} characters long; the limit is {MAX_SPEC_CHARS}")
    if "\x00" in text:
        raise _refuse("spec: contains a NUL character")
    return text


def text_hash(text: str) -> str:
    """The version hash of a cleaned text (``ProblemSpec.version``), without parsing it."""
    from server.engine.spec import spec_version

    return spec_version(text)


def _spec_judge(judge: Any) -> Any:
    from server.judge import get_spec_judge

    return judge or get_spec_judge()


def _judged(work: str, judge: Any, call: Callable[[Any], T]) -> T:
    """``call(judge)``, a spec's work in the judge; a limit hit becomes a refusal that
    names the work, the limit and what the judge was doing."""
    from server.judge import JudgeError

    judge = _spec_judge(judge)
    try:
        return call(judge)
    except JudgeError as exc:
        doing = f": {exc.stage}" if exc.stage else ""
        if exc.kind == "timeout":
            log.warning("spec work stopped after %g s (%s)%s", judge.timeout_s, work, doing)
            raise _refuse(f"{work} took more than {judge.timeout_s:g} s and was stopped{doing}. "
                          "Make the dims smaller, the program shorter or its values "
                          "tamer") from None
        if exc.kind == "memory":
            log.warning("spec work exceeded %s MB (%s)%s", judge.memory_mb, work, doing)
            raise _refuse(f"{work} needed more than {judge.memory_mb} MB of memory and was "
                          f"stopped{doing}. Make the dims smaller") from None
        if exc.kind == "busy":
            raise CheckerBusy("spec: this server process is checking another spec right now "
                              "(one at a time, so that students are never kept waiting); "
                              "nothing was saved: try again in a moment") from None
        log.error("spec work failed in the judge (%s, %s): %s", work, exc.kind, exc)
        raise Unavailable(f"spec: {work} failed on our side ({exc.kind}); nothing was "
                          "saved; try again in a moment") from None


def _refused(answer: Mapping[str, Any]) -> None:
    if answer.get("refused"):
        raise SpecRefused(list(answer["refused"]))


def validate_spec(text: Any, name: str = "<spec>", *, seeds: int = CHECK_SEEDS,
                  judge: Any = None) -> SpecMeta:
    """The text's SpecMeta if it may become a version: it parses within the budget,
    every seed draws (every entry of every value verified by finite differences,
    each draw within half a student's draw limit) and the model solution grades
    100 % on each; SpecRefused with every error at its line otherwise. All of it in
    the judge's spec pool (``judge``, default this process's), under its limits."""
    return _check(text, name, seeds, judge, report=False)[0]


def check_report(text: Any, name: str, seeds: int = CHECK_SEEDS,
                 judge: Any = None) -> tuple[SpecMeta, str]:
    """``validate_spec``, and the kind's figures of the draws (``nabla problems check``)."""
    return _check(text, name, seeds, judge, report=True)


def _check(text: Any, name: str, seeds: int, judge: Any, *, report: bool
           ) -> tuple[SpecMeta, str]:
    from server.config import draw_settings
    from server.judge import specs

    text = clean_spec_text(text)
    answer = _judged("drawing and verifying this spec", judge, lambda j: specs.check_text(
        j, text, name=name, seeds=seeds, report=report, parse_limit_s=PARSE_LIMIT_S,
        draw_limit_s=draw_settings()["draw_limit_s"]))
    _refused(answer)
    return SpecMeta.from_json(answer["meta"]), answer["report"]


# --- reading the bank ----------------------------------------------------------------

_SPECS: OrderedDict[str, Any] = OrderedDict()  # spec hash -> ProblemSpec, per process
_SPECS_LOCK = threading.Lock()
_SPECS_SIZE = 256


def spec_of_text(spec_hash: str, load_text: Any) -> Any:
    """The parsed spec of a version, cached by its hash (equal text, equal spec)."""
    with _SPECS_LOCK:
        if spec_hash in _SPECS:
            _SPECS.move_to_end(spec_hash)
            return _SPECS[spec_hash]
    from server.engine.spec import parse_spec

    spec = parse_spec(load_text())
    with _SPECS_LOCK:
        _SPECS[spec_hash] = spec
        while len(_SPECS) > _SPECS_SIZE:
            _SPECS.popitem(last=False)
    return spec


def problem_key(spec_id: str, course: Course | None) -> str:
    """The key of a problem in assignments and URLs (see models.problem.Problem)."""
    return spec_id if course is None else f"{spec_id}.c{course.id}"


def _latest_versions(session: Session, keys: list[str] | None = None,
                     course: Course | None = None) -> list[tuple[str, int, str]]:
    """(problem key, version id, spec hash) of the latest version of each problem."""
    latest = (select(ProblemVersion.problem_id, func.max(ProblemVersion.version).label("v"))
              .group_by(ProblemVersion.problem_id))
    if keys is not None:
        latest = latest.where(ProblemVersion.problem_id.in_(keys))
    sub = latest.subquery()
    query = (select(ProblemVersion.problem_id, ProblemVersion.id, ProblemVersion.spec_hash)
             .join(sub, (sub.c.problem_id == ProblemVersion.problem_id)
                   & (sub.c.v == ProblemVersion.version)))
    if course is not None or keys is None:
        query = query.join(Problem, Problem.id == ProblemVersion.problem_id).where(
            Problem.course_id.is_(None) if course is None
            else (Problem.course_id.is_(None) | (Problem.course_id == course.id)))
    return list(session.execute(query.order_by(ProblemVersion.problem_id)))


class DatabaseBank(Mapping[str, Any]):
    """Problem key -> the engine's spec of its latest version, read from the database.

    ``course``: the problems that course may put in an assignment (shared ones
    and its own); None with ``scope_all``: any problem by key (a student's
    assignment already chose it). A stored text that the engine no longer
    parses is left out (and logged), as a broken spec file used to be.
    """

    def __init__(self, session: Session, course: Course | None = None,
                 scope_all: bool = False) -> None:
        self.session, self.course, self.scope_all = session, course, scope_all

    def _spec(self, key: str, version_id: int, spec_hash: str) -> Any:
        def load_text() -> str:
            return self.session.scalar(
                select(ProblemVersion.spec_text).where(ProblemVersion.id == version_id))

        try:
            return spec_of_text(spec_hash, load_text)
        except Exception:
            log.exception("stored spec %s (version row %s) does not parse", key, version_id)
            return None

    def get(self, key: Any, default: Any = None) -> Any:
        if not isinstance(key, str):
            return default
        rows = _latest_versions(self.session, [key])
        if not rows:
            return default
        if not self.scope_all:
            owner = self.session.scalar(select(Problem.course_id).where(Problem.id == key))
            if owner is not None and (self.course is None or owner != self.course.id):
                return default
        spec = self._spec(*rows[0])
        return default if spec is None else spec

    def __getitem__(self, key: str) -> Any:
        spec = self.get(key)
        if spec is None:
            raise KeyError(key)
        return spec

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def _all(self) -> dict[str, Any]:
        rows = _latest_versions(self.session, None, self.course)
        specs = {key: self._spec(key, vid, h) for key, vid, h in rows}
        return {key: spec for key, spec in specs.items() if spec is not None}

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def items(self) -> Any:  # one query for all, not one per key
        return self._all().items()

    def values(self) -> Any:
        return self._all().values()


# --- writing versions -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Saved:
    version: ProblemVersion
    created: bool  # False: the text was the latest version's (or an earlier one's)


def latest_version(session: Session, key: str) -> ProblemVersion | None:
    return session.scalar(select(ProblemVersion).where(ProblemVersion.problem_id == key)
                          .order_by(ProblemVersion.version.desc()).limit(1))


def known_version(session: Session, text: Any, *, course: Course | None = None,
                  key: str | None = None) -> ProblemVersion | None:
    """The version that holds exactly this text: of the problem ``key``, or of any
    problem of ``course`` (the shared bank for None). Saving the text again creates
    nothing and needs no check: the hash names the text, and it was checked when
    it was saved."""
    text = clean_spec_text(text)
    query = select(ProblemVersion).where(ProblemVersion.spec_hash == text_hash(text))
    if key is not None:
        query = query.where(ProblemVersion.problem_id == key)
    else:
        query = query.join(Problem, Problem.id == ProblemVersion.problem_id).where(
            Problem.course_id.is_(None) if course is None else Problem.course_id == course.id)
    return session.scalar(query.order_by(ProblemVersion.version).limit(1))


def save_version(
    session: Session, text: Any, *, course: Course | None = None, author: User | None = None,
    origin: str = "editor", expect_key: str | None = None, spec: Any = None,
    judge: Any = None,
) -> Saved:
    """A new version of the problem the text names (shared, or ``course``'s own),
    unless that exact text is already a version of it (then nothing is checked
    again). Flush only.

    ``expect_key``: the problem being edited; the text must keep its id.
    ``spec``: the text's SpecMeta (or spec), already validated by the caller;
    otherwise it is validated in the judge (``judge``, default this process's)."""
    text = clean_spec_text(text)
    if spec is None:
        known = known_version(session, text, course=course, key=expect_key)
        if known is not None:
            return Saved(known, False)
        spec = validate_spec(text, judge=judge)
    key = problem_key(spec.id, course)
    if expect_key is not None and key != expect_key:
        from server.engine.spec import key_line

        raise _refuse(f"id: the spec's id {spec.id!r} is not this problem's; to make another "
                      "problem, use 'New problem'", key_line(text, "id"))
    write_transaction(session)
    problem = session.get(Problem, key)
    if problem is None:
        try:
            with session.begin_nested():
                problem = Problem(id=key, spec_id=spec.id, title=spec.title,
                                  course_id=None if course is None else course.id,
                                  answer_type=spec.answer_kind)
                session.add(problem)
        except IntegrityError:  # created by a concurrent save of the same new problem
            problem = session.get(Problem, key)
            if problem is None:
                raise Conflict(f"problem: {key!r} is being created by someone else; "
                               "try again") from None
    existing = session.scalar(select(ProblemVersion).where(
        ProblemVersion.problem_id == key, ProblemVersion.spec_hash == spec.version))
    if existing is not None:
        return Saved(existing, False)
    latest = latest_version(session, key)
    problem.title, problem.answer_type = spec.title, spec.answer_kind
    session.flush()
    version = ProblemVersion(problem_id=key, version=(latest.version if latest else 0) + 1,
                             spec_text=text, spec_hash=spec.version, author=author,
                             origin=origin)
    try:
        with session.begin_nested():
            session.add(version)
    except IntegrityError:
        raise Conflict(f"problem: {key!r} was saved by someone else at the same moment; "
                       "load it again and save your changes") from None
    return Saved(version, True)


@dataclasses.dataclass
class SyncReport:
    new_versions: list[str] = dataclasses.field(default_factory=list)
    unchanged: list[str] = dataclasses.field(default_factory=list)
    refused: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"new_versions": self.new_versions, "unchanged": self.unchanged,
                "refused": self.refused}


def sync_folder(session: Session, directory: Path, course: Course | None = None, *,
                judge: Any = None) -> SyncReport:
    """Import every ``*.toml`` of ``directory`` (flush only): a new version for a
    changed text, nothing for an unchanged one (not checked again: its hash is
    known); a file that fails validation in the judge (or whose id is not its file
    name) is refused with its errors and changes nothing."""
    from server.engine.spec import key_line

    report = SyncReport()
    for path in sorted(directory.glob("*.toml")):
        try:
            text = clean_spec_text(path.read_text(encoding="utf-8"))
            key = problem_key(path.stem, course)
            if known_version(session, text, key=key) is not None:
                report.unchanged.append(key)
                continue
            spec = validate_spec(text, str(path), judge=judge)
            if spec.id != path.stem:
                raise _refuse(f"id {spec.id!r} does not match the file name {path.stem!r}",
                              key_line(text, "id"))
            saved = save_version(session, text, course=course, origin="sync", spec=spec)
        except (OSError, UnicodeDecodeError) as exc:
            report.refused.append({"file": str(path), "errors": [
                {"line": None, "message": f"cannot read the file: {exc}"}]})
            continue
        except SpecRefused as exc:
            report.refused.append({"file": str(path), "errors": exc.errors})
            continue
        (report.new_versions if saved.created else report.unchanged).append(key)
    return report


# --- what staff see ---------------------------------------------------------------------


def staff_problem(session: Session, course: Course, key: str) -> Problem:
    """A problem the course's staff may see: shared, or the course's own. NotFound
    otherwise (another course's problems are not revealed)."""
    problem = session.get(Problem, key)
    if problem is None or problem.course_id not in (None, course.id):
        raise NotFound(f"problem: no problem {key!r} in {course.code} or the shared bank")
    return problem


def editable_problem(session: Session, course: Course, key: str) -> Problem:
    problem = staff_problem(session, course, key)
    if problem.course_id is None:
        raise Forbidden(f"problem: {key!r} is a shared problem: it changes only with `nabla "
                        "problems sync`; copy it to this course to change it")
    return problem


@dataclasses.dataclass(frozen=True)
class ProblemRow:
    key: str
    spec_id: str
    title: str
    answer_type: str
    shared: bool
    latest: int  # the latest version number
    used_by: list[tuple[int, str]]  # (assignment id, title) in this course

    def to_json(self) -> dict[str, Any]:
        return {"id": self.key, "spec_id": self.spec_id, "title": self.title,
                "answer_type": self.answer_type, "owner": "shared" if self.shared else "course",
                "version": self.latest,
                "assignments": [{"id": a, "title": t} for a, t in self.used_by]}


def course_problems(session: Session, course: Course) -> list[ProblemRow]:
    """The course's own problems, then the shared ones, with the assignments of the
    course that use each."""
    latest = dict(session.execute(
        select(ProblemVersion.problem_id, func.max(ProblemVersion.version))
        .group_by(ProblemVersion.problem_id)).all())
    problems = session.scalars(
        select(Problem).where(Problem.course_id.is_(None) | (Problem.course_id == course.id))
        .order_by(Problem.course_id.is_(None), Problem.spec_id))
    used: dict[str, list[tuple[int, str]]] = {}
    for key, aid, title in session.execute(
            select(AssignmentProblem.problem_id, Assignment.id, Assignment.title)
            .join(Assignment, Assignment.id == AssignmentProblem.assignment_id)
            .where(Assignment.course_id == course.id).order_by(Assignment.id)):
        used.setdefault(key, []).append((aid, title))
    return [ProblemRow(p.id, p.spec_id, p.title, p.answer_type, p.course_id is None,
                       latest.get(p.id, 0), used.get(p.id, [])) for p in problems]


def problem_versions(session: Session, problem: Problem) -> list[ProblemVersion]:
    """Newest first, with their authors loaded."""
    from sqlalchemy.orm import selectinload

    return list(session.scalars(
        select(ProblemVersion).options(selectinload(ProblemVersion.author))
        .where(ProblemVersion.problem_id == problem.id)
        .order_by(ProblemVersion.version.desc())))


def get_version(session: Session, problem: Problem, number: int | None) -> ProblemVersion:
    version = (latest_version(session, problem.id) if number is None else session.scalar(
        select(ProblemVersion).where(ProblemVersion.problem_id == problem.id,
                                     ProblemVersion.version == number)))
    if version is None:
        raise NotFound(f"version: {problem.id!r} has no version {number}")
    return version


def copy_to_course(session: Session, course: Course, key: str, author: User | None) -> Saved:
    """The shared problem's latest text as a problem of ``course`` (a new version of
    the course's copy if it has one already)."""
    problem = staff_problem(session, course, key)
    if problem.course_id is not None:
        raise Conflict(f"problem: {key!r} is already this course's own")
    version = get_version(session, problem, None)
    text = version.spec_text
    # the shared version was checked when it was saved: the same text needs no new check
    meta = SpecMeta(problem.spec_id, problem.title, problem.answer_type, version.spec_hash)
    return save_version(session, text, course=course, author=author, origin="copy", spec=meta)


def export_text(session: Session, spec_id: str, course: Course | None = None) -> str:
    version = latest_version(session, problem_key(spec_id, course))
    if version is None:
        where = "the shared bank" if course is None else course.code
        raise NotFound(f"problem: no problem {spec_id!r} in {where}")
    return version.spec_text


def text_diff(old: str, new: str, old_name: str, new_name: str) -> list[str]:
    """A unified diff, line by line (empty when the texts are equal)."""
    return list(difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name,
                                     lineterm=""))


# --- previews ----------------------------------------------------------------------------


@dataclasses.dataclass
class Preview:
    spec: Any  # parsed here (to show it) once the judge drew from it
    seed: int
    document: dict[str, Any]  # the engine's document, references included
    public: dict[str, Any]  # what the student gets: no reference
    solution: str  # the model answer in the problem's answer language
    outcome: Any = None  # grading.Outcome of the pasted answer, or None

    def grade_json(self) -> dict[str, Any] | None:
        if self.outcome is None:
            return None
        return {"status": self.outcome.status, "score": self.outcome.score,
                **self.outcome.result}


PRIVATE_KEYS = ("reference", "accumulation")


def preview(text: Any, seed: int, answer: str | None = None, *, spec_hash: str | None = None,
            judge: Any = None) -> Preview:
    """What a student with ``seed`` sees of the spec ``text`` (a saved version's, whose
    hash is ``spec_hash``, or a draft), the references and the model solution; with
    ``answer``, its grade exactly as a submission's (nothing is stored). The draw is
    the judge's (its spec pool, under its limits); the text is parsed here only
    after the judge drew from it, to show it."""
    from server.engine.spec import SpecError
    from server.judge import specs

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise _refuse(f"seed: must be a whole number from 0 to {2**31 - 1}, got {seed!r}")
    text = clean_spec_text(text)
    key = spec_hash or text_hash(text)
    drawn = _judged(f"drawing seed {seed} of this spec", judge,
                    lambda j: specs.preview(j, key, text, seed, parse_limit_s=PARSE_LIMIT_S))
    _refused(drawn)
    try:  # the judge parsed it within the budget: the same parse, bounded, to show it
        spec = spec_of_text(key, lambda: text)
    except SpecError as exc:  # only if this process's engine disagrees with the judge's
        raise SpecRefused(exc.to_json()) from None
    document = drawn["document"]
    public = {k: v for k, v in document.items() if k not in PRIVATE_KEYS}
    outcome = None
    if answer is not None and answer != "":
        outcome = grade_preview(spec, document, answer)
    return Preview(spec, seed, document, public, drawn["solution"], outcome)


def grade_preview(spec: Any, document: Mapping[str, Any], answer: str) -> Any:
    """The one call into grading: a submission's grading job (the judge for equations
    and expressions, the sandbox for numpy, the same hidden-instance checks),
    with nothing stored. Hidden seeds are the instance's deterministic ones."""
    from server.services import grading

    text = grading.clean_answer(answer)
    hidden = kind_of(spec).own_hidden_seeds(document)
    job = grading.GradingJob(0, spec, json.dumps(document), text, tuple(hidden))
    return grading.grade_job(job)


# --- draw statistics ---------------------------------------------------------------------


def draw_statistics(text: Any, seeds: int = STATISTICS_SEEDS, *, judge: Any = None
                    ) -> DrawStatistics:
    """Draw seeds 0 .. seeds-1 of the spec ``text`` in the judge: the spread of dims
    (constants for an expression problem) and of each [choose] choice, the mean
    redraws and the draw time."""
    from server.judge import specs

    text = clean_spec_text(text)
    answer = _judged(f"drawing {seeds} seeds of this spec", judge,
                     lambda j: specs.statistics(j, text_hash(text), text, seeds,
                                                parse_limit_s=PARSE_LIMIT_S))
    _refused(answer)
    return DrawStatistics.from_json(answer["statistics"])


def preview_feedback(outcome: Any, answer: str) -> dict[str, Any]:
    """What the feedback page shows for a graded preview (as for a submission):
    ``summary`` (score, message), ``lines`` (each line's verdict) and ``general``."""
    from server.services import feedback

    result = outcome.result
    message = result.get("error") or ("graded" if outcome.status == "graded"
                                       else "not a valid answer: it costs no attempt")
    return {
        "summary": {"score": outcome.score, "raw_score": outcome.score, "credit": 1.0,
                    "attempts_left": None, "message": message,
                    "gradients": result.get("gradients", {})},
        "lines": feedback.annotated_lines(answer, result),
        "general": feedback.general_errors(result, answer),
    }
