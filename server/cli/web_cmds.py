"""``nabla db``, ``nabla users``, ``nabla courses``, ``nabla demo``, ``nabla serve``, ``nabla run``.

Commands read the same settings as the web app (``NABLA_DATABASE_URL``, ...),
open one transaction (``with session.begin()``) and report service errors as
a one-line message, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from server.cli import main

DEMO_COURSE = ("DEMO101", "Backpropagation, step by step (demo)")
DEMO_PASSWORD = "nabla-demo-password"
DEMO_USERS = [
    ("instructor@example.edu", "Ines Instructor", "instructor"),
    ("ta@example.edu", "Tom Assistant", "ta"),
    ("student1@example.edu", "Student One", "student"),
    ("student2@example.edu", "Student Two", "student"),
    ("student3@example.edu", "Student Three", "student"),
]


def _database_url() -> str:
    from server.config import database_url

    return database_url()


@contextlib.contextmanager
def _transaction(check_schema: bool = True) -> Iterator[Any]:
    """A session in one transaction; service errors become a clean CLI error."""
    from server import db
    from server.services.errors import ServiceError

    engine = db.make_engine(_database_url())
    try:
        if check_schema:
            try:
                db.check_schema_current(engine)
            except db.SchemaOutOfDate as exc:
                raise click.ClickException(str(exc)) from None
        session = db.make_sessionmaker(engine)()
        try:
            with session.begin():
                yield session
        except ServiceError as exc:
            errors = getattr(exc, "errors", None)  # e.g. a roster: one error per line
            if errors:
                message = "nothing was changed:\n  " + "\n  ".join(errors)
            else:
                message = str(exc)
            raise click.ClickException(message) from None
        finally:
            session.close()
    finally:
        engine.dispose()


# --- nabla db ----------------------------------------------------------------------


@main.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create or migrate the database to the code's schema."""
    from server import db as database

    url = _database_url()
    database.upgrade(url, revision)
    engine = database.make_engine(url)
    try:
        current = database.current_revision(engine)
    finally:
        engine.dispose()
    shown = engine.url.render_as_string(hide_password=True)
    click.echo(f"database {shown} is at revision {current}")


@db.command("current")
def db_current() -> None:
    """Show the database's revision and the code's head revision."""
    from server import db as database

    url = _database_url()
    engine = database.make_engine(url)
    try:
        current = database.current_revision(engine)
    finally:
        engine.dispose()
    head = database.head_revision(url)
    click.echo(f"database: {current or '(empty)'}\ncode head: {head}")
    if current != head:
        click.echo("run `nabla db upgrade` to migrate")
        sys.exit(1)


# --- nabla users -------------------------------------------------------------------


@main.group()
def users() -> None:
    """Accounts."""


@users.command("add")
@click.argument("email")
@click.option("--name", required=True, help="Full name.")
@click.option("--password", help="Initial password (default: a random one, printed once).")
@click.option("--admin", is_flag=True, help="Site administrator (staff rights in every course).")
@click.option("--course", "course_code", help="Also enroll in this course (see --role).")
@click.option(
    "--role", type=click.Choice(["student", "ta", "instructor"]),
    help="Role in --course (default: student).",
)
def users_add(
    email: str, name: str, password: str | None, admin: bool, course_code: str | None,
    role: str | None,
) -> None:
    """Create a user (and optionally enroll them in a course)."""
    from server.services import accounts, courses

    if role is not None and not course_code:
        raise click.UsageError("--role needs --course CODE (roles are per course)")
    role = role or "student"

    generated = password is None
    password = password if password is not None else accounts.generate_password()
    with _transaction() as session:
        user = accounts.create_user(session, email, name, password, is_admin=admin)
        if course_code:
            course = _course(session, course_code)
            courses.enroll(session, course, user, role)
    click.echo(f"created {user.email}" + (f", {role} in {course_code}" if course_code else ""))
    if generated:
        click.echo(f"password: {password}")


@users.command("passwd")
@click.argument("email")
@click.option("--password", help="New password (default: a random one, printed once).")
def users_passwd(email: str, password: str | None) -> None:
    """Set a user's password."""
    from server.services import accounts

    generated = password is None
    password = password if password is not None else accounts.generate_password()
    with _transaction() as session:
        accounts.set_password(session, _user(session, email), password)
    click.echo(f"password of {email} set")
    if generated:
        click.echo(f"password: {password}")


@users.command("token")
@click.argument("email")
@click.option("--name", default="command line", show_default=True, help="Label of the token.")
def users_token(email: str, name: str) -> None:
    """Create an API token for a user and print it (it is stored hashed, shown once)."""
    from server.services import tokens

    with _transaction() as session:
        _, token = tokens.create_token(session, _user(session, email), name)
    click.echo(token)


def _user(session: Any, email: str) -> Any:
    from server.services import accounts

    user = accounts.get_user_by_email(session, email)
    if user is None:
        raise click.ClickException(f"email: no user {email} (create one with `nabla users add`)")
    return user


def site_url() -> str:
    """``NABLA_BASE_URL``, where links made on the command line start; a clear error
    without it (the command line has no request to tell it the site's address)."""
    from server.config import BASE_URL_MISSING, ConfigError, base_url

    try:
        url = base_url()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if url is None:
        raise click.ClickException(BASE_URL_MISSING)
    return url


def _course(session: Any, code: str) -> Any:
    from server.services import courses

    course = courses.get_course(session, code)
    if course is None:
        raise click.ClickException(f"course: no course {code} (create it with `nabla courses add`)")
    return course


# --- nabla courses -----------------------------------------------------------------


@main.group()
def courses() -> None:
    """Courses and enrollments."""


@courses.command("add")
@click.argument("code")
@click.option("--title", required=True)
def courses_add(code: str, title: str) -> None:
    """Create a course."""
    from server.services import courses as course_service

    with _transaction() as session:
        course = course_service.create_course(session, code, title)
    click.echo(f"created course {course.code}")


@courses.command("enroll")
@click.argument("code")
@click.argument("email")
@click.option("--role", type=click.Choice(["student", "ta", "instructor"]), required=True)
def courses_enroll(code: str, email: str, role: str) -> None:
    """Enroll a user in a course with a role (or change their role)."""
    from server.services import courses as course_service

    with _transaction() as session:
        course_service.enroll(session, _course(session, code), _user(session, email), role)
    click.echo(f"{email} is {role} in {code}")


@courses.command("import-roster")
@click.argument("code")
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@click.option("--email-domain", help="Canvas exports: make emails LOGIN@DOMAIN from SIS Login "
                                     "IDs that are not emails.")
@click.option("--invites", "invites_file", type=click.File("w"),
              help="Write one-time set-password links of the new accounts here (CSV: "
                   "email,name,link); default: standard output.")
def courses_import_roster(code: str, csv_file: Any, email_domain: str | None,
                          invites_file: Any) -> None:
    """Import email,name,role lines, or a Canvas gradebook export, into a course (all or
    nothing). New accounts get a one-time set-password link, listed once (the links
    start with NABLA_BASE_URL: without it, a file that creates accounts imports nothing)."""
    from server.models import utcnow
    from server.services import courses as course_service
    from server.services import invites

    text = csv_file.read()
    links = None
    with _transaction() as session:
        # The command line is an administrator's shell: staff roles are given at once.
        result = course_service.import_roster(session, _course(session, code), text,
                                              email_domain=email_domain, actor=None)
        if result.created:
            try:
                base = site_url()
            except click.ClickException as exc:  # rolls the import back
                raise click.ClickException(f"nothing was imported: {exc.message}") from None
            links = invites.new_account_links(session, result.created, base, utcnow())
    click.echo(result.summary())
    if links is not None:
        if invites_file is None:
            click.echo("set-password links of the new accounts (valid "
                       f"{invites.INVITE_DAYS} days, shown once):")
        click.echo(links, file=invites_file, nl=False)


# --- nabla demo --------------------------------------------------------------------


def demo_assignment_plan(bank_ids: list[str]) -> list[tuple[str, list[str]]]:
    """Two assignments covering the whole bank: the rules, then the networks."""
    rules = sorted(pid for pid in bank_ids if pid.startswith("rule-"))
    networks = sorted(pid for pid in bank_ids if not pid.startswith("rule-"))
    plan = [("Homework 1: the rules of backprop", rules or networks[:1]),
            ("Homework 2: networks", networks or rules[:1])]
    return [(title, ids) for title, ids in plan if ids]


def create_demo(session: Any, bank: dict[str, Any], now: Any) -> list[tuple[str, str]]:
    """The demo course, users and assignments; idempotent. Returns (email, role) pairs."""
    import datetime as dt

    from sqlalchemy import select

    from server.models import Assignment
    from server.services import accounts, assignments
    from server.services import courses as course_service

    course = course_service.get_course(session, DEMO_COURSE[0])
    if course is None:
        course = course_service.create_course(session, *DEMO_COURSE)
    for email, name, role in DEMO_USERS:
        user = accounts.get_user_by_email(session, email)
        if user is None:
            user = accounts.create_user(session, email, name, DEMO_PASSWORD)
        else:
            # Keep the printed logins true even if someone changed a demo password.
            accounts.set_password(session, user, DEMO_PASSWORD)
        course_service.enroll(session, course, user, role)
    existing = set(
        session.scalars(select(Assignment.title).where(Assignment.course_id == course.id))
    )
    day = dt.timedelta(days=1)
    for title, problem_ids in demo_assignment_plan(list(bank)):
        if title in existing:
            continue
        draft = assignments.AssignmentDraft(
            title=title,
            open_at=now - day,
            due_at=now + 14 * day,
            late_until=now + 21 * day,
            late_credit=50,
            max_attempts=10,
            problems=[assignments.ProblemChoice(pid, 1.0) for pid in problem_ids],
        )
        assignments.create_assignment(session, course, draft, bank)
    return [(email, role) for email, _, role in DEMO_USERS]


@main.command()
def demo() -> None:
    """Sync the bank folder into the database, then create (or refresh) a demo course
    with users and two assignments from the bank."""
    from server.cli.bank_cmds import print_report, sync_bank
    from server.engine.bank import BANK_DIR
    from server.models import utcnow
    from server.services.bank import DatabaseBank

    with _transaction() as session:
        report = sync_bank(session, BANK_DIR)
        print_report(report)
        logins = create_demo(session, DatabaseBank(session), utcnow())
    click.echo(f"Demo course {DEMO_COURSE[0]}: {DEMO_COURSE[1]}")
    click.echo(f"Logins (password for all: {DEMO_PASSWORD}):")
    for email, role in logins:
        click.echo(f"  {role:<10} {email}")


# --- serving -----------------------------------------------------------------------


def _default_workers() -> int:
    # Measured with bench/bench_http.py on 2 cores (docs/web.md): two workers
    # per core with two threads each beat (cores + 1) x 4: fewer threads wait
    # on one GIL, and two still overlap a request's waits (sandbox, database).
    return 2 * (os.cpu_count() or 1)


def _prepare_to_serve() -> None:
    """Fail fast, before forking workers: settings valid, schema current, key created."""
    from server import db as database
    from server.config import ConfigError, load_settings

    try:
        settings = load_settings()  # creates the instance secret key once, here
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    engine = database.make_engine(settings["DATABASE_URL"])
    try:
        database.check_schema_current(engine)
    except database.SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


def mark_loopback_bind(bind: str) -> None:
    """Tell the app (``NABLA_LOOPBACK_BIND``) when it is served on a loopback address:
    without NABLA_BASE_URL, the loopback demo makes its links from that address
    (server.web.links); any other bind leaves it unset."""
    from server.config import LOOPBACK_BIND_ENV, is_loopback_host

    if is_loopback_host(bind):
        os.environ[LOOPBACK_BIND_ENV] = bind
    else:
        os.environ.pop(LOOPBACK_BIND_ENV, None)


def gunicorn_argv(bind: str, workers: int, threads: int, timeout: int) -> list[str]:
    # The access log has no query strings and no tokens (server.web.access_log).
    from server.web.access_log import ACCESS_LOG_FORMAT, AccessLogger

    return [
        sys.executable, "-m", "gunicorn",
        "--bind", bind,
        "--workers", str(workers),
        "--threads", str(threads),
        "--worker-class", "gthread",
        "--timeout", str(timeout),
        "--access-logfile", "-",
        "--access-logformat", ACCESS_LOG_FORMAT,
        "--logger-class", f"{AccessLogger.__module__}.{AccessLogger.__qualname__}",
        "server:create_app()",
    ]


@main.command()
@click.option("--bind", default="127.0.0.1:5000", show_default=True, help="HOST:PORT")
@click.option("--workers", type=click.IntRange(1, 64), default=_default_workers,
              show_default="2 x cores")
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--timeout", type=click.IntRange(5, 600), default=60, show_default=True,
              help="Seconds before a stuck worker is restarted.")
def serve(bind: str, workers: int, threads: int, timeout: int) -> None:
    """Serve the app with gunicorn (production)."""
    mark_loopback_bind(bind)
    _prepare_to_serve()
    argv = gunicorn_argv(bind, workers, threads, timeout)
    click.echo(f"serving on http://{bind} with {workers} workers x {threads} threads")
    os.execv(argv[0], argv)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5000, show_default=True)
def run(host: str, port: int) -> None:
    """Run the debug server (development only)."""
    mark_loopback_bind(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    _prepare_to_serve()
    from server import create_app

    create_app().run(host=host, port=port, debug=True)
