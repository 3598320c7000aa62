"""The problem bank as the web app sees it: the database (``services.bank``).

Every app server reads specs from the database, cached by version hash
(``DatabaseBank``): one indexed query per lookup, and a text is parsed only
for a hash this process has not seen, so a version saved through another app
server is used at once. Tests and tools may hand the app a bank instead with
the config key ``NABLA_PROBLEM_BANK`` (a mapping, or a callable returning one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import abort, current_app
from werkzeug.exceptions import HTTPException

from server.db import get_session
from server.models import Course


def get_bank(course: Course | None = None) -> Mapping[str, Any]:
    """The problems ``course`` may assign (shared ones and its own); without a
    course, every problem by key (a student's assignment has chosen already)."""
    configured = current_app.config.get("NABLA_PROBLEM_BANK")
    if configured is None:
        from server.services.bank import DatabaseBank

        return DatabaseBank(get_session(), course, scope_all=course is None)
    try:
        return configured() if callable(configured) else configured
    except Exception as exc:  # e.g. a tool's bank built from spec files, one of them bad
        current_app.logger.error("the problem bank could not be loaded: %s", exc)
        abort(503, f"The problem bank could not be loaded: {exc}. "
                   "Fix the spec files (`nabla problems check` lists the errors).")


def get_bank_for_students() -> Mapping[str, Any]:
    """Every problem by key. A student's instance keeps the spec version it was
    drawn from (stored in the database), so grading needs no bank once the
    instance exists; a stored text the engine cannot read is left out of the
    bank, and a first visit then says the problem is not available."""
    try:
        return get_bank()
    except HTTPException:
        return {}
