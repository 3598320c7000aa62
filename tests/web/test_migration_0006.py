"""Migration 0006 keeps existing problems and versions: they become shared problems."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from server import db
from tests.services.test_bank import tiny

pytestmark = pytest.mark.usefixtures("db_backend")


def test_existing_problems_become_shared_problems(fresh_database_url):
    config = db.alembic_config(fresh_database_url)
    command.upgrade(config, "0005")
    engine = db.make_engine(fresh_database_url)
    now = dt.datetime(2026, 11, 1)
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO problems (id, title, answer_type, created_at) "
                "VALUES ('tiny', 'A relu layer', 'equations', :now)"), {"now": now})
            connection.execute(text(
                "INSERT INTO problem_versions (problem_id, version, spec_text, spec_hash, "
                "created_at) VALUES ('tiny', 1, :t, 'h1', :now)"), {"t": tiny(), "now": now})
        command.upgrade(config, "head")
        with engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT p.id, p.spec_id, p.course_id, v.version, v.author_id FROM problems p "
                "JOIN problem_versions v ON v.problem_id = p.id")).all()
        assert [tuple(r) for r in rows] == [("tiny", "tiny", None, 1, None)]
        with engine.begin() as connection, pytest.raises(IntegrityError):  # unique per owner
            connection.execute(text(
                "INSERT INTO problems (id, spec_id, title, answer_type, created_at) "
                "VALUES ('tiny2', 'tiny', 't', 'equations', :now)"), {"now": now})
    finally:
        engine.dispose()
