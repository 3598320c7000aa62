"""Links made for someone else start with NABLA_BASE_URL, never the Host header (issue
22): a roster import sent with ``Host: evil.example`` used to hand out
``http://evil.example/set-password/...``. Without NABLA_BASE_URL only the loopback demo
(`nabla serve --bind 127.0.0.1:...`, visited there) makes links; anything else is a
clear refusal that imports nothing (server.web.links)."""

from __future__ import annotations

import html
import os
import re

import pytest
from click.testing import CliRunner

from server.cli import main
from server.models import User

from .helpers import csrf_token, login

pytestmark = pytest.mark.usefixtures("db_backend")
IMPORT = "/instructor/CS101/roster/import"
ROSTER = "email,name,role\nnew@example.edu,New Person,student\n"
NO_SITE = {"NABLA_BASE_URL": None, "NABLA_LOOPBACK_BIND": None}


@pytest.fixture
def course(app_session, make_user, make_course):
    teacher = make_user(app_session, "teacher@example.edu", "Teacher")
    make_user(app_session, "old@example.edu", "Old Student")
    course = make_course(app_session, members={teacher: "instructor"})
    app_session.commit()
    return course


def import_as(client, host: str, roster: str = ROSTER):
    """POST a roster to the import page as the logged-in teacher, with this Host header
    (the session cookie is copied to that host, as a browser there would have one)."""
    login(client, "teacher@example.edu")
    token = csrf_token(client, IMPORT)
    cookie = client.get_cookie("session")
    client.set_cookie(cookie.key, cookie.value, domain=host.split(":")[0])
    return client.post(IMPORT, data={"csv_text": roster, "csrf_token": token},
                       headers={"Host": host})


def links_of(response) -> list[str]:
    page = html.unescape(response.get_data(as_text=True))
    return re.findall(r"new@example\.edu,New Person,(\S+)", page)


def created(app_session) -> bool:
    app_session.expire_all()
    found = app_session.query(User).filter_by(email="new@example.edu").count() == 1
    app_session.rollback()
    return found


@pytest.mark.parametrize("app_settings", [{"NABLA_BASE_URL": "https://nabla.example.edu/"}])
def test_roster_links_start_with_nabla_base_url_whatever_the_host_header(
        client, course, app_session):
    response = import_as(client, "evil.example")
    assert response.status_code == 201, response.get_data(as_text=True)
    (link,) = links_of(response)
    assert link.startswith("https://nabla.example.edu/set-password/inv_")
    assert "evil.example" not in response.get_data(as_text=True)


@pytest.mark.parametrize("app_settings", [NO_SITE])
@pytest.mark.parametrize("host", ["evil.example", "localhost", "127.0.0.1:5000"])
def test_without_nabla_base_url_a_roster_that_creates_accounts_is_refused(
        client, course, app_session, host):
    response = import_as(client, host)
    assert response.status_code == 503
    page = html.unescape(response.get_data(as_text=True))
    assert "Nothing was imported" in page and "NABLA_BASE_URL is not set" in page
    assert "NABLA_BASE_URL=https://nabla.example.edu" in page
    assert "set-password/inv_" not in page and not created(app_session)
    # A file that creates no account needs no link: it is imported.
    again = import_as(client, host, "old@example.edu,Old Student,student\n")
    assert again.status_code == 302


@pytest.mark.parametrize("app_settings", [{**NO_SITE, "NABLA_LOOPBACK_BIND": "127.0.0.1:5000"}])
def test_the_loopback_demo_makes_links_from_the_address_it_is_bound_to(
        client, course, app_session):
    for k, host in enumerate(("127.0.0.1:5000", "localhost:5000", "127.0.0.2:5000")):
        response = import_as(client, host, ROSTER.replace("new@", f"new{k}@"))
        assert response.status_code == 201, host
        assert "http://127.0.0.1:5000/set-password/inv_" in response.get_data(as_text=True)
    # Visited under another name, it is not the demo: the Host header never picks a link.
    refused = import_as(client, "evil.example")
    assert refused.status_code == 503 and "evil.example" not in links_of(refused)
    assert not created(app_session)


@pytest.mark.parametrize("app_settings", [{**NO_SITE, "NABLA_LOOPBACK_BIND": "127.0.0.1:5000",
                                           "NABLA_PROXIES": 1}])
def test_behind_a_proxy_the_loopback_bind_is_no_demo(client, course, app_session):
    # A proxy on the same machine forwards to 127.0.0.1: the site's address is unknown.
    assert import_as(client, "127.0.0.1:5000").status_code == 503
    assert not created(app_session)


def test_nabla_serve_marks_a_loopback_bind_only(monkeypatch):
    from server.cli.web_cmds import mark_loopback_bind
    from server.config import LOOPBACK_BIND_ENV

    monkeypatch.setenv(LOOPBACK_BIND_ENV, "127.0.0.1:1")  # left over from elsewhere
    mark_loopback_bind("0.0.0.0:5000")
    assert LOOPBACK_BIND_ENV not in os.environ
    for bind in ("127.0.0.1:5000", "localhost:8000", "[::1]:5000"):
        mark_loopback_bind(bind)
        assert os.environ[LOOPBACK_BIND_ENV] == bind
    for bind in ("unix:/run/nabla.sock", "nabla.example.edu:80", "[::]:5000"):
        mark_loopback_bind(bind)
        assert LOOPBACK_BIND_ENV not in os.environ


def test_the_command_line_refuses_links_without_nabla_base_url(
        database_url, tmp_path, course, app_session):
    env = {"NABLA_DATABASE_URL": database_url, "NABLA_INSTANCE_PATH": str(tmp_path),
           "NABLA_BASE_URL": None}
    runner = CliRunner()
    invite = runner.invoke(main, ["users", "invite", "old@example.edu"], env=env)
    assert invite.exit_code == 1 and "NABLA_BASE_URL is not set" in invite.output
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER)
    result = runner.invoke(main, ["courses", "import-roster", "CS101", str(roster)], env=env)
    assert result.exit_code == 1, result.output
    assert "nothing was imported: NABLA_BASE_URL is not set" in result.output
    assert not created(app_session)
    bad = runner.invoke(main, ["users", "invite", "old@example.edu"],
                        env={**env, "NABLA_BASE_URL": "nabla.example.edu"})
    assert bad.exit_code == 1 and "NABLA_BASE_URL must start with https://" in bad.output
    good = runner.invoke(main, ["courses", "import-roster", "CS101", str(roster)],
                         env={**env, "NABLA_BASE_URL": "https://nabla.example.edu"})
    assert good.exit_code == 0 and "https://nabla.example.edu/set-password/inv_" in good.output
