import pytest
from click.testing import CliRunner

from server.cli import main
from server.models import Assignment, Enrollment, User
from server.services import accounts, tokens

pytestmark = pytest.mark.usefixtures("db_backend")


@pytest.fixture
def cli(database_url, tmp_path, session):
    """Run `nabla ...` against the test database; ``session`` cleans up afterwards."""
    runner = CliRunner()
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path),
           "NABLA_BASE_URL": "https://nabla.example.edu"}

    def invoke(*args):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def test_users_courses_enroll_and_token(cli, session):
    result = cli("users", "add", "Prof@Example.edu", "--name", "Pat Prof")
    assert result.exit_code == 0, result.output
    password = result.output.split("password: ")[1].strip()
    assert accounts.authenticate(session, "prof@example.edu", password) is not None
    session.rollback()
    assert cli("courses", "add", "ML1", "--title", "Machine learning").exit_code == 0
    result = cli("courses", "enroll", "ML1", "prof@example.edu", "--role", "instructor")
    assert result.exit_code == 0 and "instructor in ML1" in result.output
    result = cli("users", "add", "s@example.edu", "--name", "S", "--password", "a long password",
                 "--course", "ML1", "--role", "ta")
    assert result.exit_code == 0 and "password:" not in result.output
    roles = {e.user.email: e.role for e in session.query(Enrollment)}
    assert roles == {"prof@example.edu": "instructor", "s@example.edu": "ta"}
    session.rollback()
    token = cli("users", "token", "s@example.edu").output.strip()
    assert tokens.user_for_token(session, token).email == "s@example.edu"
    session.rollback()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["users", "add", "not-an-email", "--name", "X"], "email: 'not-an-email' is not an email"),
        (["users", "add", "a@example.edu", "--name", "X", "--password", "short"],
         "password: must be at least 10"),
        (["users", "token", "ghost@example.edu"], "email: no user ghost@example.edu"),
        (["courses", "enroll", "NOPE", "ghost@example.edu", "--role", "ta"], "no course NOPE"),
        (["courses", "add", "bad code!", "--title", "T"], "code: 'bad code!' must be"),
    ],
)
def test_bad_input_is_a_one_line_error(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_role_without_course_is_a_usage_error(cli):
    result = cli("users", "add", "a@example.edu", "--name", "A", "--role", "ta")
    assert result.exit_code == 2 and "--role needs --course" in result.output


def test_duplicate_user_is_refused(cli):
    assert cli("users", "add", "a@example.edu", "--name", "A").exit_code == 0
    result = cli("users", "add", "a@example.edu", "--name", "A")
    assert result.exit_code == 1 and "already exists" in result.output


def test_import_roster_from_the_command_line(cli, session, tmp_path):
    cli("courses", "add", "ML1", "--title", "Machine learning")
    good = tmp_path / "roster.csv"
    good.write_text("email,name,role\nx@example.edu,X,student\n")
    result = cli("courses", "import-roster", "ML1", str(good))
    assert result.exit_code == 0 and "1 new accounts, 1 enrolled" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("y@example.edu,Y\nbroken\n")
    result = cli("courses", "import-roster", "ML1", str(bad))
    assert result.exit_code == 1 and "line 2: expected 2 or 3 columns" in result.output
    assert session.query(User).filter_by(email="y@example.edu").count() == 0


def test_demo_is_idempotent_and_prints_logins(cli, session):
    first = cli("demo")
    assert first.exit_code == 0, first.output
    for email in ("instructor@example.edu", "ta@example.edu", "student1@example.edu",
                  "student2@example.edu", "student3@example.edu"):
        assert email in first.output
    password = first.output.split("password for all: ")[1].split(")")[0]
    assert accounts.authenticate(session, "student3@example.edu", password) is not None
    counts = (session.query(User).count(), session.query(Enrollment).count(),
              session.query(Assignment).count())
    titles = sorted(a.title for a in session.query(Assignment))
    session.rollback()
    second = cli("demo")
    assert second.exit_code == 0
    assert (session.query(User).count(), session.query(Enrollment).count(),
            session.query(Assignment).count()) == counts == (5, 5, 2)
    assert titles == ["Homework 1: the rules of backprop", "Homework 2: networks"]
    from server.engine.bank import load_bank

    covered = {ap.problem_id for a in session.query(Assignment) for ap in a.problems}
    assert covered == set(load_bank())


def test_db_current_and_upgrade(cli, database_url):
    from server.db import head_revision

    head = head_revision(database_url)
    result = cli("db", "current")
    assert result.exit_code == 0 and f"code head: {head}" in result.output
    result = cli("db", "upgrade")
    assert result.exit_code == 0 and f"at revision {head}" in result.output


def test_commands_refuse_a_database_behind_the_migrations(tmp_path):
    runner = CliRunner()
    env = {"NABLA_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
           "NABLA_INSTANCE_PATH": str(tmp_path)}
    result = runner.invoke(main, ["users", "add", "a@example.edu", "--name", "A"], env=env)
    assert result.exit_code == 1 and "nabla db upgrade" in result.output
    result = runner.invoke(main, ["serve"], env=env)
    assert result.exit_code == 1 and "nabla db upgrade" in result.output


def test_gunicorn_command_line():
    from server.cli.web_cmds import gunicorn_argv

    argv = gunicorn_argv("127.0.0.1:5000", 3, 4, 60)
    assert argv[1:3] == ["-m", "gunicorn"] and argv[-1] == "server:create_app()"
    assert argv[argv.index("--workers") + 1] == "3" and argv[argv.index("--threads") + 1] == "4"
    # The access log: the path without the query string, through the redacting logger.
    log_format = argv[argv.index("--access-logformat") + 1]
    assert "%(U)s" in log_format and "%(r)s" not in log_format and "%(q)s" not in log_format
    module, _, name = argv[argv.index("--logger-class") + 1].rpartition(".")
    from gunicorn.glogging import Logger

    assert issubclass(getattr(__import__(module, fromlist=[name]), name), Logger)
