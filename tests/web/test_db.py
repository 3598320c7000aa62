"""The session per request: committed on success, rolled back on a server error."""

import pytest
from flask import abort
from sqlalchemy import text

from server.db import get_engine, get_session, make_engine, write_transaction
from server.models import Course
from server.web.access import public

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def probe_app(app):
    def add(code):
        write_transaction(get_session())  # GETs begin as readers (server.db)
        get_session().add(Course(code=code, title="probe"))
        get_session().flush()

    @public
    def ok():
        add("OK")
        return "ok"

    @public
    def boom():
        add("BOOM")
        raise RuntimeError("a bug in a view")

    @public
    def conflict():
        add("CONFLICT")  # e.g. a refused submission is stored, then 409
        abort(409, "no attempts left")

    @public
    def busy():
        import sqlite3

        from sqlalchemy.exc import OperationalError

        add("BUSY")
        raise OperationalError(
            "BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")
        )

    app.add_url_rule("/_probe/busy", view_func=busy)
    app.add_url_rule("/_probe/ok", view_func=ok)
    app.add_url_rule("/_probe/boom", view_func=boom)
    app.add_url_rule("/_probe/conflict", view_func=conflict)
    return app


def _codes(app_session):
    app_session.expire_all()
    codes = {c.code for c in app_session.query(Course)}
    app_session.rollback()
    return codes


def test_success_commits_and_server_error_rolls_back(probe_app, app_session):
    client = probe_app.test_client()
    assert client.get("/_probe/ok").status_code == 200
    response = client.get("/_probe/boom")
    assert response.status_code == 500
    assert "a bug in a view" not in response.get_data(as_text=True)  # no internals shown
    assert client.get("/_probe/conflict").status_code == 409
    busy = client.get("/_probe/busy")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "2"
    assert "nothing was saved" in busy.get_data(as_text=True)
    assert _codes(app_session) == {"OK", "CONFLICT"}


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_app_engine_enforces_foreign_keys(app):
    from sqlalchemy.exc import IntegrityError

    from server.models import Enrollment

    with get_engine(app).connect() as connection, pytest.raises(IntegrityError):
        connection.execute(Enrollment.__table__.insert().values(
            user_id=999, course_id=999, role="student", created_at=text("CURRENT_TIMESTAMP")))


def test_client_ip_comes_from_the_proxy_only_when_trusted(database_url, tmp_path,
                                                          fast_password_hashing):
    from flask import request

    from server import create_app

    seen = []
    for proxies in (0, 1):
        app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": "s" * 40,
                          "INSTANCE_PATH": str(tmp_path), "NABLA_PROXIES": proxies})

        @public
        def whoami():
            return request.remote_addr

        app.add_url_rule("/_probe/ip", view_func=whoami)
        response = app.test_client().get(
            "/_probe/ip", headers={"X-Forwarded-For": "203.0.113.9"},
            environ_base={"REMOTE_ADDR": "10.0.0.1"})
        seen.append(response.get_data(as_text=True))
        get_engine(app).dispose()
    assert seen == ["10.0.0.1", "203.0.113.9"]
