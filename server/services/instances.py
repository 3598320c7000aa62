"""Per-student instances of a problem: the seed and the stored draw.

This is the seam for the grading service: ``get_or_create_instance`` returns
the student's instance row, drawing it once with the engine through the
``draw`` callable it is given (so this module never imports the engine).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from server.db import write_transaction
from server.models import AssignmentProblem, Instance, ProblemVersion, User
from server.models.base import dumps

SEED_LIMIT = 2**31  # seeds are in 0 .. 2**31 - 1


def derive_seed(secret: bytes, course_id: Any, user_id: Any, problem_id: Any, variant: Any) -> int:
    """A seed in 0 .. 2**31-1 from HMAC-SHA256(secret, course, user, problem, variant).

    The same inputs always give the same seed; without the secret nobody can
    compute another student's. The message is a JSON array, so no two
    different tuples encode to the same bytes (``("a,b", "c")`` vs ``("a", "b,c")``).
    """
    if not secret:
        raise ValueError("derive_seed needs a non-empty secret")
    message = json.dumps([course_id, user_id, problem_id, variant], separators=(",", ":"))
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % SEED_LIMIT


@dataclasses.dataclass(frozen=True)
class Draw:
    """What the engine draws for a seed; stored as JSON text on the instance."""

    dims: Any
    choices: Any
    values: Any
    reference: Any


def get_instance(
    session: Session, user: User, assignment_problem: AssignmentProblem
) -> Instance | None:
    return session.scalar(
        select(Instance)
        .options(joinedload(Instance.problem_version))  # graders need it: one query, not two
        .where(
            Instance.user_id == user.id,
            Instance.assignment_problem_id == assignment_problem.id,
        )
    )


def get_or_create_instance(
    session: Session,
    user: User,
    assignment_problem: AssignmentProblem,
    problem_version: ProblemVersion,
    secret: bytes,
    draw: Callable[[int], Draw],
    variant: int = 0,
) -> Instance:
    """The student's instance, drawn once from the derived seed and then kept.

    Two concurrent first visits race on the UNIQUE (user, assignment problem)
    constraint; the loser's insert is rolled back to a savepoint and the
    winner's row is returned, so both see the same instance. The lookup is
    inside the write transaction (``write_transaction``), so on SQLite a
    reader that found no instance earlier looks again after the other visit
    committed.
    """
    write_transaction(session)
    existing = get_instance(session, user, assignment_problem)
    if existing is not None:
        return existing
    course_id = assignment_problem.assignment.course_id
    seed = derive_seed(secret, course_id, user.id, assignment_problem.problem_id, variant)
    drawn = draw(seed)
    instance = Instance(
        user_id=user.id,
        assignment_problem_id=assignment_problem.id,
        problem_version_id=problem_version.id,
        seed=seed,
        dims_json=dumps(drawn.dims),
        choices_json=dumps(drawn.choices),
        values_json=dumps(drawn.values),
        reference_json=dumps(drawn.reference),
    )
    try:
        with session.begin_nested():
            session.add(instance)
    except IntegrityError:
        winner = get_instance(session, user, assignment_problem)
        if winner is None:
            raise
        return winner
    return instance
