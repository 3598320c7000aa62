"""Migrations: upgrade head on an empty database matches the models exactly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from server import create_app, db
from server.models import Base


def _differences(url: str) -> list:
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_head_creates_every_table_and_autogenerate_finds_no_difference(fresh_database_url):
    db.upgrade(fresh_database_url)
    engine = db.make_engine(fresh_database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert db.current_revision(engine) == db.head_revision(fresh_database_url)
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert _differences(fresh_database_url) == []


def test_autogenerate_sees_a_missing_table_on_an_empty_database(fresh_database_url):
    # The comparison above could pass vacuously if it compared nothing.
    diffs = _differences(fresh_database_url)
    added = {diff[1].name for diff in diffs if diff[0] == "add_table"}
    assert added == set(Base.metadata.tables)


def test_downgrade_to_base_then_upgrade_again(fresh_database_url):
    db.upgrade(fresh_database_url)
    from alembic import command

    command.downgrade(db.alembic_config(fresh_database_url), "base")
    engine = db.make_engine(fresh_database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    db.upgrade(fresh_database_url)
    assert _differences(fresh_database_url) == []


def test_app_refuses_a_database_behind_the_migrations(fresh_database_url, tmp_path):
    with pytest.raises(db.SchemaOutOfDate, match="nabla db upgrade"):
        create_app({"DATABASE_URL": fresh_database_url, "SECRET_KEY": "k" * 40,
                    "INSTANCE_PATH": str(tmp_path)})


def test_app_refuses_a_database_at_an_older_revision(fresh_database_url, tmp_path, monkeypatch):
    db.upgrade(fresh_database_url)
    monkeypatch.setattr(db, "head_revision", lambda url: "9999_future")
    with pytest.raises(db.SchemaOutOfDate) as excinfo:
        create_app({"DATABASE_URL": fresh_database_url, "SECRET_KEY": "k" * 40,
                    "INSTANCE_PATH": str(tmp_path)})
    message = str(excinfo.value)
    assert "9999_future" in message and "nabla db upgrade" in message


def test_upgrade_from_the_first_revision_keeps_existing_users(fresh_database_url):
    from sqlalchemy import text

    db.upgrade(fresh_database_url, "0001")
    engine = db.make_engine(fresh_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO users (email, name, password_hash, is_admin, created_at) "
                "VALUES ('old@example.edu', 'Old', NULL, false, CURRENT_TIMESTAMP)"))
        db.upgrade(fresh_database_url, "0004")
        with engine.connect() as connection:
            row = connection.execute(text(
                "SELECT failed_logins, login_locked_until FROM users")).one()
        assert tuple(row) == (0, None)
        db.upgrade(fresh_database_url)  # 0005 drops the account lock's columns
        with engine.connect() as connection:
            kept = connection.execute(text("SELECT email FROM users")).scalars().all()
        columns = {column["name"] for column in inspect(engine).get_columns("users")}
    finally:
        engine.dispose()
    assert kept == ["old@example.edu"]
    assert not {"failed_logins", "login_locked_until"} & columns
