"""The problem bank as the web app sees it.

The engine reads the bank (``server.engine.bank.load_bank``: id -> ProblemSpec).
Tests and tools may hand the app a bank instead, with the config key
``NABLA_PROBLEM_BANK`` (a mapping, or a callable returning one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import current_app


def get_bank() -> Mapping[str, Any]:
    cached = current_app.extensions.get("nabla_bank")
    if cached is not None:
        return cached
    configured = current_app.config.get("NABLA_PROBLEM_BANK")
    if configured is None:
        from server.engine.bank import load_bank

        bank = load_bank()
    elif callable(configured):
        bank = configured()
    else:
        bank = configured
    current_app.extensions["nabla_bank"] = bank
    return bank
