"""Engine, session per request, migrations.

* SQLite runs in WAL mode with a busy timeout and foreign keys on, set by a
  connect event on every new DBAPI connection.
* Other databases (PostgreSQL): a pooled connection is pinged when it is
  checked out after sitting idle in the pool for POOL_PING_IDLE_SECONDS or
  more (a dead one is replaced, e.g. after a server restart), not on every
  checkout as ``pool_pre_ping`` would: a request checks a connection out once
  per transaction, and each ping is a round trip.
* SQLite has one write lock. A transaction begins ``BEGIN IMMEDIATE`` (it
  takes the lock at once) unless its connection carries the execution option
  ``nabla_sqlite_begin="DEFERRED"``: then it is a reader, which in WAL mode
  never waits and never blocks a writer. A reader must not write: upgrading
  its read snapshot to the write lock fails at once (SQLITE_BUSY_SNAPSHOT,
  which the busy timeout does not retry) when another writer committed since
  it began. Code that writes calls ``write_transaction(session)`` first: it
  ends a reader's transaction (nothing was written in it) and begins the next
  one IMMEDIATE; on other databases, and in a transaction that already writes,
  it does nothing. Sessions that never ask for DEFERRED (the CLI, scripts,
  tests) keep BEGIN IMMEDIATE for everything.
* A request gets one ``Session`` on first use (``get_session()``): GET and
  HEAD requests, and views marked ``@reads_first``, begin as readers (their
  writes go through ``write_transaction``); other requests begin IMMEDIATE.
  It is committed in ``after_request`` when the response is not a server error and
  rolled back and closed at teardown. Committing before the response leaves
  means a failed commit becomes an error response, not a success page over
  lost data.
* ``check_schema_current`` compares the database's Alembic revision with the
  code's head; the app refuses to start on a database behind the migrations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from server.config import PACKAGE_DIR, PROJECT_ROOT

if TYPE_CHECKING:
    from alembic.config import Config
    from flask import Flask, Response

log = logging.getLogger(__name__)
# Installed from a wheel, the migrations are package data (setup.py); in a
# checkout they are the repository's migrations/ folder.
MIGRATIONS_DIR = (PACKAGE_DIR / "migrations" if (PACKAGE_DIR / "migrations" / "env.py").is_file()
                  else PROJECT_ROOT / "migrations")
SQLITE_BUSY_TIMEOUT_MS = 5000
POOL_PING_IDLE_SECONDS = 2.0
_CHECKED_IN_AT = "nabla_checked_in_at"  # pool record info: time.monotonic() at check-in
_EXTENSION = "nabla_db"
# Execution option read when a SQLite transaction begins: "IMMEDIATE" (the
# default) or "DEFERRED" (a reader; see the module docstring).
SQLITE_BEGIN = "nabla_sqlite_begin"
_BEGUN = "nabla_begun"  # connection info: (mode, total_changes at BEGIN)
READS_FIRST_ATTRIBUTE = "nabla_reads_first"
# Execution option: how long (ms) a SQLite transaction waits for the write lock at BEGIN.
# A request waits SQLITE_BUSY_TIMEOUT_MS (then a 503 with Retry-After); background work,
# on which nobody waits, waits longer (patient_engine) rather than failing its job.
SQLITE_LOCK_WAIT = "nabla_sqlite_lock_wait_ms"
BACKGROUND_LOCK_WAIT_MS = 60_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
F = TypeVar("F", bound=Callable[..., Any])


class SchemaOutOfDate(RuntimeError):
    """The database's schema revision is not the code's head revision."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        if url.startswith("sqlite:///") and url not in ("sqlite://", "sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    engine = create_engine(url, **kwargs)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        event.listen(engine, "before_cursor_execute", _sqlite_warn_reader_writes)
    elif not kwargs.get("pool_pre_ping"):
        event.listen(engine.pool, "checkin", _on_checkin)
        event.listen(engine.pool, "checkout", _ping_if_idle)
    return engine


def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info[_CHECKED_IN_AT] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Ping a connection that sat idle; a dead one is replaced by the pool.

    Raising DisconnectionError in a checkout event makes the pool discard the
    connection and check out another (SQLAlchemy's "pessimistic disconnect
    handling"). A connection used within the last POOL_PING_IDLE_SECONDS is
    handed out as it is: under load that is every connection.
    """
    from sqlalchemy.exc import DisconnectionError

    checked_in = record.info.get(_CHECKED_IN_AT)
    if checked_in is None or time.monotonic() - checked_in < POOL_PING_IDLE_SECONDS:
        return
    try:
        _ping(dbapi_connection)
    except Exception as exc:
        raise DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc


def _ping(dbapi_connection: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT 1")
    finally:
        cursor.close()
    dbapi_connection.rollback()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT;
    # turn it off and emit BEGIN ourselves (the SQLAlchemy-documented recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock at BEGIN, so two writers queue on the busy
    # timeout instead of one failing with "database is locked" on upgrade from
    # a read lock to a write lock. DEFERRED (asked for by readers) takes no
    # lock at all: a WAL reader reads a snapshot.
    mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
    dbapi_connection = connection.connection.dbapi_connection
    if mode == "IMMEDIATE":
        _begin_immediate(connection, dbapi_connection)
    elif mode == "DEFERRED":
        dbapi_connection.execute("BEGIN DEFERRED")
    else:
        raise ValueError(f"{SQLITE_BEGIN}: {mode!r} is not IMMEDIATE or DEFERRED")
    connection.info[_BEGUN] = (mode, dbapi_connection.total_changes)


def _sqlite_warn_reader_writes(connection: Any, _cursor: Any, statement: str, _parameters: Any,
                               context: Any, _executemany: bool) -> None:
    # A write in a reader's transaction works only while nobody else commits
    # (see the module docstring): name the statement, so the code that
    # writes can be given its write_transaction().
    if context is None or not (context.isinsert or context.isupdate or context.isdelete):
        return
    if connection.info.get(_BEGUN, ("IMMEDIATE", 0))[0] == "DEFERRED":
        log.warning("a write in a DEFERRED (reader) transaction may fail with SQLITE_BUSY; "
                    "call server.db.write_transaction(session) before writing: %s",
                    statement.split("\n", 1)[0][:120])


def _begin_immediate(connection: Any, dbapi_connection: Any) -> None:
    """BEGIN IMMEDIATE, waiting for the write lock in short naps.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50,
    100 ms... between tries: a writer that arrives while another holds the
    lock for 2 ms can sleep for 30 ms. Here the busy timeout is off while
    trying BEGIN IMMEDIATE, and the wait is a loop of naps of 0.2 ms growing
    to 2 ms, for SQLITE_BUSY_TIMEOUT_MS in all (BACKGROUND_LOCK_WAIT_MS for
    patient_engine's connections). (Nothing else in a
    transaction that began IMMEDIATE waits for the write lock; readers, and
    statements outside transactions, keep SQLite's busy timeout.)
    """
    import sqlite3

    wait_ms = connection.get_execution_options().get(SQLITE_LOCK_WAIT, SQLITE_BUSY_TIMEOUT_MS)
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + wait_ms / 1000
        nap = 0.0002
        while True:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            if time.monotonic() >= deadline:
                break
            time.sleep(nap)
            nap = min(nap * 1.5, 0.002)
        # Once more through SQLAlchemy, which raises its OperationalError
        # ("database is locked": a 503 with Retry-After, see is_busy_error).
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def _is_sqlite(session: Session) -> bool:
    bind = session.get_bind()
    return bind.dialect.name == "sqlite"


def begin_as_reader(session: Session) -> None:
    """Begin the session's SQLite transactions DEFERRED from now on (readers).

    Takes effect at the session's next transaction; code that then writes must
    call ``write_transaction`` first. Nothing changes on other databases.
    """
    if _is_sqlite(session):
        session.execution_options = session.execution_options.union({SQLITE_BEGIN: "DEFERRED"})


def write_transaction(session: Session) -> None:
    """Make sure the session's current transaction may write (call before writing).

    SQLite: a reader's transaction (DEFERRED, nothing written yet) is committed
    and the next one begins IMMEDIATE, queueing on the busy timeout for the
    write lock; the session keeps beginning IMMEDIATE from then on. What was
    read before is not locked: check again inside the write transaction what
    the write depends on (the UNIQUE constraints are the last word anyway).
    Unflushed changes are flushed first and keep the transaction as it is
    (they wrote in it). Does nothing on other databases, or when the
    transaction already writes.
    """
    if not _is_sqlite(session):
        return
    session.execution_options = session.execution_options.union({SQLITE_BEGIN: "IMMEDIATE"})
    transaction = session.get_transaction()
    if transaction is None:
        return  # the next transaction begins IMMEDIATE
    connection = session.connection()  # begins IMMEDIATE if nothing was run yet
    mode, changes = connection.info.get(_BEGUN, ("IMMEDIATE", 0))
    if mode == "IMMEDIATE":
        return
    if session.new or session.dirty or session.deleted:
        session.flush()
    if connection.connection.dbapi_connection.total_changes != changes:
        # It wrote already (so it holds the write lock): keep it.
        connection.info[_BEGUN] = ("IMMEDIATE", changes)
        return
    session.commit()  # a reader that wrote nothing: ends its snapshot
    session.connection()  # BEGIN IMMEDIATE


def transaction_mode(session: Session) -> str | None:
    """"IMMEDIATE" or "DEFERRED" for the session's current SQLite transaction, else None."""
    if not _is_sqlite(session) or session.get_transaction() is None:
        return None
    connection = session.connection()
    return connection.info.get(_BEGUN, ("IMMEDIATE", 0))[0]


def is_connection_error(error: BaseException) -> bool:
    """True when the database could not be reached or dropped the connection (a
    PostgreSQL restart): SQLAlchemy has invalidated that connection, and the pool
    opens a new one for the next request."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if not isinstance(error, DBAPIError):
        return False
    return error.connection_invalidated or (
        isinstance(error, OperationalError) and not is_busy_error(error)
        and type(error.orig).__module__.startswith("psycopg"))


def is_busy_error(error: BaseException) -> bool:
    """True for SQLite's "database is locked" after the busy timeout."""
    from sqlalchemy.exc import OperationalError

    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)


def patient_engine(engine: Engine) -> Engine:
    """The same engine (pool, events) for background work: on SQLite its transactions
    wait up to BACKGROUND_LOCK_WAIT_MS for the write lock, where a request's give up
    after SQLITE_BUSY_TIMEOUT_MS. Nothing changes on other databases."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{SQLITE_LOCK_WAIT: BACKGROUND_LOCK_WAIT_MS})


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


# --- Flask integration -----------------------------------------------------------


def init_app(app: Flask, engine: Engine | None = None) -> None:
    engine = engine or make_engine(app.config["DATABASE_URL"])
    app.extensions[_EXTENSION] = make_sessionmaker(engine)
    app.after_request(_commit_session)
    app.teardown_appcontext(_close_session)


def get_engine(app: Flask | None = None) -> Engine:
    from flask import current_app

    factory = (app or current_app).extensions[_EXTENSION]
    return factory.kw["bind"]


def reads_first(view: F) -> F:
    """Mark a view whose request begins as a reader although it is a POST: the
    services it calls take the write lock (``write_transaction``) only for the
    transactions that write, e.g. storing an answer and recording its verdict."""
    setattr(view, READS_FIRST_ATTRIBUTE, True)
    return view


def get_session() -> Session:
    """The current request's session, created on first use.

    GET and HEAD requests and ``@reads_first`` views begin as readers on
    SQLite (see the module docstring); other requests begin IMMEDIATE.
    """
    from flask import current_app, g, request

    session = g.get("_nabla_session")
    if session is None:
        session = current_app.extensions[_EXTENSION]()
        view = current_app.view_functions.get(request.endpoint or "")
        if request.method in SAFE_METHODS or getattr(view, READS_FIRST_ATTRIBUTE, False):
            begin_as_reader(session)
        g._nabla_session = session
    return session


def _commit_session(response: Response) -> Response:
    from flask import g

    session: Session | None = g.get("_nabla_session")
    if session is not None:
        if response.status_code >= 500:
            session.rollback()
        else:
            session.commit()
    return response


def _close_session(_exc: BaseException | None) -> None:
    from flask import g

    session: Session | None = g.pop("_nabla_session", None)
    if session is not None:
        session.rollback()  # a no-op after a successful commit
        session.close()


# --- Alembic ---------------------------------------------------------------------


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` built in code (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Percent signs in URLs (escaped passwords) would be read as interpolation.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_schema_current(engine: Engine) -> None:
    """Raise ``SchemaOutOfDate`` naming the fix when the database lags the code."""
    url = engine.url.render_as_string(hide_password=False)
    head = head_revision(url)
    current = current_revision(engine)
    if current == head:
        return
    shown = engine.url.render_as_string(hide_password=True)
    if current is None:
        state = "has no Nabla tables yet"
    else:
        state = f"is at schema revision {current}, the code expects {head}"
    raise SchemaOutOfDate(
        f"The database {shown} {state}. Run `nabla db upgrade` "
        "(with the same NABLA_DATABASE_URL) and start again."
    )
