"""The problem bank as the web app sees it.

The engine reads the bank (``server.engine.bank.load_bank``: id -> ProblemSpec,
cached until a spec file changes, so edits show up without a restart). Tests
and tools may hand the app a bank instead with the config key
``NABLA_PROBLEM_BANK`` (a mapping, or a callable returning one).

The engine's check for changed files lists the folder and stats every spec
(about 40 system calls); the app does it at most once a second per process,
not on every request: an edited spec shows up within a second.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flask import abort, current_app
from werkzeug.exceptions import HTTPException

RECHECK_SECONDS = 1.0
_loaded: tuple[float, Mapping[str, Any]] | None = None  # (time.monotonic(), bank)


def get_bank() -> Mapping[str, Any]:
    """The bank, or a 503 page that names the broken spec files."""
    configured = current_app.config.get("NABLA_PROBLEM_BANK")
    try:
        if configured is None:
            return _engine_bank()
        return configured() if callable(configured) else configured
    except Exception as exc:  # the engine's SpecError lists every bad file
        current_app.logger.error("the problem bank could not be loaded: %s", exc)
        abort(
            503,
            f"The problem bank could not be loaded: {exc}. "
            "Fix the spec files (`nabla problems check` lists the errors).",
        )


def _engine_bank() -> Mapping[str, Any]:
    global _loaded
    loaded = _loaded  # one read: another thread may replace it meanwhile
    now = time.monotonic()
    if loaded is not None and now - loaded[0] < RECHECK_SECONDS:
        return loaded[1]
    from server.engine.bank import load_bank

    bank = load_bank()  # raises for a broken bank: nothing is kept then
    _loaded = (now, bank)
    return bank


def get_bank_for_students() -> Mapping[str, Any]:
    """The bank, or an empty one when it cannot be loaded.

    A student's instance keeps the spec version it was drawn from (stored in
    the database), so grading and the problem page do not need the bank once
    the instance exists: a broken spec file in the bank must not stop students
    from working and submitting. Only a first visit needs the bank, and then
    says the problem is not available.
    """
    try:
        return get_bank()
    except HTTPException:
        return {}
