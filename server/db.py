"""Engine, session per request, migrations.

* SQLite runs in WAL mode with a busy timeout and foreign keys on, set by a
  connect event on every new DBAPI connection.
* A request gets one ``Session`` on first use (``get_session()``); it is
  committed in ``after_request`` when the response is not a server error and
  rolled back and closed at teardown. Committing before the response leaves
  means a failed commit becomes an error response, not a success page over
  lost data.
* ``check_schema_current`` compares the database's Alembic revision with the
  code's head; the app refuses to start on a database behind the migrations.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from server.config import PROJECT_ROOT

if TYPE_CHECKING:
    from alembic.config import Config
    from flask import Flask, Response

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000
_EXTENSION = "nabla_db"


class SchemaOutOfDate(RuntimeError):
    """The database's schema revision is not the code's head revision."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        if url.startswith("sqlite:///") and url not in ("sqlite://", "sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
    else:
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


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
    # a read lock to a write lock.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_busy_error(error: BaseException) -> bool:
    """True for SQLite's "database is locked" after the busy timeout."""
    from sqlalchemy.exc import OperationalError

    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)


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


def get_session() -> Session:
    """The current request's session, created on first use."""
    from flask import current_app, g

    session = g.get("_nabla_session")
    if session is None:
        session = current_app.extensions[_EXTENSION]()
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
