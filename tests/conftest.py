"""Shared fixtures for the database-backed tests (tests/web, tests/services).

Engine and sandbox tests use none of these; nothing heavy is imported at
module level, so collecting them stays free of Flask and SQLAlchemy.

Every test that uses a database runs once per backend. The backends come from
``--nabla-db`` or ``NABLA_TEST_DATABASE`` (``sqlite``, ``postgresql`` or
``sqlite,postgresql``; default: both). Each PostgreSQL run creates its own
database ``nabla_test_<random>`` on ``NABLA_TEST_POSTGRES_URL`` (default: the
local server, user postgres) and drops it at the end. When PostgreSQL is not
reachable the PostgreSQL tests fail if CI is set or PostgreSQL was asked for
explicitly; only a default local run skips them, with the reason shown.

A test that asks for ``counter_store`` runs with the shared counters (login
throttle, submission rate) in the database (on each database backend) and in
Redis (``NABLA_TEST_REDIS_URL``, default 127.0.0.1:6379, once, on the first
database backend). Redis must be there: a Redis test fails without it, it never
skips. Each test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
BACKENDS = ("sqlite", "postgresql")
COUNTER_STORES = ("database", "redis")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--nabla-db",
        default=None,
        help="database backends for web/services tests: sqlite, postgresql or "
        "sqlite,postgresql (default: $NABLA_TEST_DATABASE, else both)",
    )


def _requested_backends(config: pytest.Config) -> tuple[list[str], bool]:
    raw = config.getoption("--nabla-db") or os.environ.get("NABLA_TEST_DATABASE")
    explicit = bool(raw)
    names = [part.strip() for part in (raw or ",".join(BACKENDS)).split(",") if part.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise pytest.UsageError(
            f"NABLA_TEST_DATABASE/--nabla-db: unknown backend(s) {unknown}; "
            f"use one or more of {', '.join(BACKENDS)}"
        )
    return names, explicit


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_backend" in metafunc.fixturenames:
        names, _ = _requested_backends(metafunc.config)
        only = metafunc.definition.get_closest_marker("backends")
        if only is not None:  # a test about one backend's behaviour runs on that one only
            names = [name for name in names if name in only.args]
        if "counter_store" in metafunc.fixturenames:
            # Counters in each database, and in Redis (once: beside the first database).
            combos = [(name, "database") for name in names] + [(names[0], "redis")] * bool(names)
            metafunc.parametrize(("db_backend", "counter_store"), combos, indirect=True,
                                 scope="session", ids=[f"{a}-{b}" for a, b in combos])
            return
        metafunc.parametrize("db_backend", names, indirect=True, scope="session")


# --- parallel runs (pytest-xdist: ``make test`` runs ``-n 4 --dist loadgroup``) -----------

# Tests that must share one worker, by where they are. The browser tests share one
# ``nabla serve`` with the demo course (several change its scores) and one Chromium, which
# cost ~20 s of CPU to start, and they write their screenshots to one folder. The modules
# below make something costly once per module (the golden corpus ~10 s, a served site,
# judges, the API fuzzer's demo site): spread over the workers, each would make it again
# (and again after every test of another module in between), so each module runs whole
# on one worker. (Not with
# ``xdist_group`` marks: pytest-xdist 3.8 groups by rewriting ``item._nodeid``, which
# pytest 9 no longer reads, so the marks group nothing; the scheduler below does.)
XDIST_GROUPS = {
    "tests/browser/": "browser",
    "tests/golden/test_golden.py": "golden",
    "tests/web/test_sandbox_attacks_http.py": "sandbox-attacks-http",
    "tests/services/test_grading.py": "misbehaving-judge",
    "tests/judge/test_judge.py": "judges",
    "tests/judge/test_spec_tasks.py": "spec-judges",
    "tests/web/test_spec_attacks_live.py": "spec-attacks-live",
    "tests/grading/test_numpy_feedback.py": "numpy-feedback",
    "tests/web/test_api_fuzz.py": "api-fuzz",  # a served demo site per backend
}

# The modules with the longest tests (a serial run's ``--durations``): a worker starts on
# them first, so that none is left running alone at the end of a parallel run.
LONGEST_FIRST = (
    "tests/test_bench_table.py", "tests/web/test_recovery_live.py",
    "tests/web/test_limits_live.py", "tests/test_wheel.py", "tests/services/test_regrade.py",
    "tests/services/test_recovery.py", "tests/web/test_burst.py", "tests/cli/test_cli.py",
    "tests/engine/test_mutant_fuzz.py", "tests/web/test_bank_two_servers.py",
    "tests/web/test_postgres_restart.py", "tests/golden/test_golden.py",
    "tests/engine/test_answer_fuzz.py", "tests/web/test_api_fuzz.py",
    "tests/web/test_judge_serve.py",
    "tests/web/test_faults.py", "tests/web/test_two_servers.py", "tests/engine/test_mutants.py",
)


def xdist_scope(nodeid: str) -> str:
    """The unit of work a parallel run hands to one worker: a group, or one test."""
    for where, group in XDIST_GROUPS.items():
        if nodeid.startswith(where):
            return group
    return nodeid


@pytest.hookimpl(optionalhook=True)  # `-p no:xdist` runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: each test alone, except the groups above (the largest
    group first, then the tests in the order the workers collected them)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return GroupScheduling(config, log)


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by backend
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the order it reports is the order the tests are handed out
    in: the longest first (a stable sort keeps the rest in pytest's order). A serial
    run keeps pytest's order."""
    if hasattr(config, "workerinput"):
        rank = {module: i for i, module in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.fixture(scope="session")
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def counter_store(request: pytest.FixtureRequest) -> str:
    """Where the shared counters live in this test: "database" or "redis"."""
    return request.param


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis server (the test fails if there is none: CI has one)."""
    import redis

    url = os.environ.get("NABLA_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis not reachable at {url}: {exc}; start redis-server, or set "
                    "NABLA_TEST_REDIS_URL", pytrace=False)
    finally:
        client.close()
    return url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import secrets

    import redis

    prefix = f"nabla-test:{os.getpid()}:{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def nabla_workers(tmp_path: Any) -> Iterator[Any]:
    """``start(env)`` starts a ``nabla worker`` process (RQ) with those settings, its
    output in tmp_path; every one still running is stopped at the end of the test."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.web.helpers import stop_process_group

    nabla = str(Path(sys.executable).with_name("nabla"))
    started: list[subprocess.Popen] = []

    def start(env: dict[str, str]) -> subprocess.Popen:
        with open(tmp_path / f"worker{len(started)}.log", "wb") as log:
            process = subprocess.Popen([nabla, "worker"], env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            stop_process_group(process)


@pytest.fixture
def counter_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """App settings for the test's ``counter_store`` (the database if it asks for none)."""
    if "counter_store" in request.fixturenames and \
            request.getfixturevalue("counter_store") == "redis":
        return {"NABLA_REDIS_URL": request.getfixturevalue("redis_url"),
                "NABLA_REDIS_PREFIX": request.getfixturevalue("redis_prefix")}
    return {"NABLA_REDIS_URL": None}


@pytest.fixture(scope="session")
def postgres_server_url(request: pytest.FixtureRequest) -> str:
    """The maintenance URL of a reachable PostgreSQL server (fails or skips if none)."""
    from sqlalchemy import create_engine, text

    url = os.environ.get("NABLA_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        _, explicit = _requested_backends(request.config)
        message = f"PostgreSQL not reachable at {url}: {exc.__class__.__name__}: {exc}"
        if os.environ.get("CI") or explicit:
            pytest.fail(message + " (PostgreSQL tests must run in CI)", pytrace=False)
        pytest.skip(message + "; set NABLA_TEST_DATABASE=sqlite to test SQLite only")
    finally:
        engine.dispose()
    return url


def _new_database(
    request: pytest.FixtureRequest, db_backend: str, sqlite_path: Any
) -> Iterator[str]:
    """A URL of a new, empty database of the backend, dropped afterwards."""
    if db_backend == "sqlite":
        yield f"sqlite:///{sqlite_path}"
        return
    from tests.scratch_db import create_postgres_database, drop_postgres_database

    server_url = request.getfixturevalue("postgres_server_url")
    url = create_postgres_database(server_url, "nabla_test")
    try:
        yield url
    finally:
        drop_postgres_database(server_url, url)


@pytest.fixture(scope="session")
def empty_database_url(
    request: pytest.FixtureRequest, db_backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A URL of a new, empty database of the current backend (one per session)."""
    yield from _new_database(request, db_backend, tmp_path_factory.mktemp("db") / "nabla.sqlite3")


@pytest.fixture
def fresh_database_url(
    request: pytest.FixtureRequest, db_backend: str, tmp_path: Any
) -> Iterator[str]:
    """A new, empty database for this test alone (dropped afterwards)."""
    yield from _new_database(request, db_backend, tmp_path / "fresh.sqlite3")


@pytest.fixture(scope="module")
def module_database_url(
    request: pytest.FixtureRequest, db_backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A new, empty database for this test module alone (a live server's, dropped afterwards)."""
    yield from _new_database(request, db_backend, tmp_path_factory.mktemp("db") / "nabla.sqlite3")


@pytest.fixture(scope="session")
def database_url(empty_database_url: str) -> str:
    """The session's database, migrated to head with Alembic."""
    from server import db

    db.upgrade(empty_database_url)
    return empty_database_url


@pytest.fixture(scope="session")
def db_engine(database_url: str) -> Iterator[Any]:
    from server.db import make_engine

    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _delete_all_rows(engine: Any) -> None:
    from server.models import Base

    # DELETE, not TRUNCATE, on PostgreSQL too: a test leaves a handful of rows,
    # and TRUNCATE of every table costs ~0.25 s a test (it rewrites the files).
    # Ids are not reset; no test may rely on them.
    tables = Base.metadata.sorted_tables
    with engine.begin() as connection:
        for table in reversed(tables):
            connection.execute(table.delete())


@pytest.fixture(scope="session")
def fast_password_hashing() -> Iterator[None]:
    """Argon2's cheapest parameters: the tests check behaviour, not hash cost."""
    from server.services import passwords

    previous = passwords.use_profile("cheapest")
    yield
    passwords.use_profile(previous)


@pytest.fixture
def session(db_engine: Any, fast_password_hashing: None) -> Iterator[Any]:
    """A Session on the test database; every row is deleted after the test."""
    from server.db import make_sessionmaker

    factory = make_sessionmaker(db_engine)
    sess = factory()
    try:
        yield sess
    finally:
        sess.rollback()
        sess.close()
        _delete_all_rows(db_engine)


# --- a small fake problem bank (the engine's ProblemSpec has these attributes) ----


@dataclasses.dataclass(frozen=True)
class FakeSpec:
    id: str
    title: str
    answer_kind: str
    statement: str
    version: str
    source: str


def make_fake_bank() -> dict[str, FakeSpec]:
    specs = [
        FakeSpec(
            "mlp-relu", "An MLP with relu", "equations", "Backprop an MLP.", "h1", "id='mlp-relu'"
        ),
        FakeSpec(
            "affine-np",
            "An affine layer in numpy",
            "numpy",
            "Write backward.",
            "h2",
            "id='affine-np'",
        ),
        FakeSpec(
            "scalar-chain", "The scalar chain rule", "expression", "Differentiate.", "h3", "id='sc'"
        ),
    ]
    return {spec.id: spec for spec in specs}


@pytest.fixture
def fake_bank() -> dict[str, FakeSpec]:
    return make_fake_bank()


@pytest.fixture(scope="session")
def engine_bank() -> dict[str, Any]:
    """The real problem bank (``problems/``), for tests that grade.

    A test module that grades overrides ``fake_bank`` with it, so the app and
    ``make_assignment`` use real specs there.
    """
    from server.engine.bank import load_bank

    return load_bank()


# --- the Flask app ---------------------------------------------------------------------


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Extra settings for the ``app`` fixture; a test module overrides it (e.g. a
    module that submits more than NABLA_SUBMIT_RATE allows sets its own rate)."""
    return {}


@pytest.fixture
def app(
    database_url: str, db_engine: Any, fake_bank: dict, tmp_path: Any, fast_password_hashing: None,
    app_settings: dict[str, Any], counter_settings: dict[str, Any],
) -> Iterator[Any]:
    from server import create_app
    from server.db import get_engine

    application = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "test-secret-" + "x" * 32,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "NABLA_PROBLEM_BANK": fake_bank,
            **counter_settings,
            **app_settings,
        }
    )
    try:
        yield application
    finally:
        get_engine(application).dispose()
        _delete_all_rows(db_engine)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def app_session(app: Any) -> Iterator[Any]:
    """A Session on the app's database for arranging and checking data.

    On SQLite every transaction begins IMMEDIATE (it holds the write lock), so
    commit or roll back before sending a request that writes.
    """
    from server.db import get_engine, make_sessionmaker

    sess = make_sessionmaker(get_engine(app))()
    try:
        yield sess
    finally:
        sess.rollback()
        sess.close()


# --- factories -------------------------------------------------------------------------

DEFAULT_PASSWORD = "correct horse battery"


@pytest.fixture
def make_user() -> Any:
    def factory(
        sess: Any, email: str = "student1@example.edu", name: str = "Student One",
        password: str | None = DEFAULT_PASSWORD, is_admin: bool = False,
    ) -> Any:
        from server.services.accounts import create_user

        return create_user(sess, email, name, password, is_admin=is_admin)

    return factory


@pytest.fixture
def make_course() -> Any:
    def factory(sess: Any, code: str = "CS101", title: str = "Backprop 101",
                members: dict[Any, str] | None = None) -> Any:
        from server.services.courses import create_course, enroll

        course = create_course(sess, code, title)
        for user, role in (members or {}).items():
            enroll(sess, course, user, role)
        return course

    return factory


@pytest.fixture
def make_assignment(fake_bank: dict) -> Any:
    def factory(sess: Any, course: Any, title: str = "Homework 1", *, problems=("mlp-relu",),
                open_offset_h: float = -24, due_offset_h: float = 24,
                late_offset_h: float | None = None, late_credit: int = 0,
                max_attempts: int | None = None, score_policy: str = "best") -> Any:
        import datetime as dt

        from server.models import utcnow
        from server.services.assignments import AssignmentDraft, ProblemChoice, create_assignment

        now = utcnow()
        hours = dt.timedelta(hours=1)
        draft = AssignmentDraft(
            title=title,
            open_at=now + open_offset_h * hours,
            due_at=now + due_offset_h * hours,
            late_until=None if late_offset_h is None else now + late_offset_h * hours,
            late_credit=late_credit,
            max_attempts=max_attempts,
            score_policy=score_policy,
            problems=[ProblemChoice(pid, 1.0) for pid in problems],
        )
        return create_assignment(sess, course, draft, fake_bank)

    return factory


@pytest.fixture
def make_instance() -> Any:
    """An instance row with the given (or empty) draw, without the engine."""

    def factory(sess: Any, user: Any, assignment_problem: Any, *, dims: Any = None,
                choices: Any = None, values: Any = None, reference: Any = None,
                secret: bytes = b"test-secret-" + b"x" * 20) -> Any:
        from server.services import problems
        from server.services.instances import Draw, get_or_create_instance

        version = problems.latest_version(sess, assignment_problem.problem_id)
        draw = Draw(dims or {}, choices or {}, values or {}, reference or {})
        return get_or_create_instance(sess, user, assignment_problem, version, secret,
                                      lambda seed: draw)

    return factory


@pytest.fixture
def make_submission(make_instance: Any) -> Any:
    """A stored submission (through services.submissions), optionally already graded."""

    def factory(sess: Any, user: Any, assignment_problem: Any, answer: str = "dx = 1", *,
                now: Any = None, score: float | None = None, kind: str = "equations") -> Any:
        import datetime as dt

        from server.models import utcnow
        from server.models.base import dumps
        from server.services.submissions import store_submission

        instance = make_instance(sess, user, assignment_problem)
        submission = store_submission(
            sess, user=user, assignment_problem=assignment_problem, instance=instance,
            answer=answer, kind=kind, now=now or utcnow())
        if score is not None and submission.status == "pending":
            submission.status = "graded"
            submission.score = score
            submission.result_json = dumps({"valid": True})
            submission.graded_at = (now or utcnow()) + dt.timedelta(milliseconds=5)
            sess.flush()
        return submission

    return factory


# --- SQLite readers do not write -----------------------------------------------------


@pytest.fixture
def reader_writes_expected() -> None:
    """Requested by a test that writes in a reader's transaction on purpose."""


@pytest.fixture(autouse=True)
def _no_writes_in_sqlite_readers(request: pytest.FixtureRequest, caplog: Any) -> Iterator[None]:
    """Fail a test whose code wrote in a DEFERRED transaction (server.db warns): a GET
    or a ``@reads_first`` view that writes must call ``write_transaction`` first, or
    it fails under load (SQLITE_BUSY_SNAPSHOT)."""
    yield
    if "reader_writes_expected" in request.fixturenames:
        return
    records = caplog.get_records("setup") + caplog.get_records("call")  # not the teardown's
    writes = [record.getMessage() for record in records
              if record.name == "server.db" and "DEFERRED (reader)" in record.getMessage()]
    assert not writes, f"writes in a reader's transaction: {writes}"
