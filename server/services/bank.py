"""The problem bank in the database: the bank of record.

Problems and their versions live in the ``problems`` / ``problem_versions``
tables. A problem is shared (imported from the bank folder by ``nabla problems
sync``; nobody edits it in the browser) or belongs to one course (created,
edited and copied in by that course's staff). Every app server reads specs
from the database: ``DatabaseBank`` asks for the latest version's hash (one
indexed query) and parses a text only for a hash it has not seen, so a version
saved through one process is seen by every other at its next request.

A spec text becomes a version only if it validates (the engine's spec checker,
each error at its line) and its model solution grades 100 % on
``CHECK_SEEDS`` seeds. Equal text, equal version: saving or syncing the same
text again creates nothing.

Previews grade through ``grade_preview`` only, the one call into the grading
service (a submission's own path, without storing anything).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import statistics
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db import write_transaction
from server.engine.kinds import kind_of
from server.models import Assignment, AssignmentProblem, Course, Problem, ProblemVersion, User
from server.models.base import dumps
from server.services.errors import Conflict, Forbidden, NotFound, ServiceError

log = logging.getLogger(__name__)

CHECK_SEEDS = 20  # the model solution must grade 100 % on seeds 0 .. CHECK_SEEDS - 1
STATISTICS_SEEDS = 100
MAX_SPEC_CHARS = 100_000
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


def _refuse(message: str, line: int | None = None) -> SpecRefused:
    return SpecRefused([{"line": line, "message": message}])


# --- checking a spec text -----------------------------------------------------------


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


def parse_spec_text(text: Any, name: str = "<spec>") -> Any:
    """The engine's ProblemSpec of a text, or SpecRefused with every error at its line."""
    from server.engine.spec import SpecError, parse_spec

    text = clean_spec_text(text)
    try:
        return parse_spec(text, name)
    except SpecError as exc:
        raise SpecRefused([{"line": i.line, "message": i.message} for i in exc.issues]) from None


def check_model_solution(spec: Any, seeds: int = CHECK_SEEDS) -> None:
    """SpecRefused unless every seed draws and the model solution grades 100 % on it.

    Graded by the engine in this process: the model solution is derived from
    the spec, not typed by anyone. A numpy problem's model is checked in its
    equations form (the numpy module is generated from it line by line)."""
    from server.engine.instance import InstanceError
    from server.engine.problem import draw, grade_answer, model_answer

    checked = kind_of(spec).model_check_spec(spec)
    for seed in range(seeds):
        try:
            inst = draw(checked, seed)
        except InstanceError as exc:
            raise _refuse(f"seed {seed} cannot be drawn: {exc}") from None
        result = grade_answer(checked, inst, model_answer(checked, inst), hidden_seeds=())
        if not result.valid:
            first = result.errors[0] if result.errors else {"line": None, "message": "?"}
            why = str(first["message"]).splitlines()[0]
            raise _refuse(f"the model solution is not a valid answer on seed {seed} (line "
                          f"{first['line']} of the model answer: {why}): an engine defect; "
                          "the spec may still be right")
        if result.score < 1:
            raise _refuse(f"the model solution scores {result.score:.0%} on seed {seed}, not "
                          "100%: the spec's forward program and asked gradients disagree")


def validate_spec(text: Any, name: str = "<spec>", *, check_model: bool = True) -> Any:
    spec = parse_spec_text(text, name)
    if check_model:
        check_model_solution(spec)
    return spec


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


def save_version(
    session: Session, text: Any, *, course: Course | None = None, author: User | None = None,
    origin: str = "editor", expect_key: str | None = None, spec: Any = None,
) -> Saved:
    """A new version of the problem the text names (shared, or ``course``'s own),
    unless that exact text is already a version of it. Flush only.

    ``expect_key``: the problem being edited; the text must keep its id.
    ``spec``: the text's spec, already validated by the caller."""
    if spec is None:
        spec = validate_spec(text)
    text = clean_spec_text(text)
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


def sync_folder(session: Session, directory: Path, course: Course | None = None) -> SyncReport:
    """Import every ``*.toml`` of ``directory`` (flush only): a new version for a
    changed text, nothing for an unchanged one; a file that fails validation
    (or whose id is not its file name) is refused with its errors and changes
    nothing."""
    from server.engine.spec import key_line

    report = SyncReport()
    for path in sorted(directory.glob("*.toml")):
        try:
            text = clean_spec_text(path.read_text(encoding="utf-8"))
            spec = parse_spec_text(text, str(path))
            if spec.id != path.stem:
                raise _refuse(f"id {spec.id!r} does not match the file name {path.stem!r}",
                              key_line(text, "id"))
            key = problem_key(spec.id, course)
            known = session.scalar(select(ProblemVersion.id).where(
                ProblemVersion.problem_id == key, ProblemVersion.spec_hash == spec.version))
            if known is None:
                check_model_solution(spec)
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
    text = get_version(session, problem, None).spec_text
    return save_version(session, text, course=course, author=author, origin="copy",
                        spec=spec_of_text(get_version(session, problem, None).spec_hash,
                                          lambda: text))


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
    spec: Any
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


def preview(spec: Any, seed: int, answer: str | None = None) -> Preview:
    """What a student with ``seed`` sees, the references and the model solution; with
    ``answer``, its grade exactly as a submission's (nothing is stored)."""
    from server.engine.instance import InstanceError
    from server.engine.problem import draw, model_answer

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise _refuse(f"seed: must be a whole number from 0 to {2**31 - 1}, got {seed!r}")
    try:
        inst = draw(spec, seed)
    except InstanceError as exc:
        raise _refuse(f"seed {seed} cannot be drawn: {exc}") from None
    # Through the same JSON as a stored instance, so that the page shows it alike.
    document = json.loads(dumps(inst.to_json(include_reference=True)))
    public = {k: v for k, v in document.items() if k not in PRIVATE_KEYS}
    outcome = None
    if answer is not None and answer != "":
        outcome = grade_preview(spec, inst, document, answer)
    return Preview(spec, seed, document, public, model_answer(spec, inst), outcome)


def grade_preview(spec: Any, inst: Any, document: Mapping[str, Any], answer: str) -> Any:
    """The one call into grading: a submission's grading job (the judge for equations
    and expressions, the sandbox for numpy, the same hidden-instance checks),
    with nothing stored. Hidden seeds are the instance's deterministic ones."""
    from server.services import grading

    text = grading.clean_answer(answer)
    hidden = kind_of(spec).own_hidden_seeds(inst)
    job = grading.GradingJob(0, spec, json.dumps(document), text, hidden)
    return grading.grade_job(job)


# --- draw statistics ---------------------------------------------------------------------


@dataclasses.dataclass
class DrawStatistics:
    seeds: int
    dims: dict[str, list[tuple[Any, int]]]  # name -> (value, count), by value
    choices: dict[str, list[tuple[Any, int]]]
    mean_redraws: float | None  # None: expression problems do not redraw
    draw_ms_median: float
    draw_ms_max: float
    calibration_ms: float


def draw_statistics(spec: Any, seeds: int = STATISTICS_SEEDS) -> DrawStatistics:
    """Draw seeds 0 .. seeds-1: the spread of dims (constants for an expression
    problem) and of each [choose] choice, the mean redraws and the draw time."""
    from server.engine.instance import InstanceError

    dims: dict[str, Counter] = {}
    choices: dict[str, Counter] = {}
    redraws, times, calibration = [], [], 0.0
    for seed in range(seeds):
        start = time.perf_counter()
        try:
            drawn = kind_of(spec).draw_measured(spec, seed)
            if drawn.redraws is not None:
                redraws.append(drawn.redraws)
            calibration += drawn.calibration_seconds
            start += drawn.calibration_seconds  # once per structure and process
            inst, drawn_dims = drawn.instance, drawn.values
        except InstanceError as exc:
            raise _refuse(f"seed {seed} cannot be drawn: {exc}") from None
        times.append((time.perf_counter() - start) * 1e3)
        for name, value in drawn_dims.items():
            dims.setdefault(name, Counter())[value] += 1
        for name, value in (getattr(inst, "choices", None) or {}).items():
            choices.setdefault(name, Counter())[value] += 1
    return DrawStatistics(
        seeds=seeds,
        dims={k: sorted(c.items(), key=lambda kv: str(kv[0])) for k, c in dims.items()},
        choices={k: sorted(c.items(), key=lambda kv: str(kv[0])) for k, c in choices.items()},
        mean_redraws=statistics.mean(redraws) if redraws else None,
        draw_ms_median=statistics.median(times) if times else 0.0,
        draw_ms_max=max(times) if times else 0.0,
        calibration_ms=calibration * 1e3,
    )


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
