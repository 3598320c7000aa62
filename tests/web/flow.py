"""Helpers for the tests that grade through the web app (real problem bank)."""

from __future__ import annotations

import json
import re

from server.models import Instance, Submission, User

_KEY_RE = re.compile(r'name="submission_key" type="hidden" value="([^"]+)"')


def submission_key(html: str) -> str:
    match = _KEY_RE.search(html)
    assert match, "no submission_key on the page"
    return match.group(1)


def model_answer(app_session, bank, email: str, problem_id: str) -> str:
    """The model answer for the student's stored instance (drawn by a page visit first)."""
    from server.engine.problem import model_answer as engine_model_answer
    from server.services.grading import engine_instance, spec_for_version

    app_session.expire_all()
    row = (app_session.query(Instance).join(User, User.id == Instance.user_id)
           .filter(User.email == email).all())
    (row,) = [r for r in row if r.assignment_problem.problem_id == problem_id]
    spec = spec_for_version(bank, row.problem_version)
    answer = engine_model_answer(spec, engine_instance(spec, json.loads(row.reference_json)))
    app_session.rollback()  # on SQLite, release the lock before the app writes
    return answer


def stored(app_session) -> list[tuple[str, int | None, str]]:
    """(status, attempt, answer) of every stored submission, oldest first."""
    app_session.expire_all()
    rows = [(s.status, s.attempt, s.answer)
            for s in app_session.query(Submission).order_by(Submission.id)]
    app_session.rollback()
    return rows
