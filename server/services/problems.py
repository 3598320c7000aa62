"""The problem bank in the database: problems and their spec versions.

The bank of record is the database (``services.bank``: sync, the editor,
``DatabaseBank``). Here a spec is recorded as a ``Problem`` row and a
``ProblemVersion`` per distinct spec text, so every instance keeps the exact
version it was drawn from; a spec the database has already is just looked up.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.models import Problem, ProblemVersion


class SpecLike(Protocol):
    """The attributes of the engine's ProblemSpec that services use."""

    id: str
    title: str
    answer_kind: str
    statement: str
    source: str  # the spec file's text
    version: str  # a hash of the source: equal text, equal version


def record_problem_version(
    session: Session, spec: SpecLike | Any, spec_text: str | None = None,
    problem_key: str | None = None,
) -> ProblemVersion:
    """The ProblemVersion for ``spec``, creating the problem and version rows if new.

    ``spec_text`` is the spec's source text; by default ``spec.source``.
    ``spec.version`` (a hash of the text) identifies the version: the same hash
    always maps to the same version; a changed spec gets the next version number.
    The title and answer type follow the latest spec.

    ``problem_key``: the problem's key (default: the spec id, a shared
    problem); a course's problem must exist already (``services.bank``).
    """
    text = spec.source if spec_text is None else spec_text
    key = spec.id if problem_key is None else problem_key
    version = session.scalar(
        select(ProblemVersion).where(
            ProblemVersion.problem_id == key, ProblemVersion.spec_hash == spec.version
        )
    )
    if version is not None:  # the bank of record has it: nothing to write
        return version
    problem = session.get(Problem, key)
    if problem is None:
        if key != spec.id:
            raise LookupError(f"no problem {key!r} in the database")
        problem = Problem(id=key, spec_id=spec.id, title=spec.title, answer_type=spec.answer_kind)
        session.add(problem)
    else:
        problem.title = spec.title
        problem.answer_type = spec.answer_kind
    session.flush()
    latest = session.scalar(
        select(func.max(ProblemVersion.version)).where(ProblemVersion.problem_id == key)
    )
    version = ProblemVersion(
        problem=problem,
        version=(latest or 0) + 1,
        spec_text=text,
        spec_hash=spec.version,
    )
    session.add(version)
    session.flush()
    return version


def latest_version(session: Session, problem_id: str) -> ProblemVersion | None:
    return session.scalar(
        select(ProblemVersion)
        .where(ProblemVersion.problem_id == problem_id)
        .order_by(ProblemVersion.version.desc())
        .limit(1)
    )
