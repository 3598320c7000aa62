"""Who takes SQLite's write lock, and when (server.db): readers begin DEFERRED and
never wait for it; writers begin IMMEDIATE, for as short a time as possible."""

import threading
import time

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from server import db
from server.db import (
    begin_as_reader,
    get_session,
    make_engine,
    make_sessionmaker,
    reads_first,
    transaction_mode,
    write_transaction,
)
from server.models import Course, utcnow
from server.services import tokens
from server.web.access import public
from server.web.app import csrf

# SQLite's locking only: PostgreSQL has row locks and MVCC writers
sqlite_only = pytest.mark.backends("sqlite")


@pytest.fixture
def mode_app(app):
    """Views that report the transaction mode their request's session got."""

    def report():
        session = get_session()
        session.execute(text("SELECT 1"))
        return transaction_mode(session) or "none"

    @public
    def read():
        return report()

    @public
    def post():
        return report()

    @public
    @reads_first
    def post_reads_first():
        return report()

    @public
    def read_then_write():
        session = get_session()
        session.scalar(select(func.count(Course.id)))
        write_transaction(session)
        session.add(Course(code="WROTE", title="by a GET"))
        session.flush()
        return report()

    app.add_url_rule("/_probe/read", view_func=read)
    app.add_url_rule("/_probe/post", view_func=post, methods=["POST"])
    app.add_url_rule("/_probe/post-reads-first", view_func=post_reads_first, methods=["POST"])
    app.add_url_rule("/_probe/read-then-write", view_func=read_then_write)
    for view in (post, post_reads_first):
        csrf.exempt(view)
    return app


def test_requests_begin_as_readers_or_writers_by_method(mode_app, db_backend, app_session):
    client = mode_app.test_client()
    replies = {path: client.open(path, method=method).get_data(as_text=True)
               for method, path in [("GET", "/_probe/read"), ("POST", "/_probe/post"),
                                    ("POST", "/_probe/post-reads-first"),
                                    ("GET", "/_probe/read-then-write")]}
    if db_backend == "sqlite":
        assert replies == {"/_probe/read": "DEFERRED", "/_probe/post": "IMMEDIATE",
                           "/_probe/post-reads-first": "DEFERRED",
                           "/_probe/read-then-write": "IMMEDIATE"}
    else:
        assert set(replies.values()) == {"none"}
    assert app_session.scalar(select(Course.code)) == "WROTE"  # committed at the end


@sqlite_only
def test_a_get_that_only_reads_does_not_wait_for_the_write_lock(
        app, client, app_session, make_user, make_course, make_assignment):
    student = make_user(app_session)
    course = make_course(app_session, members={student: "student"})
    make_assignment(app_session, course)
    row, token = tokens.create_token(app_session, student, "tests")
    row.last_used_at = utcnow()  # no last-used write on the next request
    app_session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    # Another connection holds the write lock (a submission being stored).
    app_session.add(Course(code="LOCK", title="holds the write lock"))
    app_session.flush()
    try:
        started = time.monotonic()
        response = client.get("/api/v1/assignments", headers=headers)
        elapsed = time.monotonic() - started
    finally:
        app_session.rollback()
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [a["title"] for a in response.json["assignments"]] == ["Homework 1"]
    assert elapsed < 1.0  # not the 5 s busy timeout


@sqlite_only
def test_write_transaction_restarts_a_reader_whose_snapshot_is_stale(
        db_engine, session, caplog, reader_writes_expected):
    factory = make_sessionmaker(db_engine)
    with factory() as reader, factory() as careless:
        for sess in (reader, careless):
            begin_as_reader(sess)
            assert sess.scalar(select(func.count(Course.id))) == 0  # a snapshot is taken
            assert transaction_mode(sess) == "DEFERRED"
        session.add(Course(code="MEANWHILE", title="committed by another writer"))
        session.commit()
        # Writing in the stale snapshot fails at once, without the busy timeout...
        careless.add(Course(code="CARELESS", title="x"))
        with pytest.raises(OperationalError):
            careless.flush()
        careless.rollback()
        (warning,) = [r.getMessage() for r in caplog.records if r.name == "server.db"]
        assert "INSERT INTO courses" in warning and "write_transaction" in warning
        # ...while write_transaction ends the reader and begins a writer.
        write_transaction(reader)
        assert transaction_mode(reader) == "IMMEDIATE"
        assert reader.scalar(select(func.count(Course.id))) == 1  # sees the new row
        reader.add(Course(code="READER", title="x"))
        reader.commit()
        # The session keeps beginning IMMEDIATE after that.
        reader.scalar(select(func.count(Course.id)))
        assert transaction_mode(reader) == "IMMEDIATE"
        reader.rollback()
    assert {c.code for c in session.scalars(select(Course))} == {"MEANWHILE", "READER"}


@sqlite_only
def test_write_transaction_keeps_a_reader_that_already_wrote(db_engine, session,
                                                            reader_writes_expected):
    # Its first statement was a write, so it holds the lock: committing there
    # would split the request's changes in two.
    with make_sessionmaker(db_engine)() as sess:
        begin_as_reader(sess)
        sess.add(Course(code="FIRST", title="x"))
        write_transaction(sess)  # flushes it; the transaction goes on
        assert transaction_mode(sess) == "IMMEDIATE"
        sess.add(Course(code="SECOND", title="x"))
        sess.flush()
        sess.rollback()
    assert session.scalar(select(func.count(Course.id))) == 0  # one transaction, undone


def test_a_writer_that_cannot_get_the_lock_gives_up_with_a_busy_error(tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    engine = make_engine(f"sqlite:///{tmp_path / 'busy.sqlite3'}")
    try:
        with engine.begin() as holder:
            holder.execute(text("CREATE TABLE t (x INTEGER)"))
        with engine.begin() as holder:
            holder.execute(text("INSERT INTO t VALUES (1)"))  # holds the write lock
            outcome = []

            def write():
                started = time.monotonic()
                try:
                    with engine.begin() as writer:
                        writer.execute(text("INSERT INTO t VALUES (2)"))
                except OperationalError as exc:
                    outcome.append((db.is_busy_error(exc), time.monotonic() - started))

            thread = threading.Thread(target=write)
            thread.start()
            thread.join(timeout=10)
        assert len(outcome) == 1
        busy, waited = outcome[0]
        assert busy and 0.15 < waited < 2
        with engine.connect() as connection:  # the busy timeout is back for the rest
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 200
    finally:
        engine.dispose()


def test_background_work_waits_for_the_lock_past_a_requests_busy_timeout(tmp_path,
                                                                          monkeypatch):
    """A job's transactions (server.db.patient_engine, used by services.jobs.run_chunk)
    wait for the write lock longer than a request's: under load a recovery job once
    failed with "database is locked" after the request's 5 s."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(db, "BACKGROUND_LOCK_WAIT_MS", 20_000)
    engine = make_engine(f"sqlite:///{tmp_path / 'patient.sqlite3'}")
    patient = db.patient_engine(engine)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
        holding, outcome = threading.Event(), []

        def hold() -> None:
            with engine.begin() as holder:
                holder.execute(text("INSERT INTO t VALUES (1)"))  # holds the write lock
                holding.set()
                time.sleep(1.0)  # five times the request's timeout

        def write(which) -> None:
            started = time.monotonic()
            try:
                with which.begin() as writer:
                    writer.execute(text("INSERT INTO t VALUES (2)"))
                outcome.append(("written", time.monotonic() - started))
            except OperationalError as exc:
                outcome.append(("busy" if db.is_busy_error(exc) else str(exc), 0))

        holder = threading.Thread(target=hold)
        holder.start()
        holding.wait(10)
        write(engine)  # a request's: gives up
        write(patient)  # a job's: waits until the holder commits
        holder.join(10)
        assert outcome[0][0] == "busy"
        assert outcome[1][0] == "written" and outcome[1][1] > 0.2, outcome
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 2
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 200
    finally:
        engine.dispose()


def test_writers_queue_for_the_lock_instead_of_failing(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.sqlite3'}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
        errors = []

        def write(number):
            try:
                for _ in range(20):
                    with engine.begin() as connection:
                        count = connection.execute(text("SELECT count(*) FROM t")).scalar()
                        connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": count})
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        with engine.connect() as connection:
            values = connection.execute(text("SELECT x FROM t ORDER BY x")).scalars().all()
        assert values == list(range(80))  # serialized: every read saw every earlier write
    finally:
        engine.dispose()


@pytest.mark.backends("postgresql")  # a server that can drop connections
def test_pooled_connections_are_pinged_after_idling_and_replaced_if_dead(
        db_backend, database_url, monkeypatch):
    pings = []
    real_ping = db._ping
    monkeypatch.setattr(db, "_ping", lambda conn: pings.append(1) or real_ping(conn))
    engine = make_engine(database_url)
    admin = make_engine(database_url)
    try:
        for _ in range(3):  # a busy pool: each connection was checked in moments ago
            with engine.connect() as connection:
                pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        assert pings == []
        with admin.connect() as connection:  # a server restart, for this connection
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        monkeypatch.setattr(db, "POOL_PING_IDLE_SECONDS", 0.0)  # it has idled long enough
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar() != pid
        assert pings == [1]  # the dead one failed its ping; the new one needs none
    finally:
        engine.dispose()
        admin.dispose()
